"""Pure Anthropic Messages / OpenAI Chat Completions ⇄ Gemini generateContent translation.

Gemini wire types (generativelanguage v1beta): a request has `contents` ([{role: "user"|"model",
parts}]), `systemInstruction` ({parts}), `tools` ([{functionDeclarations}]), `toolConfig`
({functionCallingConfig: {mode: AUTO|ANY|NONE, allowedFunctionNames}}) and `generationConfig`
(maxOutputTokens, temperature, topP, topK, stopSequences, responseMimeType, responseJsonSchema,
thinkingConfig {thinkingBudget, includeThoughts}); a part is one of text (with `thought: true` for
thought summaries), inlineData {mimeType, data}, fileData {mimeType, fileUri}, functionCall {id?,
name, args} or functionResponse {id?, name, response}; any part may carry `thoughtSignature`.
A response has candidates[0].content.parts, candidates[0].finishReason, usageMetadata and
promptFeedback.blockReason.

The A request is the protocol-neutral view (PROTOCOLS G1): an O request is first converted to A
with the existing O→A converter (system hoist, tool-result ordering, id sanitising, media checks),
then to Gemini; only what that path would lose for Gemini (temperature above 1, JSON output mode)
is taken from the O body directly. Responses go the other way: Gemini → A, and A → O for O clients.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from .errors import TranslationError
from .models import Conversion, TargetModel
from .openai_to_anthropic import anthropic_response_to_openai, openai_request_to_anthropic
from .system_messages import (
    BILLING_HEADER_PREFIX,
    anthropic_split_mid_conv_blocks,
    anthropic_system_text,
    anthropic_tool_changes,
    first_system_index,
    has_system_messages,
    is_system_message,
    mid_system_not_supported,
    tool_change_note,
)
from .tools import openai_tool_name
from .usage import Usage, estimate_anthropic_prompt_tokens, usage_to_anthropic

# Gemini 3 refuses a replayed functionCall without the thought signature it issued; calls that come
# from a client (or another model) have none, and Google documents this value for such history.
HISTORY_THOUGHT_SIGNATURE = "skip_thought_signature_validator"
GEMINI_MAX_STOP_SEQUENCES = 5
# Gemini finishReason -> A stop_reason. Safety-type stops are refusals (§3.1 content_filter ⇄ refusal).
_FINISH_TO_ANTHROPIC = {
    "STOP": "end_turn",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "refusal",
    "RECITATION": "refusal",
    "BLOCKLIST": "refusal",
    "PROHIBITED_CONTENT": "refusal",
    "SPII": "refusal",
    "IMAGE_SAFETY": "refusal",
    "IMAGE_PROHIBITED_CONTENT": "refusal",
    "IMAGE_RECITATION": "refusal",
}


# --- usage -----------------------------------------------------------------------------------------------


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_gemini(meta: dict | None) -> Usage:
    """Normalize usageMetadata (G6): promptTokenCount includes cached tokens; thoughts are output."""
    if not meta:
        return Usage()
    prompt = _count(meta.get("promptTokenCount")) + _count(meta.get("toolUsePromptTokenCount"))
    cached = _count(meta.get("cachedContentTokenCount"))
    thoughts = _count(meta.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=max(prompt - cached, 0),
        cache_read_tokens=cached,
        output_tokens=_count(meta.get("candidatesTokenCount")) + thoughts,
        reasoning_tokens=thoughts,
    )


def gemini_finish_reason_to_anthropic(finish_reason: str | None, *, has_tool_use: bool = False) -> str:
    """Map a finishReason to an A stop_reason; a turn with function calls ends in tool_use (Gemini says STOP)."""
    stop_reason = _FINISH_TO_ANTHROPIC.get(finish_reason or "", "end_turn")
    return "tool_use" if has_tool_use and stop_reason == "end_turn" else stop_reason


# --- request: A → Gemini -----------------------------------------------------------------------------------


def _blocks(content: object) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def _media_part(source: dict, param: str) -> dict:
    kind = source.get("type")
    if kind == "base64":
        return {"inlineData": {"mimeType": source.get("media_type") or "application/octet-stream",
                               "data": source.get("data") or ""}}  # fmt: skip
    if kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
        mime = "application/pdf" if url.lower().endswith(".pdf") else _image_mime_from_url(url)
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    if kind == "text":
        return {"text": source.get("data") or ""}
    raise TranslationError("This media source cannot be sent to this model.", param=param)


def _image_mime_from_url(url: str) -> str:
    path = url.split("?", 1)[0].lower()
    for suffix, mime in ((".png", "image/png"), (".gif", "image/gif"), (".webp", "image/webp")):
        if path.endswith(suffix):
            return mime
    return "image/jpeg"


def _tool_result_parts(block: dict, name: str) -> list[dict]:
    """A tool_result → one functionResponse part (text) plus inlineData parts for its images."""
    content = block.get("content")
    texts: list[str] = []
    media: list[dict] = []
    for inner in _blocks(content):
        if inner.get("type") == "text":
            texts.append(inner.get("text") or "")
        elif inner.get("type") in ("image", "document"):
            media.append(_media_part(inner.get("source") or {}, "messages"))
    key = "error" if block.get("is_error") else "output"  # the google-genai SDK's convention
    response = {"id": block.get("tool_use_id"), "name": name, "response": {key: "\n".join(texts)}}
    if not response["id"]:
        del response["id"]
    return [{"functionResponse": response}, *media]


def _message_parts(message: dict, index: int, call_names: dict[str, str], tool_names: dict[str, str]) -> list[dict]:
    """The Gemini parts of one A message; a user turn's function responses come first."""
    responses: list[dict] = []
    parts: list[dict] = []
    signed = False
    for block in _blocks(message.get("content")):
        kind = block.get("type")
        if kind == "text":
            if (block.get("text") or "").strip():
                parts.append({"text": block["text"]})
        elif kind in ("image", "document"):
            parts.append(_media_part(block.get("source") or {}, f"messages.{index}.content"))
        elif kind == "tool_use":
            name = _gemini_tool_name(block.get("name") or "", tool_names)
            call: dict = {"name": name, "args": block.get("input") or {}}
            if block.get("id"):
                call["id"] = block["id"]
            part: dict = {"functionCall": call}
            if not signed:  # the first call of a step carries the signature (Gemini 3)
                part["thoughtSignature"] = HISTORY_THOUGHT_SIGNATURE
                signed = True
            parts.append(part)
        elif kind == "tool_result":
            name = call_names.get(block.get("tool_use_id") or "", "")
            if not name:
                raise TranslationError(
                    "A tool_result answers a tool_use that is not in the conversation.", param=f"messages.{index}"
                )
            responses += _tool_result_parts(block, name)
        # thinking / redacted_thinking: Gemini cannot verify foreign reasoning; server blocks have no form.
    return responses + parts


