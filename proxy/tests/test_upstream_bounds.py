"""Bounds on what an upstream can make the gateway do (issue 8), the pure parts and the HTTP client:

- reported token counts: junk (negative, fractional, NaN, strings) and absurd counts (above
  MAX_REPORTED_TOKENS, output far above the request's cap) become a bounded figure marked estimated,
  with a warning that names fields and numbers only (proxy/translate/usage.py);
- SSE: one event or one unterminated line past `max_event_bytes` is refused, and decoding stays
  linear however the bytes are cut (proxy/sse.py);
- the upstream HTTP client (proxy/upstreams/http.py), against a raw local socket server: body caps
  (declared and streamed), unreadable bodies reported rather than raised, and the bytes an upstream
  sent just before its connection broke still handed out (aiohttp's readany() raises a broken body's
  error before returning what it had buffered).
"""

import asyncio
import contextlib
import logging
import math
import random
import time

import pytest
import pytest_asyncio

from billing.money import TokenPrices
from proxy import metering
from proxy.sse import SSEDecoder, SSEEventTooLargeError
from proxy.translate.errors import GatewayError
from proxy.translate.gemini import usage_from_gemini
from proxy.translate.usage import (
    MAX_REPORTED_TOKENS,
    OUTPUT_SLACK_TOKENS,
    Usage,
    UsageBounds,
    current_usage_bounds,
    expect_usage,
    usage_from_anthropic,
    usage_from_openai,
    usage_merge_anthropic,
)

PRICES = TokenPrices(
    input_nanos_per_mtok=3_000_000_000,
    output_nanos_per_mtok=15_000_000_000,
    cache_read_nanos_per_mtok=300_000_000,
    cache_write_nanos_per_mtok=3_750_000_000,
)


@pytest.fixture(autouse=True)
def _no_bounds():
    """Each test starts without request bounds (they live in a context variable)."""
    expect_usage(None)
    yield
    expect_usage(None)


# -- token counts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("_case", "value", "expected", "marked"),
    [
        ("negative", -5, 0, True),
        ("fractional rounds up", 12.2, 13, True),
        ("integral float is fine", 12.0, 12, False),
        ("NaN", math.nan, 0, True),
        ("infinite", math.inf, 0, True),
        ("string", "12", 0, True),
        ("bool", True, 0, True),
        ("list", [1, 2], 0, True),
        ("absurd, no request bounds", 10**12, 0, True),
    ],
)
def test_junk_counts_become_bounded_and_marked(_case, value, expected, marked):
    # when
    o = usage_from_openai({"prompt_tokens": 10, "completion_tokens": value})
    a = usage_from_anthropic({"input_tokens": 10, "output_tokens": value})

    # then
    for usage in (o, a):
        assert (usage.input_tokens, usage.output_tokens) == (10, expected)
        assert usage.estimated is marked
        assert metering.usage_cost(usage, PRICES) >= 0


def test_valid_counts_pass_unchanged():
    usage = usage_from_anthropic(
        {"input_tokens": 120, "cache_read_input_tokens": 80, "cache_creation_input_tokens": 40, "output_tokens": 60}
    )
    assert usage == Usage(input_tokens=120, cache_read_tokens=80, cache_write_tokens=40, output_tokens=60)


def test_absurd_counts_are_replaced_by_what_the_hold_was_made_of():
    # given: the request sent max_tokens 100; the gateway would estimate its prompt at 42 tokens
    expect_usage(UsageBounds(max_output_tokens=100, input_estimate=lambda: 42))

    # when
    usage = usage_from_openai(
        {"prompt_tokens": 10**15, "completion_tokens": 10**15, "prompt_tokens_details": {"cached_tokens": 10**14}}
    )

    # then: input → the estimate, cache → 0, output → the cap
    assert usage == Usage(input_tokens=42, cache_read_tokens=0, output_tokens=100, estimated=True)


def test_output_far_above_the_cap_is_billed_at_the_cap():
    expect_usage(UsageBounds(max_output_tokens=50))
    ceiling = 2 * 50 + OUTPUT_SLACK_TOKENS

    assert usage_from_anthropic({"input_tokens": 5, "output_tokens": ceiling}) == Usage(5, output_tokens=ceiling)
    assert usage_from_anthropic({"input_tokens": 5, "output_tokens": ceiling + 1}) == Usage(
        5, output_tokens=50, estimated=True
    )


def test_reported_reasoning_is_not_held_to_the_cap():
    # given: a reasoner whose max_tokens caps only the answer (DeepSeek)
    expect_usage(UsageBounds(max_output_tokens=100))

    # when
    usage = usage_from_openai(
        {"prompt_tokens": 9, "completion_tokens": 30_100, "completion_tokens_details": {"reasoning_tokens": 30_000}}
    )

    # then
    assert usage == Usage(input_tokens=9, output_tokens=30_100, reasoning_tokens=30_000)


