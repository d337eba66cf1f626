"""OpenAI Responses (R) streams (PROTOCOLS-RESPONSES §2, §3, §5.10, §5.11).

- `AnthropicToResponsesStream`: neutral A events → R events for an R client (any non-R upstream).
- `ResponsesToAnthropicStream`: an R upstream's events → neutral A events (for A and O clients).
- `ResponsesRelay`: R upstream → R client, passed through but for the gateway rules.

Every machine has the interface chat.py drives: `feed(event) -> items`, `finish()`, `fail(error)`,
`done`, `error`, `usage`, `output_text`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from .envelope import Sealer
from .errors import _SHAPES, ErrorKind, GatewayError, upstream_stream_error
from .models import Conversion, SSEItem
from .responses_response import (
    ResponsesTurn,
    anthropic_stop_to_responses,
    responses_skeleton,
    usage_from_responses,
    usage_to_responses,
)
from .streams.from_anthropic import STREAM_INCOMPLETE
from .streams.from_openai import anthropic_event
from .tools import compact_json
from .usage import Usage, estimate_text_tokens, usage_from_anthropic, usage_merge_anthropic, usage_to_anthropic

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def responses_error_code(error: GatewayError) -> str:
    """The R `error.code` Codex and the SDKs act on (§3): rate limits, context, quota, else server_error."""
    if error.kind is ErrorKind.RATE_LIMIT:
        return "rate_limit_exceeded"
    if error.kind is ErrorKind.BILLING:
        return "insufficient_quota"
    if error.code == "context_length_exceeded":
        return "context_length_exceeded"
    if error.kind is ErrorKind.INVALID_REQUEST:
        return error.code or "invalid_request_error"
    return "server_error"


def responses_error_message(error: GatewayError) -> str:
    if error.kind is ErrorKind.RATE_LIMIT:
        return f"{error.message.rstrip('.')}. Please try again in {error.retry_after or 1}s."
    return error.message


class EndsInFailureUnlessDone:
    """Upstream EOF before the stream's own end is a failure, never a fake completion: the one
    `finish` of the machines here; each has `done` and `fail(error)`."""

    done: bool

    def finish(self) -> list[SSEItem]:
        if self.done:
            return []
        return self.fail(GatewayError(ErrorKind.API_ERROR, STREAM_INCOMPLETE))

    def fail(self, error: GatewayError) -> list[SSEItem]:
        raise NotImplementedError


class ResponsesEvents(EndsInFailureUnlessDone):
    """Sequence numbers and the failure tail shared by the R-emitting machines."""

    seq: int
    response: dict

    def event(self, kind: str, /, **data: object) -> SSEItem:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return kind, payload

    def failure(self, error: GatewayError, output: list[dict], usage: Usage) -> list[SSEItem]:
        """`error` (flat + nested) then `response.failed` (§3 mid-stream); nothing may follow."""
        code, message = responses_error_code(error), responses_error_message(error)
        nested = {"type": _SHAPES[error.kind].openai_type, "code": code, "message": message, "param": None}
        items = [self.event("error", code=code, message=message, param=None, error=nested)]
        response = {
            **self.response,
            "status": "failed",
            "error": {"code": code, "message": message},
            "output": output,
            "usage": usage_to_responses(usage),
        }
        items.append(self.event("response.failed", response=response))
        return items


@dataclass
class _Item:
    kind: str  # "message" | "reasoning" | "function_call" | "custom_tool_call" | "json" (forced json tool as text)
    output_index: int
    item: dict
    text: list[str] = field(default_factory=list)  # message text / reasoning text / arguments / custom input
    block: dict | None = None  # the A thinking block (for the envelope)
    summary_open: bool = False


class AnthropicToResponsesStream(ResponsesEvents):
    """Feed neutral A events (their data), get R events (§5.10)."""

    def __init__(self, conv: Conversion, turn: ResponsesTurn) -> None:
        self.conv = conv
        self.turn = turn
        self.seq = 0
        self.response = responses_skeleton(turn)
        self.started = False
        self.open: _Item | None = None
        self.items: list[dict] = []  # done items, in order
        self.by_block: dict[int, _Item] = {}
        self.reported_usage: Usage | None = None
        self.final_usage_seen = False
        self.stop_reason: str | None = None
        self.has_calls = False
        self.done = False
        self.error: GatewayError | None = None
        self.output_text: list[str] = []
        self.final_response: dict | None = None

    @property
    def usage(self) -> Usage:
        estimate = estimate_text_tokens("".join(self.output_text))
        if self.reported_usage is None:
            return Usage(input_tokens=self.conv.input_estimate, output_tokens=estimate, estimated=True)
        if self.final_usage_seen or self.reported_usage.output_tokens >= estimate:
            return self.reported_usage
        return replace(self.reported_usage, output_tokens=estimate, estimated=True)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def _start(self) -> list[SSEItem]:
        if self.started:
            return []
        self.started = True
        return [
            self.event("response.created", response=dict(self.response)),
            self.event("response.in_progress", response=dict(self.response)),
        ]

    def _open(self, kind: str, item: dict, block: dict | None = None) -> tuple[_Item, list[SSEItem]]:
        items = self._close_open()
        opened = _Item(kind=kind, output_index=len(self.items), item=item, block=block)
        self.open = opened
        items.append(self.event("response.output_item.added", output_index=opened.output_index, item=dict(item)))
        if kind in ("message", "json"):
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            items.append(
                self.event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=opened.output_index,
                    content_index=0,
                    part=part,
                )
            )
        return opened, items

    def _close_open(self) -> list[SSEItem]:
        opened, self.open = self.open, None
        if opened is None:
            return []
        item, index, items = opened.item, opened.output_index, []
        text = "".join(opened.text)
        if opened.kind in ("message", "json"):
            items.append(
                self.event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
            )
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            items.append(
                self.event(
                    "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            )
            item = {**item, "status": "completed", "content": [part]}
        elif opened.kind == "reasoning":
            if opened.summary_open:
                items.append(
                    self.event(
                        "response.reasoning_summary_text.done",
                        item_id=item["id"],
                        output_index=index,
                        summary_index=0,
                        text=text,
                    )
                )
                part = {"type": "summary_text", "text": text}
                items.append(
                    self.event(
                        "response.reasoning_summary_part.done",
                        item_id=item["id"],
                        output_index=index,
                        summary_index=0,
                        part=part,
                    )
                )
                item = {**item, "summary": [part]}
            block = opened.block or {}
            signed = block.get("signature") or block.get("type") == "redacted_thinking"
            if self.turn.sealer is not None and signed:
                sealed = {**block, "thinking": text} if block.get("type") == "thinking" else block
                self.turn.envelopes[item["id"]] = self.turn.sealer.seal("a", sealed)
                if self.turn.include_encrypted:
                    item = {**item, "encrypted_content": self.turn.envelopes[item["id"]]}
        elif opened.kind == "function_call":
            items.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=text,
                    name=item["name"],
                )
            )
            item = {**item, "status": "completed", "arguments": text}
        elif opened.kind == "custom_tool_call":
            try:
                parsed = json.loads(text) if text else {}
            except ValueError:
                parsed = None
            value = parsed.get("input") if isinstance(parsed, dict) else None
            value = value if isinstance(value, str) else text
            if value:
                items.append(
                    self.event(
                        "response.custom_tool_call_input.delta", item_id=item["id"], output_index=index, delta=value
                    )
                )
            items.append(
                self.event("response.custom_tool_call_input.done", item_id=item["id"], output_index=index, input=value)
            )
            item = {**item, "status": "completed", "input": value}
        items.append(self.event("response.output_item.done", output_index=index, item=item))
        self.items.append(item)
        return items

    # -- A events -------------------------------------------------------------------------------------------
    def _block_start(self, index: int, block: dict) -> list[SSEItem]:
        kind = block.get("type")
        new_id = self.turn.new_id
        if kind == "text":
            if self.open is not None and self.open.kind == "message":
                self.by_block[index] = self.open  # consecutive text blocks share one message (§5.10)
                return []
            opened, items = self._open(
                "message",
                {"id": new_id("msg"), "type": "message", "status": "in_progress", "content": [], "role": "assistant"},
            )
        elif kind in ("thinking", "redacted_thinking"):
            opened, items = self._open(
                "reasoning", {"id": new_id("rs"), "type": "reasoning", "summary": []}, block=dict(block)
            )
        elif kind == "tool_use" and self.conv.json_tool and block.get("name") == self.conv.json_tool:
            opened, items = self._open(
                "json",
                {"id": new_id("msg"), "type": "message", "status": "in_progress", "content": [], "role": "assistant"},
            )
        elif kind == "tool_use":
            self.has_calls = True
            name = self.conv.client_tool_name(block.get("name") or "")
            namespace = None
            flat = (self.conv.side.get("namespaces") or {}).get(name)
            if flat:
                namespace, name = flat
            if name in (self.conv.side.get("custom_tools") or ()):
                item = {
                    "id": new_id("ctc"),
                    "type": "custom_tool_call",
                    "status": "in_progress",
                    "call_id": block.get("id"),
                    "name": name,
                    "input": "",
                }
                kind_name = "custom_tool_call"
            else:
                item = {
                    "id": new_id("fc"),
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": block.get("id"),
                    "name": name,
                }
                kind_name = "function_call"
            if namespace:
                item["namespace"] = namespace
            self.output_text.append(name)
            opened, items = self._open(kind_name, item)
        else:
            return []  # server tool blocks: never produced on converted routes (§2.1)
        self.by_block[index] = opened
        return items

    def _block_delta(self, index: int, delta: dict) -> list[SSEItem]:
        opened = self.by_block.get(index)
        if opened is None or opened is not self.open:
            return []
        item, position = opened.item, opened.output_index
        kind = delta.get("type")
        if kind == "text_delta" and opened.kind == "message" and delta.get("text"):
            opened.text.append(delta["text"])
            self.output_text.append(delta["text"])
            return [
                self.event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=position,
                    content_index=0,
                    delta=delta["text"],
                    logprobs=[],
                )
            ]
        if kind == "thinking_delta" and opened.kind == "reasoning" and delta.get("thinking"):
            opened.text.append(delta["thinking"])
            self.output_text.append(delta["thinking"])
            if not self.turn.summary:
                return []  # no summary requested: the text only feeds the envelope
            items = []
            if not opened.summary_open:
                opened.summary_open = True
                items.append(
                    self.event(
                        "response.reasoning_summary_part.added",
                        item_id=item["id"],
                        output_index=position,
                        summary_index=0,
                        part={"type": "summary_text", "text": ""},
                    )
                )
            items.append(
                self.event(
                    "response.reasoning_summary_text.delta",
                    item_id=item["id"],
                    output_index=position,
                    summary_index=0,
                    delta=delta["thinking"],
                )
            )
            return items
        if kind == "signature_delta" and opened.block is not None:
            opened.block["signature"] = (opened.block.get("signature") or "") + (delta.get("signature") or "")
            return []
        if kind == "input_json_delta" and delta.get("partial_json"):
            fragment = delta["partial_json"]
            opened.text.append(fragment)
            self.output_text.append(fragment)
            if opened.kind == "function_call":
                return [
                    self.event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=position,
                        delta=fragment,
                    )
                ]
            if opened.kind == "json":
                return [
                    self.event(
                        "response.output_text.delta",
                        item_id=item["id"],
                        output_index=position,
                        content_index=0,
                        delta=fragment,
                        logprobs=[],
                    )
                ]
        return []  # custom tool input is buffered until the block stops (§5.7)

    def _block_stop(self, index: int) -> list[SSEItem]:
        opened = self.by_block.get(index)
        if opened is None or opened is not self.open or opened.kind == "message":
            return []  # a message stays open: the next text block may continue it
        return self._close_open()

    def _finalize(self) -> list[SSEItem]:
        items = self._start() + self._close_open()
        status, incomplete = anthropic_stop_to_responses(self.stop_reason, self.has_calls)
        if status == "incomplete":
            self.items = [
                {**item, "status": "incomplete"} if item.get("type") == "message" else item for item in self.items
            ]
        response = {
            **self.response,
            "status": status,
            "incomplete_details": incomplete,
            "output": self.items,
            "usage": usage_to_responses(self.usage),
        }
        if status == "completed":
            response["completed_at"] = self.turn.now
        self.final_response = response
        items.append(self.event(f"response.{status}", response=response))
        self.done = True
        return items

    def feed(self, event: dict) -> list[SSEItem]:
        if self.done:
            return []
        kind = event.get("type")
        if kind == "error":
            return self.fail(upstream_stream_error(event, "anthropic"))
        items = self._start()
        if kind == "message_start":
            self.reported_usage = usage_from_anthropic((event.get("message") or {}).get("usage"))
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            items += self._block_start(event.get("index", 0), event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            items += self._block_delta(event.get("index", 0), event["delta"])
        elif kind == "content_block_stop":
            items += self._block_stop(event.get("index", 0))
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            if isinstance(event.get("usage"), dict):
                self.reported_usage = usage_merge_anthropic(self.reported_usage or Usage(), event["usage"])
                self.final_usage_seen = True
        elif kind == "message_stop":
            items += self._finalize()
        return items

    def fail(self, error: GatewayError) -> list[SSEItem]:
        if self.done:
            return []
        items = self._start()
        if self.open is not None and self.open.kind != "reasoning":
            self.items.append({**self.open.item, "status": "incomplete"})
        self.open = None
        items += self.failure(error, self.items, self.usage)
        self.error, self.done = error, True
        return items


class ResponsesToAnthropicStream(EndsInFailureUnlessDone):
    """Feed an R upstream's events, get neutral A events (§5.11)."""

    def __init__(self, conv: Conversion, *, model: str, message_id: str, sealer: Sealer | None = None) -> None:
        self.conv = conv
        self.model = model
        self.message_id = message_id
        self.sealer = sealer
        self.started = False
        self.next_index = 0
        self.blocks: dict[str, dict] = {}  # R item id -> {"index", "kind", "input"}
        self.text_index: int | None = None  # the open text block
        self.text_item: str | None = None
        self.summary_index = -1
        self.reported: dict | None = None
        self.refused = False
        self.has_calls = False
        self.done = False
        self.error: GatewayError | None = None
        self.output_text: list[str] = []
        self.custom = set(conv.side.get("custom_tools") or ())
        self.stops = list(conv.side.get("stop") or ())
        self.tail = ""  # §5.8: text held back while it could still be the start of a stop sequence
        self.stopped: str | None = None

    @property
    def usage(self) -> Usage:
        if self.reported is not None:
            return usage_from_responses(self.reported)
        return Usage(
            input_tokens=self.conv.input_estimate,
            output_tokens=estimate_text_tokens("".join(self.output_text)),
            estimated=True,
        )

    def _start(self) -> list[SSEItem]:
        if self.started:
            return []
        self.started = True
        usage = {
            "input_tokens": self.conv.input_estimate,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [anthropic_event("message_start", message=message), anthropic_event("ping")]

    def _new_block(self, block: dict) -> tuple[int, list[SSEItem]]:
        index = self.next_index
        self.next_index += 1
        return index, [anthropic_event("content_block_start", index=index, content_block=block)]

    def _close_text(self) -> list[SSEItem]:
        items: list[SSEItem] = []
        if self.text_index is not None:
            if self.tail and self.stopped is None:
                items.append(self._text_delta(self.tail))
                self.tail = ""
            items.append(anthropic_event("content_block_stop", index=self.text_index))
            self.text_index = self.text_item = None
        return items

    def _text_delta(self, text: str) -> SSEItem:
        self.output_text.append(text)
        return anthropic_event("content_block_delta", index=self.text_index, delta={"type": "text_delta", "text": text})

    def _text(self, text: str) -> list[SSEItem]:
        if self.stopped is not None:
            return []
        items: list[SSEItem] = []
        if self.text_index is None:
            self.text_index, items = self._new_block({"type": "text", "text": ""})
        if not self.stops:
            return [*items, self._text_delta(text)]
        buffered = self.tail + text
        hits = [(buffered.find(stop), stop) for stop in self.stops if stop in buffered]
        if hits:
            position, stop = min(hits)
            self.stopped, self.tail = stop, ""
            return items + ([self._text_delta(buffered[:position])] if position else [])
        keep = max(len(stop) for stop in self.stops) - 1
        ready, self.tail = (buffered[:-keep], buffered[-keep:]) if keep else (buffered, "")
        return items + ([self._text_delta(ready)] if ready else [])

    def _item_added(self, item: dict) -> list[SSEItem]:
        kind, item_id = item.get("type"), item.get("id") or ""
        if kind == "reasoning":
            items = self._close_text()
            index, started = self._new_block({"type": "thinking", "thinking": "", "signature": ""})
            self.blocks[item_id] = {"index": index, "kind": "reasoning"}
            self.summary_index = -1
            return items + started
        if kind in ("function_call", "custom_tool_call"):
            self.has_calls = True
            items = self._close_text()
            name = item.get("name") or ""
            if item.get("namespace"):
                name = f"{item['namespace']}__{name}"
            name = self.conv.client_tool_name(name)
            self.output_text.append(name)
            index, started = self._new_block(
                {"type": "tool_use", "id": item.get("call_id") or item_id, "name": name, "input": {}}
            )
            self.blocks[item_id] = {"index": index, "kind": kind, "input": []}
            return items + started
        return []

    def _item_done(self, item: dict) -> list[SSEItem]:
        kind, item_id = item.get("type"), item.get("id") or ""
        block = self.blocks.pop(item_id, None)
        if kind == "message":
            return self._close_text() if self.text_item in (item_id, None) else []
        if block is None:
            return []
        items: list[SSEItem] = []
        index = block["index"]
        if kind == "reasoning" and self.sealer is not None and item.get("encrypted_content"):
            signature = self.sealer.seal("r", {"id": item_id, "encrypted_content": item["encrypted_content"]})
            items.append(
                anthropic_event(
                    "content_block_delta", index=index, delta={"type": "signature_delta", "signature": signature}
                )
            )
        if kind == "custom_tool_call":
            value = item.get("input") if isinstance(item.get("input"), str) else "".join(block["input"])
            fragment = compact_json({"input": value})
            self.output_text.append(fragment)
            items.append(
                anthropic_event(
                    "content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": fragment}
                )
            )
        items.append(anthropic_event("content_block_stop", index=index))
        return items

    def _finalize(self, response: dict) -> list[SSEItem]:
        items = self._start() + self._close_text()
        for item_id in list(self.blocks):
            items += self._item_done({"id": item_id, "type": self.blocks[item_id]["kind"]})
        if isinstance(response.get("usage"), dict):
            self.reported = response["usage"]
        from .responses_response import responses_status_to_anthropic

        stop_reason = responses_status_to_anthropic(response, self.has_calls, self.refused)
        stop_sequence = None
        if self.stopped is not None and not self.has_calls:
            stop_reason, stop_sequence = "stop_sequence", self.stopped
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        items.append(anthropic_event("message_delta", delta=delta, usage=usage_to_anthropic(self.usage)))
        items.append(anthropic_event("message_stop"))
        self.done = True
        return items

    def feed(self, event: dict) -> list[SSEItem]:
        if self.done:
            return []
        kind = event.get("type")
        if kind == "error":
            return self.fail(upstream_stream_error(event, "openai"))
        if kind == "response.failed":
            response = event.get("response") or {}
            if isinstance(response.get("usage"), dict):
                self.reported = response["usage"]
            return self.fail(upstream_stream_error({"error": response.get("error") or {}}, "openai"))
        items = self._start()
        if kind == "response.output_item.added" and isinstance(event.get("item"), dict):
            items += self._item_added(event["item"])
        elif kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            items += self._item_done(event["item"])
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            block = self.blocks.get(event.get("item_id") or "")
            text = event.get("delta") or ""
            if block and block["kind"] == "reasoning" and text:
                index = event.get("summary_index", event.get("content_index", 0))
                if self.summary_index >= 0 and index != self.summary_index:
                    text = "\n\n" + text
                self.summary_index = index
                self.output_text.append(text)
                items.append(
                    anthropic_event(
                        "content_block_delta", index=block["index"], delta={"type": "thinking_delta", "thinking": text}
                    )
                )
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            if kind == "response.refusal.delta":
                self.refused = True
            self.text_item = event.get("item_id")
            if event.get("delta"):
                items += self._text(event["delta"])
        elif kind == "response.function_call_arguments.delta":
            block = self.blocks.get(event.get("item_id") or "")
            if block and event.get("delta"):
                self.output_text.append(event["delta"])
                items.append(
                    anthropic_event(
                        "content_block_delta",
                        index=block["index"],
                        delta={"type": "input_json_delta", "partial_json": event["delta"]},
                    )
                )
        elif kind == "response.custom_tool_call_input.delta":
            block = self.blocks.get(event.get("item_id") or "")
            if block:
                block["input"].append(event.get("delta") or "")
        elif kind in ("response.completed", "response.incomplete"):
            items += self._finalize(event.get("response") or {})
        return items

    def fail(self, error: GatewayError) -> list[SSEItem]:
        if self.done:
            return []
        self.error, self.done = error, True
        from .errors import anthropic_stream_error

        return [("error", anthropic_stream_error(error))]