def _gemini_tool_name(name: str, tool_names: dict[str, str]) -> str:
    """Gemini function names are at most 64 characters; keep the client's name for the way back."""
    short = openai_tool_name(name)
    if short != name:
        tool_names[short] = name
    return short


def _contents(messages: list, tool_names: dict[str, str]) -> list[dict]:
    call_names: dict[str, str] = {}
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            for block in _blocks(message.get("content")):
                if block.get("type") == "tool_use" and block.get("id"):
                    call_names[block["id"]] = _gemini_tool_name(block.get("name") or "", tool_names)
    contents: list[dict] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise TranslationError("Each message needs role `user` or `assistant`.", param=f"messages.{index}.role")
        role = "model" if message["role"] == "assistant" else "user"
        parts = _message_parts(message, index, call_names, tool_names)
        if not parts:
            continue  # an empty turn: dropped, never filled with placeholder text (§2.2 step 6)
        if contents and contents[-1]["role"] == role:
            previous = contents[-1]["parts"]
            responses = [p for p in previous + parts if "functionResponse" in p]
            others = [p for p in previous + parts if "functionResponse" not in p]
            contents[-1]["parts"] = responses + others if role == "user" else previous + parts
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise TranslationError("The conversation has no content to send.", param="messages")
    return contents


def _system_instruction(system: object, mid_system: list[str] = ()) -> dict | None:
    texts = (
        [system]
        if isinstance(system, str)
        else [b.get("text") or "" for b in _blocks(system) if b.get("type") == "text"]
    )
    texts = [text for text in texts if not text.startswith(BILLING_HEADER_PREFIX)]  # M11
    parts = [{"text": text} for text in [*texts, *mid_system] if text.strip()]
    return {"parts": parts} if parts else None


