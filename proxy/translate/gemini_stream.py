"""Gemini streamGenerateContent (alt=sse) → A events / O chunks: the same interface as translate.streams.

Each upstream SSE `data` is a whole GenerateContentResponse holding the next parts. Gemini sends
function calls complete in one part, puts `finishReason` (and the final usageMetadata) on the last
chunk, repeats usageMetadata cumulatively, and has no end marker: the connection just closes.
Mid-stream failures arrive as `data: {"error": {code, message, status}}`.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ErrorKind, GatewayError, anthropic_stream_error, openai_stream_error, upstream_stream_error
from .gemini import compact_args, gemini_candidate, gemini_finish_reason_to_anthropic, usage_from_gemini
from .models import Conversion, SSEItem
from .streams import AnthropicToOpenAIStream
from .streams.from_anthropic import STREAM_INCOMPLETE
from .streams.from_openai import AnthropicTextBlocks, anthropic_event
from .usage import Usage, estimate_text_tokens, usage_to_anthropic


def gemini_stream_error(chunk: dict) -> GatewayError:
    """A mid-stream `{"error": {code, message, status}}`: `code` is the HTTP status (§5.3 step 1)."""
    return upstream_stream_error(chunk, "gemini")


class GeminiToAnthropicStream(AnthropicTextBlocks):
    """Feed parsed Gemini chunks, get A events (§1.8 invariants: dense indices, one stop per start)."""

    def __init__(self, conv: Conversion, *, model: str, message_id: str, new_id: Callable[[], str]) -> None:
        self.conv = conv
        self.model = model  # the client's model id (G2)
        self.message_id = message_id
        self.new_id = new_id
        self.started = False
        self.next_index = 0
        self.open_kind: str | None = None  # "text" | "thinking" while such a block is open
        self.open_index: int | None = None
        self.emitted_tool_use = False
        self.finish_reason: str | None = None
        self.blocked = False  # promptFeedback.blockReason without candidates
        self.upstream_usage: dict | None = None  # the latest (cumulative) usageMetadata
        self.done = False
        self.error: GatewayError | None = None
        self.output_text: list[str] = []  # everything emitted, for the local output estimate

    @property
    def usage(self) -> Usage:
        """Usage to bill: the upstream's, else the prompt estimate plus a local count of the emitted output."""
        estimate = estimate_text_tokens("".join(self.output_text))
        if self.upstream_usage is None:
            return Usage(input_tokens=self.conv.input_estimate, output_tokens=estimate, estimated=True)
        usage = usage_from_gemini(self.upstream_usage)
        if self.finish_reason is None and usage.output_tokens < estimate:
            # Cut before the last chunk: the running count may lag what was streamed; bill what was generated.
            usage.output_tokens, usage.estimated = estimate, True
        return usage

    def _start(self) -> list[SSEItem]:
        if self.started:
            return []
        self.started = True
        usage = {
            "input_tokens": self.conv.input_estimate,  # the real count follows in message_delta
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        message = {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage,
        }  # fmt: skip
        return [anthropic_event("message_start", message=message), anthropic_event("ping")]

    def _close_open(self) -> list[SSEItem]:
        if self.open_kind is None:
            return []
        items = [anthropic_event("content_block_stop", index=self.open_index)]
        self.open_kind = self.open_index = None
        return items

    def _function_call(self, call: dict) -> list[SSEItem]:
        """A complete call: start, one input_json_delta with all arguments (never empty), stop."""
        items = self._close_open()
        index = self.next_index
        self.next_index += 1
        self.emitted_tool_use = True
        name = self.conv.client_tool_name(call.get("name") or "")
        block = {"type": "tool_use", "id": call.get("id") or self.new_id(), "name": name, "input": {}}
        items.append(anthropic_event("content_block_start", index=index, content_block=block))
        arguments = compact_args(call.get("args"))
        self.output_text += [name, arguments]
        if arguments != "{}":
            delta = {"type": "input_json_delta", "partial_json": arguments}
            items.append(anthropic_event("content_block_delta", index=index, delta=delta))
        items.append(anthropic_event("content_block_stop", index=index))
        return items

    def _finalize(self) -> list[SSEItem]:
        items = self._start() + self._close_open()
        stop_reason = (
            "refusal"
            if self.blocked
            else gemini_finish_reason_to_anthropic(self.finish_reason, has_tool_use=self.emitted_tool_use)
        )
        # Exactly one message_delta with the stop reason and the final usage (all four fields, §3.2).
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        items.append(anthropic_event("message_delta", delta=delta, usage=usage_to_anthropic(self.usage)))
        items.append(anthropic_event("message_stop"))
        self.done = True
        return items

    def fail(self, error: GatewayError) -> list[SSEItem]:
        """End the stream with an A error event (no message_stop afterwards, §5.3 step 4)."""
        if self.done:
            return []
        self.error = error
        self.done = True
        return [("error", anthropic_stream_error(error))]

    def feed(self, chunk: dict) -> list[SSEItem]:
        """One parsed upstream chunk (a GenerateContentResponse, or an error payload)."""
        if self.done:
            return []
        if isinstance(chunk.get("error"), dict):
            return self.fail(gemini_stream_error(chunk))
        items = self._start()
        if isinstance(chunk.get("usageMetadata"), dict):
            self.upstream_usage = chunk["usageMetadata"]  # cumulative: overwrite, never add
        candidate = gemini_candidate(chunk)
        if not candidate and (chunk.get("promptFeedback") or {}).get("blockReason"):
            self.blocked = True
            self.finish_reason = "SAFETY"
        for part in (candidate.get("content") or {}).get("parts") or []:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str) and text:
                items += self._append_text("thinking" if part.get("thought") else "text", text)
            elif isinstance(part.get("functionCall"), dict):
                items += self._function_call(part["functionCall"])
        if candidate.get("finishReason"):
            self.finish_reason = candidate["finishReason"]
        if self.finish_reason is not None and self.upstream_usage is not None:
            items += self._finalize()  # the last chunk carries both; anything after it is ignored
        return items

    def finish(self) -> list[SSEItem]:
        """Upstream EOF: finalize if a finishReason came, else an error event (never a fake message_stop)."""
        if self.done:
            return []
        if self.finish_reason is not None:
            return self._finalize()
        return self.fail(GatewayError(ErrorKind.UPSTREAM_ERROR, STREAM_INCOMPLETE, code="stream_incomplete"))


