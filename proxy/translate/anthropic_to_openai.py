"""A client → O upstream: request (§2.3–§2.8), non-stream response back (§3.4); A→A thinking filter (§3.5)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from .anthropic_messages import anthropic_messages_to_openai, anthropic_system_to_openai
from .errors import TranslationError
from .media import InlineImages
from .models import Conversion, TargetModel
from .reasoning import anthropic_thinking_to_effort
from .stop_reasons import anthropic_stop
from .system_messages import anthropic_split_mid_conv_blocks, anthropic_tool_fold
from .tools import (
    anthropic_tool_choice_to_openai,
    anthropic_tool_to_openai,
    openai_tool_name,
    sanitize_tool_id,
    tool_input_from_arguments,
)
from .usage import estimate_openai_prompt_tokens, openai_response_usage, usage_to_anthropic

OPENAI_MAX_STOP = 4  # O accepts at most 4 stop sequences (§2.3)
STRUCTURED_OUTPUT_NAME = "structured_output"


def _tools(body: dict, target: TargetModel, tool_names: dict[str, str]) -> dict:
    """O tools / tool_choice / parallel_tool_calls / web_search_options fields (§2.3, §2.5)."""
    if body.get("mcp_servers"):
        raise TranslationError(
            "mcp_servers is not supported for this model.", param="mcp_servers", code="unsupported_parameter"
        )
    tools: list[dict] = []
    fields: dict = {}
    client_tools = body.get("tools") or []
    if not isinstance(client_tools, list) or not all(isinstance(tool, dict) for tool in client_tools):
        raise TranslationError("tools must be an array of objects.", param="tools", code="invalid_type")
    for i, tool in enumerate(client_tools):
        kind = tool.get("type")
        if kind in (None, "custom"):
            tools.append(anthropic_tool_to_openai(tool, tool_names))
        elif isinstance(kind, str) and kind.startswith("web_search") and target.web_search:
            fields["web_search_options"] = {}
        else:
            raise TranslationError(
                f"Server tool {kind!r} is not supported for this model.",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )
    fold = anthropic_tool_fold(client_tools, anthropic_split_mid_conv_blocks(body.get("messages")))
    for definition in fold.added.values():  # an inline tool_definition is declared like the others (M6)
        if definition.get("type") in (None, "custom"):
            tools.append(anthropic_tool_to_openai(definition, tool_names))
    if tools:
        fields["tools"] = tools
    fields |= anthropic_tool_choice_to_openai(body.get("tool_choice"), bool(tools))
    if tools and fold.changed and fields.get("tool_choice") in (None, "auto", "required"):
        # M6: every declared tool stays (the history may call any of them); this turn may use only the active ones.
        functions = {tool["function"]["name"] for tool in tools}
        names = [name for name in map(openai_tool_name, fold.active) if name in functions]
        allowed = [{"type": "function", "function": {"name": name}} for name in names]
        mode = "required" if fields.get("tool_choice") == "required" else "auto"
        fields["tool_choice"] = (
            {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": allowed}} if allowed else "none"
        )
    return fields


def _is_strict_schema(schema: object) -> bool:
    """OpenAI strict mode: every object closes additionalProperties and requires all its properties (§2.3)."""
    if isinstance(schema, list):
        return all(_is_strict_schema(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False or set(schema.get("required") or []) != set(properties):
            return False
        rest = [value for key, value in schema.items() if key != "properties"]
        return _is_strict_schema(rest) and _is_strict_schema(list(properties.values()))
    return _is_strict_schema(list(schema.values()))


def _response_format(output_config: object) -> dict | None:
    spec = output_config.get("format") if isinstance(output_config, dict) else None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        return None
    schema = spec.get("schema") or {"type": "object"}
    json_schema = {"name": STRUCTURED_OUTPUT_NAME, "schema": schema, "strict": _is_strict_schema(schema)}
    return {"type": "json_schema", "json_schema": json_schema}


def anthropic_request_to_openai(
    body: dict, target: TargetModel, *, inline_images: InlineImages | None = None
) -> Conversion:
    """Convert an A Messages request into an O chat completion request for `target` (raises TranslationError)."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        # max_tokens:0 is A's cache pre-warm: no O counterpart (§2.8).
        raise TranslationError("max_tokens must be a positive integer.", param="max_tokens", code="invalid_value")
    if target.max_output_tokens:
        max_tokens = min(max_tokens, target.max_output_tokens)

    tool_names: dict[str, str] = {}
    tool_fields = _tools(body, target, tool_names)
    messages = anthropic_messages_to_openai(body.get("messages"), target, inline_images or {}, tool_names)
    # mid_system: hoist — for providers that reject non-leading system messages (M3, CLIProxyAPI#3608).
    hoisted = [m["content"] for m in messages if m.get("_hoist")]
    messages = [m for m in messages if not m.get("_hoist")]
    system = "\n\n".join(part for part in (anthropic_system_to_openai(body.get("system")), *hoisted) if part)
    if system:
        messages.insert(0, {"role": target.system_role, "content": system})

    out: dict = {"model": target.upstream_model, "messages": messages, target.max_tokens_field: max_tokens}
    for name in ("temperature", "top_p"):  # A's ranges are inside O's; top_k has no O counterpart
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise TranslationError("stop_sequences must be a string array.", param="stop_sequences", code="invalid_type")
    if stops:
        out["stop"] = stops[:OPENAI_MAX_STOP]  # always an array (QuantumNous/new-api#7175)
    if "stream" in body:
        out["stream"] = bool(body["stream"])
        if body["stream"] and target.stream_usage:
            out["stream_options"] = {"include_usage": True}  # billing needs usage (G5)
    out |= tool_fields
    effort = anthropic_thinking_to_effort(body.get("thinking"), body.get("output_config"), target)
    if effort is not None:
        out["reasoning_effort"] = effort
    response_format = _response_format(body.get("output_config"))
    if response_format is not None:
        out["response_format"] = response_format
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id:
        # M10: Claude Code sends a ~150-character JSON string; its sha256 hex is a stable opaque id of 64 chars.
        out["user"] = hashlib.sha256(user_id.encode()).hexdigest()
    # n is never sent: A returns one message (§3.4). service_tier, container, cache_control… are dropped (§2.8).
    return Conversion(body=out, tool_names=tool_names, input_estimate=estimate_openai_prompt_tokens(out))