def _mid_system_texts(messages: list, target: TargetModel) -> tuple[list, list[str]]:
    """(messages without system ones, their texts in order). Gemini has no system turn: the nearest faithful
    form is the system instruction, as for A models without the feature (PROTOCOLS-RESPONSES §6 M5); the
    declared tools all stay and a tool change becomes a one-line note there (M6)."""
    if target.mid_system == "reject" and has_system_messages(messages):
        raise mid_system_not_supported(first_system_index(messages))
    texts: list[str] = []
    kept: list = []
    for message in anthropic_split_mid_conv_blocks(messages):
        if not is_system_message(message):
            kept.append(message)
            continue
        note = tool_change_note(anthropic_tool_changes(message.get("content")))
        text = "\n".join(part for part in (anthropic_system_text(message.get("content")), note) if part)
        if text:
            texts.append(text)
    return kept, texts


def _tools(tools: object, tool_names: dict[str, str]) -> list[dict]:
    declarations = []
    for index, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            continue
        if tool.get("type") not in (None, "custom"):
            raise TranslationError(
                f"The server tool `{tool.get('type')}` is not available on this model.", param=f"tools.{index}"
            )
        declaration: dict = {"name": _gemini_tool_name(tool.get("name") or "", tool_names)}
        if tool.get("description"):
            declaration["description"] = tool["description"]
        # parametersJsonSchema takes JSON Schema as is; `parameters` would need the OpenAPI subset.
        declaration["parametersJsonSchema"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(tool_choice: object, tool_names: dict[str, str]) -> dict | None:
    if not isinstance(tool_choice, dict):
        return None
    kind = tool_choice.get("type")
    if kind == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if kind == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if kind == "any":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if kind == "tool" and tool_choice.get("name"):
        name = _gemini_tool_name(tool_choice["name"], tool_names)
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None  # disable_parallel_tool_use has no Gemini counterpart


def _thinking_config(thinking: object, output_config: object, target: TargetModel) -> dict | None:
    """A thinking → thinkingConfig; only for models the catalog marks as thinking ones (§2.6 budgets)."""
    if target.thinking is None or not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    if kind == "disabled":
        return {"thinkingBudget": 0}
    if kind == "enabled" and isinstance(thinking.get("budget_tokens"), int):
        return {"thinkingBudget": thinking["budget_tokens"], "includeThoughts": True}
    if kind == "adaptive":
        effort = (output_config or {}).get("effort") if isinstance(output_config, dict) else None
        config: dict = {"includeThoughts": True}
        if effort in ("low", "high"):
            config["thinkingLevel"] = effort
        else:
            config["thinkingBudget"] = -1  # dynamic: the model decides
        return config
    return None


def _generation_config(body: dict, target: TargetModel) -> dict:
    config: dict = {}
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        config["maxOutputTokens"] = (
            min(max_tokens, target.max_output_tokens) if target.max_output_tokens else max_tokens
        )
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK")):
        if isinstance(body.get(ours), (int, float)) and not isinstance(body.get(ours), bool):
            config[theirs] = body[ours]
    stops = [s for s in body.get("stop_sequences") or [] if isinstance(s, str) and s.strip()]
    if stops:
        config["stopSequences"] = stops[:GEMINI_MAX_STOP_SEQUENCES]
    output_format = (
        (body.get("output_config") or {}).get("format") if isinstance(body.get("output_config"), dict) else None
    )
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = output_format.get("schema") or {"type": "object"}
    thinking = _thinking_config(body.get("thinking"), body.get("output_config"), target)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config


def anthropic_request_to_gemini(body: dict, target: TargetModel) -> Conversion:
    """Convert an A Messages request into a generateContent body (the model goes in the URL, not the body)."""
    if body.get("mcp_servers"):
        raise TranslationError(
            "mcp_servers is not supported for this model.", param="mcp_servers", code="unsupported_parameter"
        )
    tool_names: dict[str, str] = {}
    messages, mid_system = _mid_system_texts(body.get("messages") or [], target)
    out: dict = {"contents": _contents(messages, tool_names)}
    system = _system_instruction(body.get("system"), mid_system)
    if system is not None:
        out["systemInstruction"] = system
    tools = _tools(body.get("tools"), tool_names)
    if tools:
        out["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"), tool_names)
        if tool_config is not None:
            out["toolConfig"] = tool_config
    config = _generation_config(body, target)
    if config:
        out["generationConfig"] = config
    # metadata, service_tier, cache_control, container, anthropic-beta: no Gemini counterpart (§2.8).
    return Conversion(body=out, tool_names=tool_names, input_estimate=estimate_anthropic_prompt_tokens(body))