class ResponsesRelay(ResponsesEvents):
    """R upstream → R client: events pass through; the response echoes the client's model and the gateway's
    response id (upstream ids never reach clients), usage is captured, an early EOF becomes a failure."""

    def __init__(self, turn: ResponsesTurn, *, input_estimate: int) -> None:
        self.turn = turn
        self.input_estimate = input_estimate
        self.seq = 0
        self.response = responses_skeleton(turn)
        self.reported: dict | None = None
        self.items: list[dict] = []
        self.output_text: list[str] = []
        self.done = False
        self.error: GatewayError | None = None
        self.final_response: dict | None = None

    @property
    def usage(self) -> Usage:
        if self.reported is not None:
            return usage_from_responses(self.reported)
        return Usage(
            input_tokens=self.input_estimate,
            output_tokens=estimate_text_tokens("".join(self.output_text)),
            estimated=True,
        )

    def feed(self, event: dict) -> list[SSEItem]:
        if self.done:
            return []
        kind = event.get("type")
        if not isinstance(kind, str):
            return []
        if isinstance(event.get("sequence_number"), int):
            self.seq = event["sequence_number"] + 1
        response = event.get("response")
        if isinstance(response, dict):
            response["id"] = self.turn.response_id
            response["model"] = self.turn.model
            response["store"] = self.turn.request.get("store", True)  # upstream calls are store:false (R3)
            response["previous_response_id"] = self.turn.request.get("previous_response_id")
            self.response = {**response, "output": [], "usage": None, "status": "in_progress"}
            if isinstance(response.get("usage"), dict):
                self.reported = response["usage"]
        if kind.endswith(".delta") and isinstance(event.get("delta"), str):
            self.output_text.append(event["delta"])
        if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            self.items.append(event["item"])
        if kind == "error":
            self.error = upstream_stream_error(event, "openai")
        if kind in TERMINAL:
            self.done = True
            self.final_response = response
            if kind == "response.failed" and self.error is None:
                self.error = upstream_stream_error({"error": (response or {}).get("error") or {}}, "openai")
        return [(kind, event)]

    def fail(self, error: GatewayError) -> list[SSEItem]:
        if self.done:
            return []
        self.error, self.done = error, True
        return self.failure(error, self.items, self.usage)
