"""O messages → A system texts and messages: the §2.2 algorithm."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import TranslationError
from .media import InlineImages, openai_file_to_anthropic, openai_image_to_anthropic
from .models import TargetModel
from .tools import ToolIds, tool_input_from_arguments

FIRST_USER_PLACEHOLDER = "."  # §2.2 step 7, only for providers flagged requires_user_first


@dataclass
class _MessageContext:
    """Per-request state of the §2.2 walk."""

    target: TargetModel
    inline_images: InlineImages
    tool_ids: ToolIds = field(default_factory=ToolIds)
    legacy_calls: dict[str, str] = field(default_factory=dict)  # function name -> id of its latest function_call


def _is_blank(text: object) -> bool:
    return not isinstance(text, str) or not text.strip()


def _text_parts(content: object, param: str, *, allowed: tuple[str, ...] = ("text",)) -> list[str]:
    """Non-blank texts of a string or text-part content; A rejects empty and whitespace-only text blocks (§1.6)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [] if _is_blank(content) else [content]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or an array of parts.", param=param, code="invalid_type")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise TranslationError(f"Unsupported content part type {kind!r}.", param=f"{param}[{j}].type")
        text = part.get(kind)  # "text" or "refusal" carry their text under their own name
        if not _is_blank(text):
            texts.append(text)
    return texts


def _user_blocks(content: object, param: str, ctx: _MessageContext) -> list[dict]:
    if not isinstance(content, list):
        return [{"type": "text", "text": text} for text in _text_parts(content, param)]
    blocks = []
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not _is_blank(part.get("text")):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(
                openai_image_to_anthropic(
                    part, image_urls=ctx.target.image_urls, inline_images=ctx.inline_images, param=part_param
                )
            )
        elif kind == "file":
            blocks.append(openai_file_to_anthropic(part, param=part_param))
        elif kind == "input_audio":
            raise TranslationError(
                "Audio input is not supported for this model.", param=part_param, code="unsupported_parameter"
            )
        else:
            raise TranslationError(f"Unsupported content part type {kind!r}.", param=f"{part_param}.type")
    return blocks


def _assistant_blocks(message: dict, param: str, ctx: _MessageContext) -> list[dict]:
    texts = _text_parts(message.get("content"), f"{param}.content", allowed=("text", "refusal"))
    if not _is_blank(message.get("refusal")):
        texts.append(message["refusal"])
    # An empty or null content next to tool_calls yields no text block at all (anthropics/claude-code#62396).
    blocks: list[dict] = [{"type": "text", "text": text} for text in texts]
    for j, call in enumerate(message.get("tool_calls") or []):
        function = (call.get("function") if isinstance(call, dict) else None) or {}
        if _is_blank(function.get("name")):
            raise TranslationError("A tool call needs function.name.", param=f"{param}.tool_calls[{j}].function.name")
        blocks.append(
            {
                "type": "tool_use",
                "id": ctx.tool_ids.get(call.get("id")),
                "name": function["name"],
                "input": tool_input_from_arguments(function.get("arguments")),
            }
        )
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and not _is_blank(legacy.get("name")):
        call_id = ctx.tool_ids.new()
        ctx.legacy_calls[legacy["name"]] = call_id
        blocks.append(
            {
                "type": "tool_use",
                "id": call_id,
                "name": legacy["name"],
                "input": tool_input_from_arguments(legacy.get("arguments")),
            }
        )
    if message.get("audio"):
        raise TranslationError(
            "Audio output in history is not supported for this model.",
            param=f"{param}.audio",
            code="unsupported_parameter",
        )
    # A de-facto `reasoning_content` is dropped: no signature can be produced for it (§2.2 step 3).
    return blocks


def _tool_result(tool_use_id: str, content: object, param: str, ctx: _MessageContext) -> dict:
    result: dict = {"type": "tool_result", "tool_use_id": tool_use_id}
    if isinstance(content, list):
        blocks = _user_blocks(content, param, ctx)
        if blocks:
            result["content"] = blocks
    elif not _is_blank(content):
        result["content"] = content
    # An empty result omits `content`: whether A accepts "" was not checked (§7).
    return result


def _merge(messages: list[dict]) -> list[dict]:
    """Drop empty turns, merge same-role neighbours, put tool_result blocks first in user turns (§2.2 steps 5–6)."""
    merged: list[dict] = []
    for message in messages:
        if not message["content"]:
            continue  # no placeholder text: it leaks into answers (BerriAI/litellm#28987)
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"] += message["content"]
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    for message in merged:
        if message["role"] == "user":
            # All results of one assistant turn in one user turn, before any text (vercel/ai#2067).
            content = message["content"]
            message["content"] = [b for b in content if b["type"] == "tool_result"] + [
                b for b in content if b["type"] != "tool_result"
            ]
    return merged


def _compact(message: dict) -> dict:
    """A lone plain text block is sent as a string, the shorter equivalent form (§1.5)."""
    content = message["content"]
    if len(content) == 1 and content[0].keys() == {"type", "text"} and content[0]["type"] == "text":
        return {"role": message["role"], "content": content[0]["text"]}
    return message


def openai_messages_to_anthropic(
    messages: object, target: TargetModel, inline_images: InlineImages
) -> tuple[list[str], list[dict]]:
    """(system texts, A messages) for O messages (§2.2); raises TranslationError."""
    ctx = _MessageContext(target, inline_images)
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty array.", param="messages")
    system: list[str] = []
    converted: list[dict] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system += _text_parts(message.get("content"), f"{param}.content")  # `name` dropped (§2.2 step 1)
        elif role == "user":
            converted.append({"role": "user", "content": _user_blocks(message.get("content"), f"{param}.content", ctx)})
        elif role == "assistant":
            converted.append({"role": "assistant", "content": _assistant_blocks(message, param, ctx)})
        elif role == "tool":
            if _is_blank(message.get("tool_call_id")):
                raise TranslationError("A tool message needs tool_call_id.", param=f"{param}.tool_call_id")
            tool_use_id = ctx.tool_ids.get(message["tool_call_id"])
            result = _tool_result(tool_use_id, message.get("content"), f"{param}.content", ctx)
            converted.append({"role": "user", "content": [result]})
        elif role == "function":
            call_id = ctx.legacy_calls.get(message.get("name"))
            if call_id is None:
                raise TranslationError(
                    "A function message must follow an assistant function_call of the same name.", param=f"{param}.name"
                )
            result = _tool_result(call_id, message.get("content"), f"{param}.content", ctx)
            converted.append({"role": "user", "content": [result]})
        else:
            raise TranslationError(f"Unsupported message role {role!r}.", param=f"{param}.role")
    merged = _merge(converted)
    if not merged:
        raise TranslationError(
            "messages must contain at least one non-empty user or assistant message.", param="messages"
        )
    if ctx.target.requires_user_first and merged[0]["role"] == "assistant":
        merged.insert(0, {"role": "user", "content": [{"type": "text", "text": FIRST_USER_PLACEHOLDER}]})
    return system, [_compact(message) for message in merged]
