"""Same-protocol stream relays (O→O, A→A), with the interface of the translate stream classes.

They pass events through (PROTOCOLS §4.3) but for the gateway rules: the `model` echoes the
client's id (G2), the usage chunk the gateway asked for is hidden from an O client that did not
(G5), usage is captured for billing, and an upstream that ends early becomes a stream error.
A stream cut after some content is billed for it (marked estimated unless the upstream's final
usage arrived); one that fails before any costs nothing (proxy/chat.py decides that for every machine).
"""

from proxy.sse import SSEItem
from proxy.translate.errors import (
    ErrorKind,
    GatewayError,
    anthropic_stream_error,
    openai_stream_error,
    upstream_stream_error,
)
from proxy.translate.passthrough import openai_chunk_for_client
from proxy.translate.usage import (
    Usage,
    estimate_text_tokens,
    usage_from_anthropic,
    usage_from_openai,
    usage_merge_anthropic,
)

INCOMPLETE = "upstream stream ended before completion"


class OpenAIRelay:
    """O upstream → O client."""

    def __init__(self, *, model: str, include_usage: bool, input_estimate: int) -> None:
        self.model = model
        self.include_usage = include_usage
        self.input_estimate = input_estimate
        self.reported: Usage | None = None
        self.finish_reason: str | None = None
        self.output_text: list[str] = []
        self.done = False
        self.error: GatewayError | None = None

    @property
    def usage(self) -> Usage:
        if self.reported is not None:
            return self.reported
        output = estimate_text_tokens("".join(self.output_text)) if self.output_text else 0
        return Usage(input_tokens=self.input_estimate, output_tokens=output, estimated=True)

    def feed(self, chunk: dict) -> list[SSEItem]:
        if self.done:
            return []
        if isinstance(chunk.get("error"), dict):
            return self._fail(upstream_stream_error(chunk, "openai"))
        if isinstance(chunk.get("usage"), dict):
            self.reported = usage_from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            for key in ("content", "reasoning_content", "reasoning"):
                if isinstance(delta.get(key), str):
                    self.output_text.append(delta[key])
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments")
                if isinstance(arguments, str):
                    self.output_text.append(arguments)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if "model" in chunk:
            chunk["model"] = self.model
        # G5: the client may not have asked for usage; the gateway always does, for billing.
        relayed = openai_chunk_for_client(chunk, include_usage=self.include_usage)
        return [] if relayed is None else [(None, relayed)]

    def feed_done(self) -> list[SSEItem]:
        if self.done:
            return []
        self.done = True
        return [(None, "[DONE]")]

    def finish(self) -> list[SSEItem]:
        """Upstream EOF: fine after a finish reason (some providers omit [DONE]), else an error."""
        if self.done:
            return []
        if self.finish_reason is not None:
            return self.feed_done()
        return self._fail(GatewayError(ErrorKind.UPSTREAM_ERROR, INCOMPLETE, code="stream_incomplete"))

    def fail(self, error: GatewayError) -> list[SSEItem]:
        return [] if self.done else self._fail(error)

    def _fail(self, error: GatewayError) -> list[SSEItem]:
        self.done = True
        self.error = error
        return [(None, openai_stream_error(error))]


class AnthropicRelay:
    """A upstream → A client."""

    def __init__(self, *, model: str, input_estimate: int) -> None:
        self.model = model
        self.input_estimate = input_estimate
        self.reported: Usage | None = None
        self.final_usage_seen = False
        self.output_text: list[str] = []
        self.done = False
        self.error: GatewayError | None = None

    @property
    def usage(self) -> Usage:
        if self.reported is not None and self.final_usage_seen:
            return self.reported
        # Cut before message_delta: message_start's output count is a placeholder; estimate it.
        estimate = estimate_text_tokens("".join(self.output_text)) if self.output_text else 0
        base = self.reported or Usage(input_tokens=self.input_estimate)
        return Usage(
            input_tokens=base.input_tokens,
            cache_read_tokens=base.cache_read_tokens,
            cache_write_tokens=base.cache_write_tokens,
            output_tokens=max(base.output_tokens, estimate),
            estimated=True,
        )

    def feed(self, event: dict) -> list[SSEItem]:
        if self.done:
            return []
        kind = event.get("type")  # trust data.type over the event line (G9)
        if kind == "message_start":
            message = event.get("message") or {}
            self.reported = usage_from_anthropic(message.get("usage"))
            if "model" in message:
                message["model"] = self.model
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            for key in ("text", "thinking", "partial_json"):
                if isinstance(delta.get(key), str):
                    self.output_text.append(delta[key])
        elif kind == "message_delta":
            if isinstance(event.get("usage"), dict):
                self.reported = usage_merge_anthropic(self.reported or Usage(), event["usage"])
                self.final_usage_seen = True
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            return self._fail(upstream_stream_error(event, "anthropic"))
        elif kind is None:
            return []
        return [(kind, event)]

    def finish(self) -> list[SSEItem]:
        """Upstream EOF before message_stop: an error event, never a fake message_stop."""
        if self.done:
            return []
        return self._fail(GatewayError(ErrorKind.API_ERROR, INCOMPLETE))

    def fail(self, error: GatewayError) -> list[SSEItem]:
        return [] if self.done else self._fail(error)

    def _fail(self, error: GatewayError) -> list[SSEItem]:
        self.done = True
        self.error = error
        return [("error", anthropic_stream_error(error))]
