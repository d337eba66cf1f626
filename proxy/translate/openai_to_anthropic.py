"""O client → A upstream: the request (§2.1, §2.2, §2.5–§2.8) and the non-stream response back (§3.3)."""

from __future__ import annotations

import re

from .caching import anthropic_auto_cache
from .errors import TranslationError
from .media import InlineImages
from .models import Conversion, TargetModel
from .openai_messages import openai_messages_to_anthropic
from .reasoning import effort_to_anthropic_thinking, fit_thinking_budget
from .stop_reasons import anthropic_stop_reason_to_openai
from .tools import (
    JSON_TOOL_NAME,
    compact_json,
    history_tools,
    openai_tool_choice_to_anthropic,
    openai_tool_to_anthropic,
)
from .usage import anthropic_response_usage, estimate_anthropic_prompt_tokens, usage_to_openai

FALLBACK_MAX_TOKENS = 4096  # only when the catalog knows neither a default nor the model's max output (§2.1)
JSON_OBJECT_INSTRUCTION = "Respond with a single JSON object and nothing else."  # best effort (§2.1)
# metadata.user_id must be an opaque id, no PII (§1.5; LiteLLM `_valid_user_id`).
_LOOKS_LIKE_PII = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$|^\+?[\d\s().-]{7,}$")


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TranslationError(f"{name} must be a positive integer.", param=name, code="invalid_value")
    return value


def _number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise TranslationError(f"{name} must be a number.", param=name, code="invalid_type")
    return value


def _reject_unsupported(body: dict) -> None:
    """Fields with no A counterpart that change the answer's meaning: 400 before any upstream call (§2.8)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("Only n=1 is supported for this model.", param="n", code="unsupported_value")
    if body.get("audio") or "audio" in (body.get("modalities") or []):
        raise TranslationError(
            "Audio output is not supported for this model.", param="modalities", code="unsupported_parameter"
        )


def _stop_sequences(stop: object) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise TranslationError("stop must be a string or an array of strings.", param="stop", code="invalid_type")
    return [s for s in stops if s.strip()]  # A cannot use whitespace-only stop sequences (§1.5)


def _max_tokens(body: dict, target: TargetModel) -> int:
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    if max_tokens is None:
        # O means "no cap": prefer the model's own max over a small fixed default (§2.1).
        max_tokens = target.default_max_tokens or target.max_output_tokens or FALLBACK_MAX_TOKENS
    return min(max_tokens, target.max_output_tokens) if target.max_output_tokens else max_tokens


def _tools(body: dict) -> tuple[list[dict], dict | None]:
    """(A tools, A tool_choice) from O tools / tool_choice / parallel_tool_calls, or legacy functions (§2.5)."""
    tools = body.get("tools")
    tool_choice = body.get("tool_choice")
    if tools is None and isinstance(body.get("functions"), list):
        tools = [{"type": "function", "function": function} for function in body["functions"]]
        tool_choice = body.get("function_call")  # "none" | "auto" | {name}
        if isinstance(tool_choice, dict):
            tool_choice = {"type": "function", "function": tool_choice}
    if not tools:
        return [], None  # a tool_choice without tools means nothing to A
    if not isinstance(tools, list):
        raise TranslationError("tools must be an array.", param="tools", code="invalid_type")
    converted = [openai_tool_to_anthropic(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice, converted = openai_tool_choice_to_anthropic(tool_choice, body.get("parallel_tool_calls"), converted)
    return converted, choice


def _thinking(
    body: dict, target: TargetModel, tool_choice: dict | None, max_tokens: int
) -> tuple[dict | None, str | None, int]:
    """(A thinking, output_config.effort, max_tokens) for reasoning_effort or a verbatim `thinking` (§2.6)."""
    thinking, effort = effort_to_anthropic_thinking(body.get("reasoning_effort"), target)
    if isinstance(body.get("thinking"), dict):
        thinking = body["thinking"]  # non-standard extra body, as Anthropic's own compat layer accepts (§2.1)
    if thinking is not None and tool_choice is not None and tool_choice["type"] in ("any", "tool"):
        return None, effort, max_tokens  # forced tool use is incompatible with thinking: the forced choice wins
    if thinking is not None:
        thinking, max_tokens = fit_thinking_budget(thinking, max_tokens, target.max_output_tokens)
    return thinking, effort, max_tokens


def _response_format(body: dict, target: TargetModel) -> tuple[dict | None, dict | None, str | None]:
    """(output_config.format, fallback json tool, system instruction) for an O response_format (§2.1)."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind in (None, "text"):
        return None, None, None
    if kind == "json_object":
        return None, None, JSON_OBJECT_INSTRUCTION  # no native form: best effort
    if kind != "json_schema":
        raise TranslationError("Unsupported response_format type.", param="response_format.type", code="invalid_value")
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") or {"type": "object"}
    if target.structured_output:
        return {"type": "json_schema", "schema": schema}, None, None
    tool = {"name": JSON_TOOL_NAME, "input_schema": schema}
    if spec.get("description"):
        tool["description"] = spec["description"]
    return None, tool, None


