"""Server-sent events framing only: bytes <-> (event, data). Knows nothing about either protocol."""

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import orjson

# An item the gateway writes: (event name or None, data). Data is a dict (JSON-encoded here),
# bytes (already-encoded JSON, relayed as is) or str (sent verbatim, e.g. "[DONE]").
SSEItem = tuple[str | None, "dict | bytes | str"]

KEEPALIVE_OPENAI = b": keep-alive\n\n"  # a comment line: both SDKs skip it (PROTOCOLS G8)
PING_ANTHROPIC = b'event: ping\ndata: {"type":"ping"}\n\n'


def encode(event: str | None, data: "dict | bytes | str") -> bytes:
    """Frame one SSE event. Payloads are single-line JSON, so one `data:` line suffices."""
    if isinstance(data, dict):
        payload = orjson.dumps(data)
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = data
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


class SSEDecoder:
    """Incremental SSE parser following the spec (PROTOCOLS G9): optional space after the colon,
    multi-line data joined with newlines, comments ignored, any of CRLF / LF / CR as line end."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Consume bytes; return the complete events they finish, as (event, data bytes)."""
        self._buffer += chunk
        events: list[tuple[str | None, bytes]] = []
        while True:
            cut, skip = self._next_line_end()
            if cut < 0:
                break
            line = self._buffer[:cut]
            self._buffer = self._buffer[cut + skip :]
            self._line(line, events)
        return events

    def flush(self) -> list[tuple[str | None, bytes]]:
        """End of stream: a final event without its blank line still counts."""
        events: list[tuple[str | None, bytes]] = []
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = b""
        self._line(b"", events)
        return events

    def _next_line_end(self) -> tuple[int, int]:
        lf = self._buffer.find(b"\n")
        cr = self._buffer.find(b"\r")
        if cr < 0:
            return lf, 1
        if cr == len(self._buffer) - 1:
            # A trailing CR might be the first half of CRLF: wait for more bytes.
            return (lf, 1) if 0 <= lf < cr else (-1, 0)
        if lf < 0 or cr < lf:
            return cr, 2 if self._buffer[cr + 1 : cr + 2] == b"\n" else 1
        return lf, 1

    def _line(self, line: bytes, events: list[tuple[str | None, bytes]]) -> None:
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """SSE events from an async byte stream."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event


T = TypeVar("T")


async def with_keepalive(source: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """Items of `source`, and None whenever it stayed silent for `interval` seconds (0: never).

    The pending read is never cancelled by the timer (cancelling would break the source), it is
    awaited again after the keep-alive went out.
    """
    if interval <= 0:
        async for item in source:
            yield item
        return
    iterator = source.__aiter__()
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait((pending,), timeout=interval)
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
