"""Server-sent events framing only: bytes <-> (event, data). Knows nothing about either protocol."""

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import orjson

from proxy.translate.errors import ErrorKind, GatewayError
from ruapi import lifecycle

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


class SSEEventTooLargeError(ValueError):
    """One event (or one line) passed the decoder's `max_event_bytes`."""


class SSEDecoder:
    """Incremental SSE parser following the spec (PROTOCOLS G9): optional space after the colon,
    multi-line data joined with newlines, comments ignored, any of CRLF / LF / CR as line end.

    Linear in the bytes fed, however the stream is cut: a partial line is kept as a list of pieces
    and joined once, when its end arrives. `max_event_bytes` bounds what one event may hold in
    memory (its data lines, or a single unterminated line): past it, `feed` still returns the
    events completed before the oversized one, then sets `error` (an SSEEventTooLargeError), which
    every later call raises.
    """

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._pending: list[bytes] = []  # pieces of a line whose end has not arrived yet
        self._pending_size = 0
        self._skip_lf = False  # the last piece ended with CR: a LF starting the next one is its other half
        self._event: str | None = None
        self._data: list[bytes] = []
        self._data_size = 0
        self._max = max_event_bytes
        self.error: SSEEventTooLargeError | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Consume bytes; return the complete events they finish, as (event, data bytes)."""
        if self.error is not None:
            raise self.error
        events: list[tuple[str | None, bytes]] = []
        try:
            self._feed(chunk, events)
        except SSEEventTooLargeError as exc:
            self.error = exc
        return events

    def _feed(self, chunk: bytes, events: list[tuple[str | None, bytes]]) -> None:
        size = len(chunk)
        start = 0
        if self._skip_lf and size:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                start = 1
        lf = chunk.find(b"\n", start)
        cr = chunk.find(b"\r", start)
        while lf >= 0 or cr >= 0:
            if cr < 0 or 0 <= lf < cr:
                cut, skip = lf, 1
            elif cr + 1 < size:
                cut, skip = cr, 2 if chunk[cr + 1] == 0x0A else 1
            else:  # CR ends the chunk: the line is complete; a LF may follow in the next chunk
                cut, skip = cr, 1
                self._skip_lf = True
            line = chunk[start:cut]
            if self._pending:
                self._pending.append(line)
                line = b"".join(self._pending)
                self._pending, self._pending_size = [], 0
            self._line(line, events)
            start = cut + skip
            if 0 <= lf < start:
                lf = chunk.find(b"\n", start)
            if 0 <= cr < start:
                cr = chunk.find(b"\r", start)
        if start < size:
            self._pending.append(chunk[start:] if start else chunk)
            self._pending_size += size - start
            if self._max is not None and self._pending_size + self._data_size > self._max:
                raise SSEEventTooLargeError(f"an SSE line is longer than {self._max} bytes")

    def flush(self) -> list[tuple[str | None, bytes]]:
        """End of stream: a final event without its blank line still counts."""
        if self.error is not None:
            raise self.error
        events: list[tuple[str | None, bytes]] = []
        if self._pending:
            line = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            self._line(line, events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[tuple[str | None, bytes]]) -> None:
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data) if len(self._data) > 1 else self._data[0]))
            self._event, self._data, self._data_size = None, [], 0
            return
        if line[0] == 0x3A:  # ":" a comment
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._max is not None and self._data_size > self._max:
                raise SSEEventTooLargeError(f"an SSE event is larger than {self._max} bytes")
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


async def iter_event_batches(
    chunks: AsyncIterator[bytes], *, max_event_bytes: int | None = None
) -> AsyncIterator[list[tuple[str | None, bytes]]]:
    """SSE events from an async byte stream, as one list per chunk that completed any (a relay
    then writes them out together); SSEEventTooLargeError past `max_event_bytes`, after the events
    before it."""
    decoder = SSEDecoder(max_event_bytes)
    async for chunk in chunks:
        events = decoder.feed(chunk)
        if events:
            yield events
        if decoder.error is not None:
            raise decoder.error
    events = decoder.flush()
    if events:
        yield events


async def iter_events(
    chunks: AsyncIterator[bytes], *, max_event_bytes: int | None = None
) -> AsyncIterator[tuple[str | None, bytes]]:
    """SSE events from an async byte stream (SSEEventTooLargeError past `max_event_bytes`)."""
    async for events in iter_event_batches(chunks, max_event_bytes=max_event_bytes):
        for event in events:
            yield event


T = TypeVar("T")


async def with_keepalive(source: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """Items of `source`, and None whenever it stayed silent for `interval` seconds (0: never).

    The pending read is never cancelled by the timer (cancelling would break the source), it is
    awaited again after the keep-alive went out. When this process shuts down and its grace period
    is over (ruapi/lifecycle.py), the wait ends with an "overloaded, retry" GatewayError, which the
    relays turn into the protocol's error event (and bill what was produced).
    """
    iterator = source.__aiter__()
    pending: asyncio.Future | None = None
    grace_over = lifecycle.grace_over()
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait(
                (pending, grace_over), timeout=interval if interval > 0 else None, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                yield None
                continue
            if pending not in done:
                raise GatewayError(ErrorKind.OVERLOADED, "The gateway is restarting; retry the request.")
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