def openai_reasoning_text(message: dict) -> str:
    """Reasoning of an O message or delta: reasoning_content ?? reasoning ?? reasoning_details texts (§3.4)."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str) and message[key]:
            return message[key]
    details = message.get("reasoning_details")
    texts = []
    for detail in details if isinstance(details, list) else []:
        text = detail.get("text") or detail.get("summary") if isinstance(detail, dict) else None
        if isinstance(text, str):
            texts.append(text)
    return "".join(texts)


def openai_content_text(content: object) -> str:
    """Text of an O message content, whether a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def anthropic_message_id(upstream_id: object, new_id: Callable[[], str]) -> str:
    """`msg_` + the upstream id unless it already has the prefix, or a fresh one (§3.4)."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"
    return "msg_" + new_id().removeprefix("toolu_")  # new_id() mints tool ids; reuse its random part


def anthropic_tool_id(upstream_id: object, new_id: Callable[[], str]) -> str:
    """A tool_use id for an O tool-call id: sanitized (§2.2 step 3), or a fresh `new_id()`."""
    return sanitize_tool_id(upstream_id if isinstance(upstream_id, str) and upstream_id else new_id())


def openai_response_to_anthropic(resp: dict, conv: Conversion, *, model: str, new_id: Callable[[], str]) -> dict:
    """Convert an O chat completion into an A message (§3.4); `new_id()` mints a tool_use id ("toolu_" + 24 hex)."""
    choice = (resp.get("choices") or [{}])[0]  # n is forced to 1 on these routes
    message = choice.get("message") or {}
    content: list[dict] = []
    reasoning = openai_reasoning_text(message)
    if reasoning:
        # Synthesized: no signature exists, so an A upstream must never see it again (§3.5).
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = openai_content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = list(message.get("tool_calls") or [])
    if isinstance(message.get("function_call"), dict):
        calls.append({"function": message["function_call"]})  # legacy single call
    for call in calls:
        function = call.get("function") or {}
        name = function.get("name") or ""
        content.append(
            {
                "type": "tool_use",
                "id": anthropic_tool_id(call.get("id"), new_id),
                "name": conv.client_tool_name(name),
                "input": tool_input_from_arguments(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = anthropic_stop(
        choice.get("finish_reason"),
        matched_stop=choice.get("stop_reason"),
        has_tool_use=bool(calls),
        refused=bool(refusal),
    )
    return {
        "id": anthropic_message_id(resp.get("id"), new_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,  # an empty completion stays [], never an empty text block (§3.4)
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_to_anthropic(openai_response_usage(resp, conv.input_estimate)),
    }


def anthropic_thinking_filter(body: dict, *, accept_signature: Callable[[dict], bool] | None = None) -> dict:
    """Drop unsigned or rejected thinking blocks before an A upstream sees them (§3.5); `body` itself if unchanged."""

    def droppable(block: object) -> bool:
        if not isinstance(block, dict) or block.get("type") != "thinking":
            return False
        if not block.get("signature"):
            return True  # gateway-synthesized: never fabricate a signature (CommonstackAI/UncommonRoute#19)
        return accept_signature is not None and not accept_signature(block)

    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    filtered: list = []
    changed = False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or message.get("role") != "assistant":
            filtered.append(message)
            continue
        kept = [block for block in content if not droppable(block)]
        if len(kept) == len(content):
            filtered.append(message)  # untouched: signed blocks stay byte-identical
            continue
        changed = True
        if kept:
            filtered.append({**message, "content": kept})
        # A turn of only synthesized thinking disappears; A merges the neighbouring user turns.
    return {**body, "messages": filtered} if changed else body
