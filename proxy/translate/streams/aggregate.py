"""Fold an upstream stream into the upstream's own non-stream response, for stream-only providers (§4.3).

The result then goes through anthropic_response_to_openai / openai_response_to_anthropic as usual.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..errors import upstream_stream_error
from ..usage import usage_from_anthropic, usage_merge_anthropic, usage_to_anthropic


def openai_stream_to_response(chunks: Iterable[dict]) -> dict:
    """Aggregate parsed O chunks into an O chat completion; raises GatewayError on an error chunk."""
    response: dict = {"id": None, "object": "chat.completion", "created": None, "model": None}
    content: list[str] = []
    reasoning: list[str] = []
    refusal: list[str] = []
    calls: dict[object, dict] = {}  # tool key -> call, in arrival order
    finish_reason = None
    usage = None
    for chunk in chunks:
        if chunk.get("error"):
            raise upstream_stream_error(chunk, "openai")
        for key in ("id", "created", "model"):
            response[key] = response[key] or chunk.get(key)
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for target, key in ((content, "content"), (refusal, "refusal"), (reasoning, "reasoning_content")):
                if isinstance(delta.get(key), str):
                    target.append(delta[key])
            if isinstance(delta.get("reasoning"), str):
                reasoning.append(delta["reasoning"])
            for fragment in delta.get("tool_calls") or []:
                key = fragment.get("index") if isinstance(fragment.get("index"), int) else fragment.get("id")
                call = calls.setdefault(
                    key if key is not None else len(calls),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = call["id"] or fragment.get("id")
                function = fragment.get("function") or {}
                call["function"]["name"] = call["function"]["name"] or function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
            finish_reason = choice.get("finish_reason") or finish_reason
    message: dict = {"role": "assistant", "content": "".join(content) or None, "refusal": "".join(refusal) or None}
    if calls:
        message["tool_calls"] = list(calls.values())
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    response["choices"] = [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}]
    response["usage"] = usage
    return response


def anthropic_stream_to_response(events: Iterable[dict]) -> dict:
    """Aggregate parsed A events into an A message; raises GatewayError on an `error` event."""
    message: dict = {}
    blocks: dict[int, dict] = {}
    partial_json: dict[int, list[str]] = {}
    usage = None
    for event in events:
        kind = event.get("type")
        if kind == "error":
            raise upstream_stream_error(event, "anthropic")
        if kind == "message_start":
            message = dict(event.get("message") or {})
            usage = usage_from_anthropic(message.get("usage"))
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta" and event.get("index") in blocks:
            block, delta = blocks[event["index"]], event.get("delta") or {}
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta_kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif delta_kind == "signature_delta":
                block["signature"] = block.get("signature", "") + delta.get("signature", "")
            elif delta_kind == "input_json_delta":
                partial_json.setdefault(event["index"], []).append(delta.get("partial_json", ""))
        elif kind == "message_delta":
            message.update(
                {k: v for k, v in (event.get("delta") or {}).items() if k in ("stop_reason", "stop_sequence")}
            )
            if event.get("usage"):
                usage = usage_merge_anthropic(usage or usage_from_anthropic(None), event["usage"])
    for index, fragments in partial_json.items():
        text = "".join(fragments)
        try:
            blocks[index]["input"] = json.loads(text) if text else {}
        except ValueError:
            blocks[index]["input"] = {}
    message["content"] = [blocks[index] for index in sorted(blocks)]
    if usage is not None:
        message["usage"] = usage_to_anthropic(usage)
    return message