# --- request: O → Gemini (through the A view) --------------------------------------------------------------


def openai_request_to_gemini(body: dict, target: TargetModel) -> Conversion:
    """Convert an O chat request: O → A (the shared neutral view) → Gemini, keeping what Gemini supports better."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    a_body = {k: v for k, v in body.items() if k != "response_format" or kind == "json_schema"}
    # Gemini has native JSON schema output: never the forced-tool fallback; URLs go as fileData.
    conversion = openai_request_to_anthropic(a_body, replace(target, structured_output=True, image_urls=True))
    a_request = conversion.body
    if not any(k in body for k in ("max_completion_tokens", "max_tokens")) and not target.default_max_tokens:
        a_request = {k: v for k, v in a_request.items() if k != "max_tokens"}  # Gemini's own default, O's "no cap"
    converted = anthropic_request_to_gemini(a_request, target)
    config = converted.body.setdefault("generationConfig", {})
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        config["temperature"] = min(max(float(temperature), 0.0), 2.0)  # Gemini's range is [0, 2], O's too
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    if not config:
        del converted.body["generationConfig"]
    converted.input_estimate = conversion.input_estimate
    return converted


# --- response: Gemini → A / O ------------------------------------------------------------------------------


def gemini_candidate(resp: dict) -> dict:
    candidates = resp.get("candidates")
    return candidates[0] if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) else {}


def gemini_response_to_anthropic(
    resp: dict, conv: Conversion, *, model: str, message_id: str, new_id: Callable[[], str]
) -> dict:
    """Convert a generateContent response into an A message (§3.4 rules: no empty text block)."""
    candidate = gemini_candidate(resp)
    content: list[dict] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str) and part.get("thought"):
            if content and content[-1]["type"] == "thinking":
                content[-1]["thinking"] += part["text"]
            else:
                # No A signature can be produced (§3.5): A upstreams drop it on replay, Gemini ignores it.
                content.append({"type": "thinking", "thinking": part["text"], "signature": ""})
        elif isinstance(part.get("text"), str) and part["text"]:
            if content and content[-1]["type"] == "text":
                content[-1]["text"] += part["text"]
            else:
                content.append({"type": "text", "text": part["text"]})
        elif isinstance(part.get("functionCall"), dict):
            call = part["functionCall"]
            args = call.get("args")
            content.append({
                "type": "tool_use",
                "id": call.get("id") or new_id(),
                "name": conv.client_tool_name(call.get("name") or ""),
                "input": args if isinstance(args, dict) else {},
            })  # fmt: skip
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    blocked = not candidate and (resp.get("promptFeedback") or {}).get("blockReason")
    stop_reason = (
        "refusal"
        if blocked
        else gemini_finish_reason_to_anthropic(candidate.get("finishReason"), has_tool_use=has_tool_use)
    )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,  # Gemini does not say which stop sequence matched
        "usage": usage_to_anthropic(usage_from_gemini(resp.get("usageMetadata"))),
    }


def gemini_response_to_openai(
    resp: dict, conv: Conversion, *, model: str, created: int, completion_id: str, new_id: Callable[[], str]
) -> dict:
    """Convert a generateContent response into an O chat completion (through the A message, §3.3)."""
    message = gemini_response_to_anthropic(resp, conv, model=model, message_id=completion_id, new_id=new_id)
    out = anthropic_response_to_openai(message, conv, model=model, created=created)
    if message["stop_reason"] == "refusal" and not out["choices"][0]["message"]["content"]:
        out["choices"][0]["message"]["content"] = None
        out["choices"][0]["message"]["refusal"] = _block_message(resp)
    return out


def _block_message(resp: dict) -> str:
    reason = (resp.get("promptFeedback") or {}).get("blockReason") or gemini_candidate(resp).get("finishReason")
    return f"The model declined to answer ({reason})." if reason else "The model declined to answer."


def compact_args(args: object) -> str:
    """Function-call arguments as O/A stream fragments carry them (JSON text)."""
    return json.dumps(args if isinstance(args, dict) else {}, separators=(",", ":"), ensure_ascii=False)


__all__ = [
    "anthropic_request_to_gemini",
    "compact_args",
    "gemini_candidate",
    "gemini_finish_reason_to_anthropic",
    "gemini_response_to_anthropic",
    "gemini_response_to_openai",
    "openai_request_to_gemini",
    "usage_from_gemini",
]
