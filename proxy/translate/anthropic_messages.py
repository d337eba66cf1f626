"""A messages → O messages: the §2.4 algorithm."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TranslationError
from .media import (
    InlineImages,
    anthropic_document_to_openai,
    anthropic_image_to_openai,
    anthropic_search_result_to_openai,
)
from .models import TargetModel
from .system_messages import (
    anthropic_split_mid_conv_blocks,
    anthropic_system_text,
    anthropic_tool_changes,
    first_system_index,
    has_system_messages,
    mid_system_not_supported,
    tool_change_note,
)
from .tools import compact_json, openai_tool_name

TOOL_ERROR_PREFIX = "Error: "  # O tool messages have no is_error flag (§2.4 step 2, gateway choice)


@dataclass
class _MessageContext:
    """Per-request state of the §2.4 walk."""

    target: TargetModel
    inline_images: InlineImages
    tool_names: dict[str, str]


def _openai_parts(block: dict, param: str, ctx: _MessageContext) -> list[dict]:
    """O user content parts for one A user block (§2.4 step 2, §2.7)."""
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text", "text": block["text"]}] if block.get("text") else []
    if kind == "image":
        image_urls, inline = ctx.target.image_urls, ctx.inline_images
        return [anthropic_image_to_openai(block, image_urls=image_urls, inline_images=inline, param=param)]
    if kind == "document":
        return anthropic_document_to_openai(block, documents=ctx.target.documents, param=param)
    if kind == "search_result":
        return anthropic_search_result_to_openai(block)
    raise TranslationError(f"Content block type {kind!r} is not supported in a user turn.", param=f"{param}.type")


def _tool_message(block: dict, param: str, ctx: _MessageContext) -> tuple[dict, list[dict]]:
    """(O tool message, media parts that must follow in a user message) for an A tool_result (QwenLM/qwen-code#3616)."""
    content = block.get("content")
    texts: list[str] = []
    media: list[dict] = []
    if isinstance(content, str):
        texts.append(content)
    for j, inner in enumerate(content if isinstance(content, list) else []):
        for part in _openai_parts(inner, f"{param}.content[{j}]", ctx):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                media.append(part)  # O tool messages carry text only
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}, media


def _user_messages(content: object, param: str, ctx: _MessageContext) -> list[dict]:
    if not isinstance(content, list):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict] = []
    media: list[dict] = []
    parts: list[dict] = []
    for j, block in enumerate(content):
        block_param = f"{param}[{j}]"
        if not isinstance(block, dict):
            raise TranslationError("Content blocks must be objects.", param=block_param, code="invalid_type")
        if block.get("type") == "tool_result":
            message, result_media = _tool_message(block, block_param, ctx)
            tool_messages.append(message)
            media += result_media
        else:
            parts += _openai_parts(block, block_param, ctx)
    # Tool messages first: O wants them right after the assistant turn that called (§2.4 step 2).
    parts = media + parts
    if not parts:
        return tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tool_messages, {"role": "user", "content": parts[0]["text"]}]
    return [*tool_messages, {"role": "user", "content": parts}]


def _assistant_message(content: object, ctx: _MessageContext) -> dict | None:
    if not isinstance(content, list):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    tool_calls: list[dict] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            name = openai_tool_name(block.get("name") or "")
            if name != block.get("name"):
                ctx.tool_names[name] = block["name"]
            arguments = compact_json(block.get("input") or {})
            tool_calls.append(
                {"id": block.get("id"), "type": "function", "function": {"name": name, "arguments": arguments}}
            )
        # thinking / redacted_thinking / server blocks are dropped (§2.4 step 3).
    text = "".join(texts)  # A splits text around citations: no separator
    if not text and not tool_calls:
        return None  # a turn of only thinking has nothing to say to an O upstream
    message: dict = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _system_message(content: object, ctx: _MessageContext) -> dict | None:
    """A mid-conversation system message → O system/developer message at the same place (M3), or None when it
    has nothing to say."""
    note = tool_change_note(anthropic_tool_changes(content))
    text = "\n".join(part for part in (anthropic_system_text(content), note) if part)
    return {"role": ctx.target.system_role, "content": text} if text else None


def anthropic_messages_to_openai(
    messages: object, target: TargetModel, inline_images: InlineImages, tool_names: dict[str, str]
) -> list[dict]:
    """O messages for A messages (§2.4); shortened tool names are recorded in `tool_names`.

    Mid-conversation system messages come back as O system (flag: developer) messages at their place; with
    `mid_system: hoist` they are marked `_hoist` for `anthropic_request_to_openai` to move (M3).
    """
    ctx = _MessageContext(target, inline_images, tool_names)
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty array.", param="messages")
    if target.mid_system == "reject" and has_system_messages(messages):
        raise mid_system_not_supported(first_system_index(messages))  # the 400 Claude Code falls back from (M7)
    converted: list[dict] = []
    for i, message in enumerate(anthropic_split_mid_conv_blocks(messages)):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            converted += _user_messages(message.get("content"), f"messages[{i}].content", ctx)
        elif role == "assistant":
            assistant = _assistant_message(message.get("content"), ctx)
            if assistant is not None:
                converted.append(assistant)
        elif role == "system":
            system = _system_message(message.get("content"), ctx)
            if system is not None:
                converted.append({**system, "_hoist": True} if target.mid_system == "hoist" else system)
        else:
            raise TranslationError(f"Unsupported message role {role!r}.", param=f"messages[{i}].role")
    return converted


def anthropic_system_to_openai(system: object) -> str:
    """One system string: text blocks joined with a blank line, cache_control and Claude Code's billing header
    block dropped (§2.3, M11)."""
    return anthropic_system_text(system)
