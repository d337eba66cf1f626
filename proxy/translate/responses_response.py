"""OpenAI Responses (R) response objects: A message ⇄ R response (PROTOCOLS-RESPONSES §1.4, §5.1, §5.9, §5.11)
and the R usage mapping. Pure: ids come from `new_id(prefix)`, the time from `now`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from .envelope import Sealer
from .models import Conversion
from .responses_request import ENCRYPTED_INCLUDE
from .tools import compact_json, tool_input_from_arguments
from .usage import Usage, usage_cached_in_prompt, usage_to_anthropic

NewId = Callable[[str], str]  # prefix ("resp", "msg", "rs", "fc", "ctc", "call", "toolu") -> a fresh id


@dataclass
class ResponsesTurn:
    """What building an R response needs besides the A message: the client's request and the route's sealer."""

    model: str  # the client's model id (G2)
    request: dict  # the R client's create body (echoed fields)
    now: int
    new_id: NewId
    response_id: str = ""
    sealer: Sealer | None = None
    side: dict = field(default_factory=dict)
    # Every reasoning item's envelope by item id, whether or not the client included encrypted_content:
    # the gateway's store keeps them, so a previous_response_id continuation can restore the thinking (§4.1).
    envelopes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.response_id:
            self.response_id = self.new_id("resp")

    @property
    def include_encrypted(self) -> bool:
        return ENCRYPTED_INCLUDE in (self.request.get("include") or []) or self.request.get("store") is False

    @property
    def summary(self) -> bool:
        return bool((self.request.get("reasoning") or {}).get("summary"))


# --- usage -------------------------------------------------------------------------------------------------


def usage_from_responses(usage: dict | None) -> Usage:
    """Normalize an R usage object: input_tokens include cached and cache-written tokens (§5.1)."""
    if not isinstance(usage, dict):
        return Usage()
    return usage_cached_in_prompt(usage, prompt="input_tokens", output="output_tokens")


def usage_to_responses(usage: Usage) -> dict:
    """The R usage object: always integers and both details objects (Codex parses them, §1.4)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


# --- status -------------------------------------------------------------------------------------------------


def anthropic_stop_to_responses(stop_reason: str | None, has_calls: bool) -> tuple[str, dict | None]:
    """(status, incomplete_details) for an A stop_reason (§5.1); any call item ⇒ completed."""
    if has_calls:
        return "completed", None
    if stop_reason in ("max_tokens", "model_context_window_exceeded"):
        return "incomplete", {"reason": "max_output_tokens"}
    if stop_reason == "refusal":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def responses_status_to_anthropic(data: dict, has_calls: bool, refused: bool) -> str:
    """A stop_reason for an R response's status (§5.1)."""
    if has_calls:
        return "tool_use"
    reason = (data.get("incomplete_details") or {}).get("reason") if data.get("status") == "incomplete" else None
    if reason == "max_output_tokens":
        return "max_tokens"
    if reason == "content_filter" or refused:
        return "refusal"
    return "end_turn"


# --- A message → R response ---------------------------------------------------------------------------------


