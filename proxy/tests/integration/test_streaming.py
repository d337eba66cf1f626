"""Streaming through the official SDKs' helpers, all four combinations: text, framing, usage (G5) and billing."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from proxy.tests.integration.helpers import (
    Tokens,
    anthropic_usage_numbers,
    assert_billed_once,
    bearer,
    cost_of,
    event_tokens,
    openai_usage_numbers,
    raw_client,
    stream_raw,
    token_cost_nanos,
    upstream_tokens,
    usage_events,
    usd,
)

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

HELLO = [{"role": "user", "content": "hello there"}]
HELLO_TOKENS = Tokens(input=12, output=3)
MODELS = ["gpt-test", "claude-test"]


def _assert_stream_billed(gateway, model: str) -> Tokens:
    """One debit at the upstream's real counts, marked as a stream; returns those counts."""
    (upstream,) = gateway.mock.requests
    tokens = upstream_tokens(upstream)
    event = assert_billed_once(gateway.tenant, token_cost_nanos(model, tokens))
    assert (event.is_stream, event.is_estimated, event.status_code, event.error_type) == (True, False, 200, "")
    assert event_tokens(event) == tokens
    return tokens


# -- OpenAI clients --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_openai_stream_without_include_usage_hides_usage_but_bills(gateway, model):
    # when
    chunks = list(gateway.openai().chat.completions.create(model=model, messages=HELLO, stream=True))

    # then: no usage chunk, no usage anywhere (G5, edge case 15)
    assert [chunk.usage for chunk in chunks] == [None] * len(chunks)
    assert all("usage" not in chunk.model_fields_set for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "Echo: hello there"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "stop"
    assert {chunk.model for chunk in chunks} == {model}
    assert len({chunk.id for chunk in chunks}) == 1
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}

    # then: the upstream was still asked for usage, and the request is billed at its counts
    (upstream,) = gateway.mock.requests
    assert upstream.json["stream"] is True
    if model == "gpt-test":
        assert upstream.json["stream_options"] == {"include_usage": True}
    assert _assert_stream_billed(gateway, model) == HELLO_TOKENS


@pytest.mark.parametrize("model", MODELS)
def test_openai_stream_with_include_usage_ends_with_the_usage_chunk(gateway, model):
    # when
    chunks = list(
        gateway.openai().chat.completions.create(
            model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )

    # then: finish chunk, then one choices:[] chunk carrying usage and cost (edge case 14)
    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert [chunk.usage for chunk in content_chunks] == [None] * len(content_chunks)
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in content_chunks) == "Echo: hello there"
    tokens = _assert_stream_billed(gateway, model)
    assert openai_usage_numbers(usage_chunk.usage) == tokens == HELLO_TOKENS
    assert cost_of(usage_chunk.usage) == usd(token_cost_nanos(model, tokens))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_stream_wire_format(gateway, model, include_usage):
    # given
    body = {"model": model, "messages": HELLO, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}

    # when
    response, events = stream_raw(gateway, "/v1/chat/completions", body)

    # then: SSE headers (G7), data-only events (G8), [DONE] last
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-request-id"].startswith("req_")
    assert [name for name, _ in events if name is not None and name != ":comment"] == []
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    if include_usage:  # every chunk but the last carries "usage": null (§1.4)
        assert [("usage" in chunk, chunk["usage"] is None) for chunk in chunks[:-1]] == [(True, True)] * (
            len(chunks) - 1
        )
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["prompt_tokens"] == 12
        assert chunks[-1]["usage"]["completion_tokens"] == 3
        assert chunks[-1]["usage"]["total_tokens"] == 15
        assert chunks[-1]["usage"]["cost"] == usd(token_cost_nanos(model, HELLO_TOKENS))
    else:
        assert [chunk for chunk in chunks if "usage" in chunk or chunk["choices"] == []] == []


