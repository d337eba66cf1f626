"""A upstream stream → O client chunks (§4.1)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ErrorKind, GatewayError, openai_stream_error, upstream_stream_error
from ..models import Conversion, SSEItem
from ..stop_reasons import anthropic_stop_reason_to_openai
from ..tools import compact_json
from ..usage import (
    Usage,
    estimate_text_tokens,
    usage_from_anthropic,
    usage_merge_anthropic,
    usage_to_openai,
)

STREAM_INCOMPLETE = "upstream stream ended before completion"


@dataclass
class _Block:
    """What an A content block index became on the O side."""

    kind: str  # "text" | "thinking" | "tool" | "json" (forced json tool, §2.1) | "skip"
    tool_index: int | None = None  # O tool_calls[].index: the tool counter, never the A block index


class AnthropicToOpenAIStream:
    """Feed parsed A events (their `data`), get O chunks; state is plain attributes for tests and logs."""

    def __init__(self, conv: Conversion, *, model: str, created: int, chunk_id: str, include_usage: bool) -> None:
        self.conv = conv
        self.model = model  # the client's model id (G2)
        self.created = created
        self.chunk_id = chunk_id
        self.include_usage = include_usage  # the O client asked for the usage chunk (G5)
        self.blocks: dict[int, _Block] = {}
        self.next_tool_index = 0
        self.reported_usage: Usage | None = None  # as the upstream reported it so far
        self.final_usage_seen = False  # a message_delta carried usage
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.started = False
        self.done = False
        self.error: GatewayError | None = None
        self.output_text: list[str] = []  # everything emitted, for the local output estimate

    @property
    def usage(self) -> Usage:
        """Usage to bill: the upstream's, or a local estimate where it is missing or cut short."""
        estimate = estimate_text_tokens("".join(self.output_text))
        if self.reported_usage is None:
            return Usage(input_tokens=self.conv.input_estimate, output_tokens=estimate, estimated=True)
        if self.final_usage_seen or self.reported_usage.output_tokens >= estimate:
            return self.reported_usage
        # Cut before message_delta: message_start's output count is a placeholder; bill what was generated.
        return replace(self.reported_usage, output_tokens=estimate, estimated=True)

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> SSEItem:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {
            "id": self.chunk_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if self.include_usage:
            chunk["usage"] = None  # every chunk but the last one, like OpenAI (§1.4)
        return None, chunk

    def _text(self, key: str, text: str) -> list[SSEItem]:
        self.output_text.append(text)
        return [self._chunk({key: text})]

    def _arguments(self, block: _Block, partial_json: str) -> list[SSEItem]:
        if block.kind == "json":
            return self._text("content", partial_json)  # the json tool's input is the answer text (§2.1)
        self.output_text.append(partial_json)
        return [self._chunk({"tool_calls": [{"index": block.tool_index, "function": {"arguments": partial_json}}]})]

    def _block_start(self, index: int, block: dict) -> list[SSEItem]:
        kind = block.get("type")
        if kind == "text":
            self.blocks[index] = _Block("text")
            return self._text("content", block["text"]) if block.get("text") else []
        if kind == "thinking":
            self.blocks[index] = _Block("thinking")
            return self._text("reasoning_content", block["thinking"]) if block.get("thinking") else []
        if kind != "tool_use":
            self.blocks[index] = _Block("skip")  # redacted_thinking, server blocks
            return []
        arguments = compact_json(block["input"]) if block.get("input") else ""
        if self.conv.json_tool is not None and block.get("name") == self.conv.json_tool:
            self.blocks[index] = _Block("json")
            return self._arguments(self.blocks[index], arguments) if arguments else []
        self.blocks[index] = _Block("tool", tool_index=self.next_tool_index)
        self.next_tool_index += 1  # dense O indices whatever the A block index (CLIProxyAPI#5229)
        self.output_text.append(arguments)
        call = {
            "index": self.blocks[index].tool_index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": self.conv.client_tool_name(block.get("name") or ""), "arguments": arguments},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, index: int, delta: dict) -> list[SSEItem]:
        block = self.blocks.get(index)
        kind = delta.get("type")
        if block is None:
            return []  # a delta for an unopened index: nothing sane to emit
        if kind == "text_delta" and delta.get("text"):
            return self._text("content", delta["text"])
        if kind == "thinking_delta" and delta.get("thinking"):
            return self._text("reasoning_content", delta["thinking"])
        if kind == "input_json_delta" and delta.get("partial_json") and block.kind in ("tool", "json"):
            return self._arguments(block, delta["partial_json"])
        return []  # signature_delta, citations_delta: no O form

    def _finish_reason(self) -> str:
        finish_reason = anthropic_stop_reason_to_openai(self.stop_reason)
        has_json = any(block.kind == "json" for block in self.blocks.values())
        if has_json and finish_reason == "tool_calls" and self.next_tool_index == 0:
            return "stop"
        return finish_reason

    def _fail(self, error: GatewayError) -> list[SSEItem]:
        # No [DONE] after an error: naive clients read it as success (§5.3 step 4).
        self.error = error
        self.done = True
        return [(None, openai_stream_error(error))]

    def feed(self, event: dict) -> list[SSEItem]:
        """One parsed upstream A event (its data dict; `type` is trusted over the `event:` line, G9)."""
        if self.done:
            return []
        kind = event.get("type")
        if kind == "message_start":
            usage = (event.get("message") or {}).get("usage")
            if usage:
                self.reported_usage = usage_from_anthropic(usage)
            if self.started:
                return []
            self.started = True
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event.get("index"), event.get("delta") or {})
        if kind == "message_delta":
            if event.get("usage"):
                # Cumulative values: overwrite, never add (tensorzero/tensorzero#5481).
                self.reported_usage = usage_merge_anthropic(self.reported_usage or Usage(), event["usage"])
                self.final_usage_seen = True
            delta = event.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self.stop_sequence = delta.get("stop_sequence") or self.stop_sequence
            return []
        if kind == "message_stop":
            items = [self._chunk({}, self._finish_reason())]
            if self.include_usage:
                # choices:[] with the usage, not a dummy choice (mozilla-ai/any-llm#1392).
                usage_chunk = {
                    "id": self.chunk_id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_to_openai(self.usage),
                }
                items.append((None, usage_chunk))
            items.append((None, "[DONE]"))
            self.done = True
            return items
        if kind == "error":
            return self._fail(upstream_stream_error(event, "anthropic"))
        return []  # ping, content_block_stop and future event types

    def finish(self) -> list[SSEItem]:
        """Upstream EOF: an error item unless message_stop was seen (§4.1 last row)."""
        if self.done:
            return []
        return self._fail(GatewayError(ErrorKind.UPSTREAM_ERROR, STREAM_INCOMPLETE, code="stream_incomplete"))