def test_reasoning_is_never_more_than_output():
    usage = usage_from_openai(
        {"prompt_tokens": 9, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 50}}
    )
    assert (usage.output_tokens, usage.reasoning_tokens) == (5, 5)


def test_a_usage_built_directly_is_bounded_too():
    # Gemini's parser and the media endpoints build Usage themselves: the same gate applies.
    assert Usage(input_tokens=-3, output_tokens=7) == Usage(output_tokens=7, estimated=True)
    gemini = usage_from_gemini({"promptTokenCount": 10, "candidatesTokenCount": 10**13})
    assert (gemini.input_tokens, gemini.output_tokens, gemini.estimated) == (10, 0, True)


def test_message_delta_junk_is_marked():
    start = usage_from_anthropic({"input_tokens": 12, "output_tokens": 1})
    merged = usage_merge_anthropic(start, {"output_tokens": -40})
    assert merged == Usage(input_tokens=12, output_tokens=0, estimated=True)
    assert usage_merge_anthropic(start, {"output_tokens": 40}) == Usage(input_tokens=12, output_tokens=40)


def test_out_of_bounds_usage_is_logged_once_per_request_without_payloads(caplog):
    # given
    expect_usage(UsageBounds(max_output_tokens=10))
    junk = {"prompt_tokens": "sk-upstream-secret-looking-string", "completion_tokens": 10**12}

    # when: the same usage parsed three times (stream machines re-read it)
    with caplog.at_level(logging.WARNING, logger="proxy.translate.usage"):
        for _ in range(3):
            usage_from_openai(junk)

    # then: each problem once (as parsed, then as bounded), names and numbers only
    messages = [record.getMessage() for record in caplog.records]
    assert {record.levelname for record in caplog.records} == {"WARNING"}
    assert len(messages) == 2, messages
    assert "prompt_tokens is a str, not a count" in messages[0]
    assert f"output_tokens={10**12} is above {MAX_REPORTED_TOKENS}" in messages[1]
    assert not any("sk-upstream" in message for message in messages)


@pytest.mark.asyncio
async def test_request_bounds_never_reach_another_request():
    # given: two requests in their own tasks, as the server runs them
    seen: dict[str, UsageBounds | None] = {}

    async def request(name: str, cap: int | None) -> None:
        if cap is not None:
            expect_usage(UsageBounds(max_output_tokens=cap))
        await asyncio.sleep(0.01)
        seen[name] = current_usage_bounds()

    # when
    await asyncio.gather(request("capped", 5), request("uncapped", None))

    # then
    assert seen["capped"].max_output_tokens == 5
    assert seen["uncapped"] is None
    assert current_usage_bounds() is None


# -- SSE decoding ----------------------------------------------------------------------------------------


def _decode(chunks: list[bytes], max_event_bytes: int | None = None) -> list:
    decoder = SSEDecoder(max_event_bytes)
    return [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.flush()


def test_an_event_larger_than_allowed_is_refused():
    event = b"data: " + b"x" * 2000 + b"\n\n"
    assert _decode([event], max_event_bytes=4096) == [(None, b"x" * 2000)]
    decoder = SSEDecoder(max_event_bytes=3000)
    assert decoder.feed(b"data: 1\n\n" + b"data: " + b"x" * 4000) == [(None, b"1")]  # what came before it
    assert isinstance(decoder.error, SSEEventTooLargeError)
    with pytest.raises(SSEEventTooLargeError):
        decoder.feed(b"\n\n")
    with pytest.raises(SSEEventTooLargeError):  # many data lines of one event add up
        _decode([b"data: " + b"y" * 600 + b"\n"] * 3 + [b"\n"], max_event_bytes=1000)


def test_a_line_that_never_ends_is_refused_before_it_fills_memory():
    decoder = SSEDecoder(max_event_bytes=64 * 1024)
    fed = 0
    while decoder.error is None and fed < 100:
        decoder.feed(b"z" * 4096)  # no line end ever
        fed += 1
    assert fed == 17  # refused at the first read past 64 KiB
    with pytest.raises(SSEEventTooLargeError):
        decoder.flush()


def test_decoding_is_the_same_however_the_bytes_are_cut():
    rng = random.Random(8)
    pieces = [b"data: ", b"data:", b"event: e", b"\n", b"\r", b"\r\n", b"ab", b": c", b"id: 1", b"\n\n", b"{}"]
    for _ in range(3000):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randint(0, 8))))
        chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert _decode(chunks) == _decode([stream]), (stream, chunks)