@pytest.mark.parametrize("model", MODELS)
def test_openai_stream_helper(gateway, model):
    # when
    with gateway.openai().chat.completions.stream(
        model=model, messages=HELLO, stream_options={"include_usage": True}
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()

    # then
    assert "".join(deltas) == "Echo: hello there"
    assert final.model == model
    assert final.choices[0].message.content == "Echo: hello there"
    assert final.choices[0].finish_reason == "stop"
    tokens = _assert_stream_billed(gateway, model)
    assert openai_usage_numbers(final.usage) == tokens


@pytest.mark.asyncio
@pytest.mark.parametrize(("model", "include_usage"), [("gpt-test", True), ("claude-test", False)])
async def test_openai_async_stream(gateway, model, include_usage):
    # when
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    async with gateway.async_openai() as client:
        stream = await client.chat.completions.create(model=model, messages=HELLO, stream=True, **options)
        chunks = [chunk async for chunk in stream]

    # then
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Echo: hello there"
    usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert [openai_usage_numbers(usage) for usage in usages] == ([HELLO_TOKENS] if include_usage else [])
    await sync_to_async(_assert_stream_billed)(gateway, model)


# -- Anthropic clients -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_stream_helper_text_and_final_message(gateway, model):
    # when
    with gateway.anthropic().messages.stream(model=model, max_tokens=50, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()

    # then
    assert len(pieces) > 1
    assert "".join(pieces) == "Echo: hello there"
    assert message.model == model
    assert message.id.startswith("msg_")
    assert [block.to_dict() for block in message.content] == [{"type": "text", "text": "Echo: hello there"}]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    tokens = _assert_stream_billed(gateway, model)
    assert anthropic_usage_numbers(message.usage) == tokens == HELLO_TOKENS


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_raw_stream_events(gateway, model):
    # when
    events = list(gateway.anthropic().messages.create(model=model, max_tokens=50, messages=HELLO, stream=True))

    # then: the §1.8 sequence, dense indices, one stop per start
    types = [event.type for event in events if event.type != "ping"]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    body = types[1:-2]
    assert body[0] == "content_block_start"
    assert body[-1] == "content_block_stop"
    assert set(body[1:-1]) == {"content_block_delta"}
    deltas = [event for event in events if event.type == "content_block_delta"]
    assert {event.index for event in deltas} == {0}
    assert "".join(event.delta.text for event in deltas) == "Echo: hello there"
    start = events[0].message
    assert (start.model, start.content, start.stop_reason) == (model, [], None)
    assert start.usage.input_tokens > 0  # an estimate at least (edge case 12)
    (message_delta,) = [event for event in events if event.type == "message_delta"]
    assert message_delta.delta.stop_reason == "end_turn"
    tokens = _assert_stream_billed(gateway, model)
    assert message_delta.usage.output_tokens == tokens.output
    assert message_delta.usage.input_tokens == tokens.input
    assert cost_of(message_delta.usage) == usd(token_cost_nanos(model, tokens))


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_stream_wire_format(gateway, model):
    # when
    body = {"model": model, "max_tokens": 50, "messages": HELLO, "stream": True}
    response, events = stream_raw(gateway, "/v1/messages", body, headers={"x-api-key": gateway.tenant.secret})

    # then: every event is named after its data's type, no [DONE]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert [name for name, data in events if name != ":comment" and name != data["type"]] == []
    assert events[-1][0] == "message_stop"
    assert (None, "[DONE]") not in events


@pytest.mark.asyncio
@pytest.mark.parametrize("model", MODELS)
async def test_anthropic_async_stream_helper(gateway, model):
    # when
    async with (
        gateway.async_anthropic() as client,
        client.messages.stream(model=model, max_tokens=50, messages=HELLO) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
        message = await stream.get_final_message()

    # then
    assert text == "Echo: hello there"
    assert message.content[0].text == "Echo: hello there"
    tokens = await sync_to_async(_assert_stream_billed)(gateway, model)
    assert anthropic_usage_numbers(message.usage) == tokens


# -- settlement happens before the last byte ------------------------------------------------------------------


SETTLE_DELAY = 0.25


def _slow_settle(monkeypatch):
    """Make the debit take a while, so a stream that ends before it was written is caught."""
    import proxy.metering

    original = proxy.metering.ahold_settle

    async def slow(**kwargs):
        await asyncio.sleep(SETTLE_DELAY)
        return await original(**kwargs)

    monkeypatch.setattr(proxy.metering, "ahold_settle", slow)


@pytest.mark.parametrize(
    ("case", "protocol", "model", "include_usage"),
    [
        ("O->O with usage", "openai", "gpt-test", True),
        ("O->A with usage", "openai", "claude-test", True),
        ("O->O without usage", "openai", "gpt-test", False),
        ("O->A without usage", "openai", "claude-test", False),
        ("A->O", "anthropic", "gpt-test", None),
        ("A->A", "anthropic", "claude-test", None),
    ],
)  # fmt: skip
def test_stream_is_billed_before_its_last_byte(gateway, monkeypatch, case, protocol, model, include_usage):
    # given
    _slow_settle(monkeypatch)
    body = {"model": model, "messages": HELLO, "stream": True}
    if protocol == "anthropic":
        body["max_tokens"] = 50
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    path = "/v1/chat/completions" if protocol == "openai" else "/v1/messages"

    # when: the client read up to the end marker, as the SDKs do (they stop there)
    last = None
    with raw_client(gateway) as client, client.stream("POST", path, json=body, headers=bearer(gateway)) as response:
        for line in response.iter_lines():
            if line == "data: [DONE]" or (line.startswith("data:") and '"message_stop"' in line):
                last = line
                break
        # then: the usage event already exists (proxy.metering: "before the response's last byte leaves")
        billed = len(usage_events(gateway.tenant))
    assert response.status_code == 200
    assert last is not None
    assert billed == 1


# -- keep-alive during upstream silence (G8) -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_keep_alive_is_sent_while_the_upstream_is_silent(gateway, settings, protocol):
    # given: a short keep-alive interval and an upstream that pauses 1 s mid-stream
    from proxy.tests.mock_upstream import Delay, Script

    settings.RUAPI_STREAM_KEEPALIVE_SECONDS = 0.2
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-1"}
    chunks = [
        (None, {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}),
        Delay(1.0),
        (None, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        (None, {**head, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}),
        (None, "[DONE]"),
    ]  # fmt: skip
    gateway.mock.enqueue("/v1/chat/completions", Script(sse=chunks))
    body = {"model": "gpt-test", "messages": HELLO, "stream": True}
    if protocol == "anthropic":
        body["max_tokens"] = 50

    # when
    path = "/v1/chat/completions" if protocol == "openai" else "/v1/messages"
    _, events = stream_raw(gateway, path, body)

    # then: an O stream gets `: keep-alive` comments, an A stream extra `ping` events (beyond the one after start)
    if protocol == "openai":
        assert (":comment", ": keep-alive") in events
    else:
        assert [name for name, _ in events].count("ping") > 1