def _has_tool_blocks(messages: list[dict]) -> bool:
    return any(
        isinstance(message["content"], list)
        and any(block["type"] in ("tool_use", "tool_result") for block in message["content"])
        for message in messages
    )


def _sampling(body: dict, thinking_on: bool) -> dict:
    """temperature / top_p / stop_sequences (§2.1); thinking removes temperature and narrows top_p (§2.6)."""
    fields: dict = {}
    temperature, top_p = _number(body, "temperature"), _number(body, "top_p")
    if temperature is not None and not thinking_on:
        fields["temperature"] = min(max(temperature, 0.0), 1.0)  # A's range is [0, 1]
    if top_p is not None:
        fields["top_p"] = min(max(top_p, 0.95), 1.0) if thinking_on else top_p
    stops = _stop_sequences(body.get("stop"))
    if stops:
        fields["stop_sequences"] = stops
    return fields


def openai_request_to_anthropic(
    body: dict, target: TargetModel, *, inline_images: InlineImages | None = None
) -> Conversion:
    """Convert an O chat completion request into an A Messages request for `target` (raises TranslationError)."""
    _reject_unsupported(body)
    system, messages = openai_messages_to_anthropic(body.get("messages"), target, inline_images or {})
    tools, tool_choice = _tools(body)
    thinking, effort, max_tokens = _thinking(body, target, tool_choice, _max_tokens(body, target))
    thinking_on = thinking is not None and thinking.get("type") != "disabled"

    output_format, json_tool, instruction = _response_format(body, target)
    if instruction is not None:
        system.append(instruction)
    if json_tool is not None:
        tools.append(json_tool)
        # With thinking on A refuses a forced choice, so the model is only offered the tool (§2.1).
        if not thinking_on and (tool_choice is None or tool_choice["type"] == "auto"):
            tool_choice = {"type": "tool", "name": JSON_TOOL_NAME}
    if not tools and _has_tool_blocks(messages):
        # A refuses tool blocks in history without tool definitions (§1.6, §2.2 step 8).
        tools = history_tools(messages)
        tool_choice = {"type": "none"} if tools else None

    out: dict = {"model": target.upstream_model, "max_tokens": max_tokens}
    if system:
        out["system"] = "\n".join(system)  # the separator Anthropic's own compat layer uses (§2.2 step 1)
    out["messages"] = messages
    if tools:
        out["tools"] = tools
    if tools and tool_choice is not None:
        out["tool_choice"] = tool_choice
    if thinking is not None:
        out["thinking"] = thinking
    output_config = {"format": output_format, "effort": effort}
    if any(value is not None for value in output_config.values()):
        out["output_config"] = {key: value for key, value in output_config.items() if value is not None}
    out |= _sampling(body, thinking_on)
    user_id = body.get("user") or body.get("safety_identifier")
    if isinstance(user_id, str) and not _LOOKS_LIKE_PII.match(user_id):
        out["metadata"] = {"user_id": user_id}
    if "stream" in body:
        out["stream"] = bool(body["stream"])
    if target.auto_cache:
        # Catalog flag auto_cache: A caches only at breakpoints, an O client cannot place them (issue 14).
        # prompt_cache_key has no A field: the cache is keyed by the exact prefix, so it is not sent.
        out = anthropic_auto_cache(out)
    # Everything else (seed, penalties, logit_bias, logprobs, store, metadata, …) is dropped (§2.8, G1).
    return Conversion(
        body=out,
        tool_names={},
        json_tool=JSON_TOOL_NAME if json_tool is not None else None,
        input_estimate=estimate_anthropic_prompt_tokens(out),
    )


def anthropic_response_to_openai(resp: dict, conv: Conversion, *, model: str, created: int) -> dict:
    """Convert an A Messages response into an O chat completion (§3.3); `model` is the client's model id (G2)."""
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict] = []
    json_text = None
    for block in resp.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use" and conv.json_tool is not None and block.get("name") == conv.json_tool:
            json_text = compact_json(block.get("input") or {})  # the forced json tool's input is the answer (§2.1)
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": conv.client_tool_name(block.get("name") or ""),
                        "arguments": compact_json(block.get("input") or {}),
                    },
                }
            )
        # redacted_thinking, server blocks, signatures and citations have no O form (§3.3).
    content = json_text if json_text is not None else "".join(texts)
    message: dict = {"role": "assistant", "content": content or (None if tool_calls else ""), "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        # Never `<think>` inside content (router-for-me/CLIProxyAPI#5104).
        message["reasoning_content"] = "".join(reasoning)
    finish_reason = anthropic_stop_reason_to_openai(resp.get("stop_reason"))
    if json_text is not None and finish_reason == "tool_calls" and not tool_calls:
        finish_reason = "stop"
    return {
        "id": resp.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage_to_openai(anthropic_response_usage(resp, conv.input_estimate)),
        "system_fingerprint": None,
    }