def test_one_huge_event_decodes_in_linear_time():
    event = b"data: " + b"x" * (16 * 1024 * 1024) + b"\n\n"
    started = time.perf_counter()
    events = _decode([event[i : i + 65536] for i in range(0, len(event), 65536)])
    assert len(events[0][1]) == 16 * 1024 * 1024
    assert time.perf_counter() - started < 2  # quadratic re-scanning would take minutes


# -- the upstream HTTP client against a raw socket ---------------------------------------------------------


class RawUpstream:
    """A TCP server on 127.0.0.1 whose replies the test writes byte by byte."""

    def __init__(self) -> None:
        self.writers: asyncio.Queue = asyncio.Queue()
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> "RawUpstream":
        async def accept(reader, writer):
            await reader.readuntil(b"\r\n\r\n")  # the request head (our requests have small bodies)
            await self.writers.put(writer)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"


async def _post(upstream: RawUpstream, **kwargs):
    from proxy.upstreams import http

    reply_task = asyncio.ensure_future(http.post(0, upstream.url, headers={}, json={"model": "m"}, **kwargs))
    writer = await asyncio.wait_for(upstream.writers.get(), 5)
    return reply_task, writer


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest_asyncio.fixture
async def raw_upstream():
    from proxy.upstreams import http

    async with RawUpstream() as upstream:
        yield upstream
    await http.close_sessions()


@pytest.mark.asyncio
async def test_bytes_sent_just_before_the_connection_broke_are_still_handed_out(raw_upstream):
    # given: a streamed body whose first chunk has been read
    reply_task, writer = await _post(raw_upstream, read_timeout=5)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(_chunk(b"data: 1\n\n"))
    reply = await reply_task
    chunks = reply.iter_bytes(limit=0)
    assert await chunks.__anext__() == b"data: 1\n\n"

    # when: while the reader is busy elsewhere, two more chunks arrive and the upstream dies
    writer.write(_chunk(b"data: 2\n\n") + _chunk(b"data: 3\n\n"))
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.2)  # both the bytes and the end of the connection reach the client

    # then: those bytes first, then the failure
    rest = b""
    with pytest.raises(GatewayError) as failure:
        async for chunk in chunks:
            rest += chunk
    assert rest == b"data: 2\n\ndata: 3\n\n"
    assert failure.value.kind == "upstream_error"


@pytest.mark.asyncio
async def test_a_declared_body_larger_than_allowed_is_refused_before_reading_it(raw_upstream):
    # given: a body announced at 1 MB, not a byte of it sent
    reply_task, writer = await _post(raw_upstream, read_timeout=5, max_body=64 * 1024)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
    reply = await reply_task

    # when
    started = time.monotonic()
    data = await reply.json()

    # then: at once, not after the read timeout
    assert data is None
    assert reply.error.message == "The upstream response was larger than allowed."
    assert time.monotonic() - started < 1
    writer.close()


@pytest.mark.asyncio
async def test_a_streamed_body_larger_than_allowed_is_refused(raw_upstream):
    # given: an undeclared (chunked) body that keeps coming
    reply_task, writer = await _post(raw_upstream, read_timeout=5, max_body=64 * 1024)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    reply = await reply_task
    for _ in range(40):
        writer.write(_chunk(b"x" * 4096))

    # when / then
    assert await reply.json() is None
    assert reply.error.message == "The upstream response was larger than allowed."
    with pytest.raises(GatewayError):
        await reply.read()
    writer.close()


@pytest.mark.asyncio
async def test_a_body_that_stalls_is_reported_not_raised(raw_upstream):
    # given: headers, then silence longer than the read timeout
    reply_task, writer = await _post(raw_upstream, read_timeout=0.3)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    reply = await reply_task

    # when
    started = time.monotonic()
    data = await reply.json()

    # then: json() says "no valid body" and why (the caller answers with that error, a 504, and releases the hold)
    assert data is None
    assert reply.error.kind == "timeout"
    assert time.monotonic() - started < 2
    writer.close()


@pytest.mark.asyncio
async def test_one_stream_event_larger_than_allowed_is_an_upstream_error(raw_upstream, settings):
    # given
    settings.RUAPI_UPSTREAM_MAX_EVENT_BYTES = 8 * 1024
    reply_task, writer = await _post(raw_upstream, read_timeout=5)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(_chunk(b'data: {"ok": 1}\n\n') + _chunk(b"data: " + b"x" * 20_000 + b"\n\n"))
    reply = await reply_task

    # when
    events = []
    with pytest.raises(GatewayError) as failure:
        async for event in reply.events():
            events.append(event)

    # then: the events before it came through
    assert events == [(None, b'{"ok": 1}')]
    assert failure.value.message == "The upstream response was larger than allowed."
    with contextlib.suppress(Exception):
        writer.close()