def responses_skeleton(turn: ResponsesTurn, *, status: str = "in_progress") -> dict:
    """The response object with the request's echoes and defaults (§5.9); output and usage filled later."""
    request = turn.request
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    return {
        "id": turn.response_id,
        "object": "response",
        "created_at": turn.now,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": turn.model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def reasoning_item_from_block(block: dict, turn: ResponsesTurn, item_id: str) -> dict:
    """One R reasoning item for an A thinking/redacted_thinking block (§5.6 step 2)."""
    text = block.get("thinking") or "" if block.get("type") == "thinking" else ""
    item: dict = {"id": item_id, "type": "reasoning", "summary": []}
    if text and turn.summary:
        item["summary"] = [{"type": "summary_text", "text": text}]
    # Only signed A blocks can be replayed (§5.6): O/Gemini reasoning has nothing to verify, so no envelope.
    signed = block.get("signature") or block.get("type") == "redacted_thinking"
    if turn.sealer is not None and signed:
        turn.envelopes[item_id] = turn.sealer.seal("a", block)
        if turn.include_encrypted:
            item["encrypted_content"] = turn.envelopes[item_id]
    return item


def responses_with_envelopes(response: dict, envelopes: dict[str, str]) -> dict:
    """The response as the gateway stores it: every reasoning item with its envelope (§4.1, §5.6)."""
    if not envelopes:
        return response
    output = [
        {**item, "encrypted_content": envelopes[item["id"]]}
        if item.get("type") == "reasoning" and item.get("id") in envelopes
        else item
        for item in response.get("output") or []
    ]
    return {**response, "output": output}


def call_item(block: dict, turn: ResponsesTurn, conv: Conversion, item_id: str | None = None) -> dict:
    """An R function_call / custom_tool_call for an A tool_use block (§5.7, §1.3 namespaces)."""
    name = conv.client_tool_name(block.get("name") or "")
    namespace = None
    flat = (conv.side.get("namespaces") or {}).get(name)
    if flat:
        namespace, name = flat
    if name in (conv.side.get("custom_tools") or ()):
        value = (block.get("input") or {}).get("input") if isinstance(block.get("input"), dict) else None
        item = {
            "id": item_id or turn.new_id("ctc"),
            "type": "custom_tool_call",
            "status": "completed",
            "call_id": block.get("id"),
            "name": name,
            "input": value if isinstance(value, str) else compact_json(block.get("input") or {}),
        }
    else:
        item = {
            "id": item_id or turn.new_id("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": block.get("id"),
            "name": name,
            "arguments": compact_json(block.get("input") or {}),
        }
    if namespace:
        item["namespace"] = namespace
    return item


def message_item(
    texts: list[str],
    turn: ResponsesTurn,
    *,
    status: str = "completed",
    refusal: bool = False,
    item_id: str | None = None,
) -> dict:
    text = "".join(texts)
    part = (
        {"type": "refusal", "refusal": text}
        if refusal
        else {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    )
    return {
        "id": item_id or turn.new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part],
    }


def anthropic_response_to_responses(message: dict, conv: Conversion, turn: ResponsesTurn) -> dict:
    """The R response for an A message (the neutral form of any upstream's answer, §5.9)."""
    blocks = [b for b in message.get("content") or [] if isinstance(b, dict)]
    has_calls = any(b.get("type") == "tool_use" and b.get("name") != conv.json_tool for b in blocks)
    status, incomplete = anthropic_stop_to_responses(message.get("stop_reason"), has_calls)
    output: list[dict] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            output.append(message_item(texts, turn, status="incomplete" if status == "incomplete" else "completed"))
            texts.clear()

    for block in blocks:
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking"):
            flush()
            output.append(reasoning_item_from_block(block, turn, turn.new_id("rs")))
        elif kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use" and conv.json_tool and block.get("name") == conv.json_tool:
            texts.append(compact_json(block.get("input") or {}))  # forced-tool JSON fallback (§7 edge 31)
        elif kind == "tool_use":
            flush()
            output.append(call_item(block, turn, conv))
    flush()
    usage = usage_from_anthropic_message(message)
    response = responses_skeleton(turn, status=status)
    response["output"] = output
    response["incomplete_details"] = incomplete
    response["usage"] = usage_to_responses(usage)
    if status == "completed":
        response["completed_at"] = turn.now
    return response


def usage_from_anthropic_message(message: dict) -> Usage:
    from .usage import usage_from_anthropic

    return usage_from_anthropic(message.get("usage"))


# --- R response → A message ---------------------------------------------------------------------------------


def _reasoning_block(item: dict, sealer: Sealer | None) -> dict:
    summary = "\n\n".join(
        part.get("text") or "" for part in item.get("summary") or [] if isinstance(part, dict)
    ) or "\n\n".join(part.get("text") or "" for part in item.get("content") or [] if isinstance(part, dict))
    signature = ""
    if sealer is not None and item.get("encrypted_content"):
        signature = sealer.seal("r", {"id": item.get("id"), "encrypted_content": item["encrypted_content"]})
    return {"type": "thinking", "thinking": summary, "signature": signature}


def responses_response_to_anthropic(
    data: dict, conv: Conversion, *, model: str, message_id: str, sealer: Sealer | None = None
) -> dict:
    """The A message for an R upstream's response (§5.11): blocks in item order, one message."""
    content: list[dict] = []
    refused = False
    has_calls = False
    custom = set(conv.side.get("custom_tools") or ())
    for item in data.get("output") or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "reasoning":
            content.append(_reasoning_block(item, sealer))
        elif kind == "message":
            for part in item.get("content") or []:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "output_text" and part.get("text"):
                    content.append({"type": "text", "text": part["text"]})
                elif part.get("type") == "refusal" and part.get("refusal"):
                    refused = True
                    content.append({"type": "text", "text": part["refusal"]})
        elif kind in ("function_call", "custom_tool_call"):
            has_calls = True
            name = item.get("name") or ""
            if item.get("namespace"):
                name = f"{item['namespace']}__{name}"
            if kind == "custom_tool_call" or name in custom:
                value = item.get("input") if kind == "custom_tool_call" else None
                tool_input = (
                    {"input": value} if isinstance(value, str) else tool_input_from_arguments(item.get("arguments"))
                )
            else:
                tool_input = tool_input_from_arguments(item.get("arguments"))
            content.append(
                {"type": "tool_use", "id": item.get("call_id") or item.get("id"), "name": name, "input": tool_input}
            )
    stop_reason = responses_status_to_anthropic(data, has_calls, refused)
    stop_sequence = None
    stops = conv.side.get("stop") or []
    if stops:  # §5.8 stop emulation on the finished text
        content, stop_sequence = _cut_at_stop(content, stops)
        if stop_sequence is not None:
            stop_reason = "stop_sequence"
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_to_anthropic(usage_from_responses(data.get("usage"))),
    }


def _cut_at_stop(content: list[dict], stops: list[str]) -> tuple[list[dict], str | None]:
    out: list[dict] = []
    for block in content:
        if block["type"] == "text":
            hits = [(block["text"].find(stop), stop) for stop in stops if stop in block["text"]]
            if hits:
                position, stop = min(hits)
                if position:
                    out.append({"type": "text", "text": block["text"][:position]})
                return out, stop
        out.append(block)
    return out, None


def responses_output_text(data: dict) -> str:
    """Everything an R response produced, for a local output estimate."""
    return json.dumps(data.get("output") or [], ensure_ascii=False)