class GeminiToOpenAIStream:
    """Gemini chunks → O chunks, composed of the Gemini → A machine and the A → O machine (§4.1).

    The composition keeps one implementation of the O chunk rules (dense tool indices, the usage
    chunk only with include_usage, no [DONE] after an error); billing reads the Gemini side's usage.
    """

    def __init__(
        self, conv: Conversion, *, model: str, created: int, chunk_id: str, include_usage: bool,
        new_id: Callable[[], str],
    ) -> None:  # fmt: skip
        self.inner = GeminiToAnthropicStream(conv, model=model, message_id=chunk_id, new_id=new_id)
        self.outer = AnthropicToOpenAIStream(
            conv, model=model, created=created, chunk_id=chunk_id, include_usage=include_usage
        )

    @property
    def usage(self) -> Usage:
        return self.inner.usage

    @property
    def done(self) -> bool:
        return self.outer.done

    @property
    def error(self) -> GatewayError | None:
        return self.inner.error or self.outer.error

    def _through(self, events: list[SSEItem]) -> list[SSEItem]:
        items: list[SSEItem] = []
        for name, data in events:
            if name == "error":  # mapped once, on the Gemini side; rendered in O shape here
                self.outer.done = True
                items.append((None, openai_stream_error(self.inner.error)))
            elif isinstance(data, dict):
                items += self.outer.feed(data)
        return items

    def feed(self, chunk: dict) -> list[SSEItem]:
        return self._through(self.inner.feed(chunk))

    def finish(self) -> list[SSEItem]:
        items = self._through(self.inner.finish())
        return items + (self.outer.finish() if not self.outer.done else [])

    def fail(self, error: GatewayError) -> list[SSEItem]:
        if self.outer.done:
            return []
        return self._through(self.inner.fail(error))
