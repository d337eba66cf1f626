"""Usage mapping (PROTOCOLS §3.2) and billing with scripted upstream counts: cache reads and writes, reasoning,
cumulative stream usage, missing usage, the cost header, and concurrent requests."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from proxy.tests.integration.helpers import (
    Tokens,
    anthropic_usage_numbers,
    assert_billed_once,
    cost_of,
    event_tokens,
    header_usd,
    openai_usage_numbers,
    token_cost_nanos,
    usd,
    wait_for_usage_events,
)
from proxy.tests.mock_upstream import Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

HELLO = [{"role": "user", "content": "hello there"}]
# A prompt as long as the cached and written tokens the fixtures report: a real upstream never counts
# more tokens than the prompt's bytes, and a request is never billed above its hold (issue 12).
CACHED_PROMPT = [{"role": "user", "content": "hello there " + "cached context " * 200}]
UPSTREAM_PATH = {"gpt-test": "/v1/chat/completions", "claude-test": "/v1/messages"}


def _o_completion(usage: dict) -> dict:
    return {
        "id": "chatcmpl-scripted", "object": "chat.completion", "created": 1, "model": "gpt-upstream-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there", "refusal": None},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage,
    }  # fmt: skip


def _a_message(usage: dict) -> dict:
    return {
        "id": "msg_scripted", "type": "message", "role": "assistant", "model": "claude-upstream-1",
        "content": [{"type": "text", "text": "Hi there"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": usage,
    }  # fmt: skip


def _o_chunk(delta: dict, finish_reason=None, **extra) -> tuple:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return None, {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1,
                  "model": "gpt-upstream-1", "choices": choices, **extra}  # fmt: skip


def _a_event(name: str, **fields) -> tuple:
    return name, {"type": name, **fields}


def _a_stream(start_usage: dict, final_usage: dict) -> list:
    return [
        _a_event("message_start", message={
            "id": "msg_scripted", "type": "message", "role": "assistant", "model": "claude-upstream-1",
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}),
        _a_event("ping"),
        _a_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        _a_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi "}),
        _a_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "there"}),
        _a_event("content_block_stop", index=0),
        _a_event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage=final_usage),
        _a_event("message_stop"),
    ]  # fmt: skip


def _o_stream(usage: dict) -> list:
    return [
        _o_chunk({"role": "assistant", "content": ""}, usage=None),
        _o_chunk({"content": "Hi "}, usage=None),
        _o_chunk({"content": "there"}, usage=None),
        _o_chunk({}, "stop", usage=None),
        _o_chunk(None, usage=usage),
        (None, "[DONE]"),
    ]


O_USAGE = {
    "prompt_tokens": 2406, "completion_tokens": 30, "total_tokens": 2436,
    "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 400},
    "completion_tokens_details": {"reasoning_tokens": 12},
}  # fmt: skip
O_TOKENS = Tokens(input=86, cache_read=1920, cache_write=400, output=30, reasoning=12)  # edge case 38
A_USAGE = {"input_tokens": 10, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 400, "output_tokens": 7}
A_TOKENS = Tokens(input=10, cache_read=2000, cache_write=400, output=7)  # edge case 38, the other way


def _ask(gateway, protocol: str, model: str, **params):
    if protocol == "openai":
        raw = gateway.openai().chat.completions.with_raw_response.create(model=model, messages=CACHED_PROMPT, **params)
    else:
        raw = gateway.anthropic().messages.with_raw_response.create(
            model=model, max_tokens=50, messages=CACHED_PROMPT, **params
        )
    return raw, raw.parse()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("case", "model", "script", "tokens"),
    [
        ("O upstream", "gpt-test", Script(json=_o_completion(O_USAGE)), O_TOKENS),
        ("A upstream", "claude-test", Script(json=_a_message(A_USAGE)), A_TOKENS),
    ],
)
def test_cache_and_reasoning_usage_is_mapped_and_billed(gateway, protocol, case, model, script, tokens):
    # given
    gateway.mock.enqueue(UPSTREAM_PATH[model], script)

    # when
    _, result = _ask(gateway, protocol, model)

    # then: §3.2 in the client's shape
    if protocol == "openai":
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (tokens.prompt, tokens.output)
        assert result.usage.prompt_tokens_details.cached_tokens == tokens.cache_read
        assert result.usage.prompt_tokens_details.cache_write_tokens == tokens.cache_write
        if tokens.reasoning:
            assert result.usage.completion_tokens_details.reasoning_tokens == tokens.reasoning
        assert openai_usage_numbers(result.usage) == tokens
    else:
        assert (result.usage.input_tokens, result.usage.output_tokens) == (tokens.input, tokens.output)
        assert result.usage.cache_read_input_tokens == tokens.cache_read
        assert result.usage.cache_creation_input_tokens == tokens.cache_write
        assert anthropic_usage_numbers(result.usage).reasoning in (0, tokens.reasoning)

    # then: priced per token kind (gpt-test has no cache-write price in the catalog)
    cost = token_cost_nanos(model, tokens)
    assert cost_of(result.usage) == usd(cost)
    event = assert_billed_once(gateway.tenant, cost)
    assert event_tokens(event) == tokens


@pytest.mark.parametrize(
    ("case", "final_usage"),
    [
        ("message_delta carries only output (edge 13)", {"output_tokens": 15}),
        ("message_delta repeats input and cache (not added twice)",
         {"input_tokens": 25, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 400,
          "output_tokens": 15}),
    ],
)  # fmt: skip
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_anthropic_stream_usage_is_cumulative(gateway, protocol, case, final_usage):
    # given
    start_usage = {"input_tokens": 25, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 400,
                   "output_tokens": 1}  # fmt: skip
    gateway.mock.enqueue("/v1/messages", Script(sse=_a_stream(start_usage, final_usage)))
    tokens = Tokens(input=25, cache_read=2000, cache_write=400, output=15)

    # when
    if protocol == "openai":
        chunks = list(gateway.openai().chat.completions.create(
            model="claude-test", messages=CACHED_PROMPT, stream=True, stream_options={"include_usage": True}))  # fmt: skip
        assert openai_usage_numbers(chunks[-1].usage) == tokens
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2425, 15)
    else:
        with gateway.anthropic().messages.stream(model="claude-test", max_tokens=50, messages=CACHED_PROMPT) as stream:
            message = stream.get_final_message()
        assert anthropic_usage_numbers(message.usage) == tokens

    # then
    event = assert_billed_once(gateway.tenant, token_cost_nanos("claude-test", tokens))
    assert (event_tokens(event), event.is_estimated) == (tokens, False)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_openai_stream_usage_with_cache_is_mapped_and_billed(gateway, protocol):
    # given
    usage = {"prompt_tokens": 2006, "completion_tokens": 9, "total_tokens": 2015,
             "prompt_tokens_details": {"cached_tokens": 1920}}  # fmt: skip
    gateway.mock.enqueue("/v1/chat/completions", Script(sse=_o_stream(usage)))
    tokens = Tokens(input=86, cache_read=1920, output=9)

    # when
    if protocol == "openai":
        chunks = list(gateway.openai().chat.completions.create(
            model="gpt-test", messages=CACHED_PROMPT, stream=True, stream_options={"include_usage": True}))  # fmt: skip
        assert openai_usage_numbers(chunks[-1].usage) == tokens
        assert cost_of(chunks[-1].usage) == usd(token_cost_nanos("gpt-test", tokens))
    else:
        events = list(
            gateway.anthropic().messages.create(model="gpt-test", max_tokens=50, messages=CACHED_PROMPT, stream=True)
        )
        (delta,) = [event for event in events if event.type == "message_delta"]
        assert (delta.usage.input_tokens, delta.usage.cache_read_input_tokens, delta.usage.output_tokens) == (
            86,
            1920,
            9,
        )
        assert delta.usage.cache_creation_input_tokens == 0  # always present on A usage (§3.2)
        assert cost_of(delta.usage) == usd(token_cost_nanos("gpt-test", tokens))

    # then
    event = assert_billed_once(gateway.tenant, token_cost_nanos("gpt-test", tokens))
    assert event_tokens(event) == tokens


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_upstream_without_usage_is_billed_from_an_estimate(gateway, model, protocol):
    # given: a 200 with no usage at all
    body = _o_completion(O_USAGE) if model == "gpt-test" else _a_message(A_USAGE)
    del body["usage"]
    gateway.mock.enqueue(UPSTREAM_PATH[model], Script(json=body))

    # when
    _ask(gateway, protocol, model)

    # then: a marked estimate, never free
    (event,) = wait_for_usage_events(gateway.tenant)
    assert event.is_estimated
    assert event.input_tokens > 0 and event.output_tokens > 0
    assert event.cost_nanos == token_cost_nanos(model, event_tokens(event)) > 0
    assert_billed_once(gateway.tenant, event.cost_nanos)


def test_cost_header_is_the_exact_decimal_cost(gateway):
    # when: 12 input tokens at $2.50/M + 3 output tokens at $10/M = $0.00006
    raw = gateway.openai().chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO)

    # then
    assert raw.headers["x-ruapi-cost-usd"] == "0.00006"
    assert raw.parse().usage.model_extra["cost"] == 0.00006
    assert_billed_once(gateway.tenant, 60_000)


def test_demo_echo_model_is_billed_without_an_upstream(gateway):
    # when
    raw = gateway.openai().chat.completions.with_raw_response.create(model="demo-echo", messages=HELLO)
    completion = raw.parse()

    # then
    assert completion.model == "demo-echo"
    assert completion.choices[0].message.content
    assert gateway.mock.requests == []
    event = assert_billed_once(gateway.tenant, header_usd(raw.headers["x-ruapi-cost-usd"]))
    usage = openai_usage_numbers(completion.usage)
    assert event.is_estimated is False
    # $0.50 / $1.50 per 1M tokens
    assert event.cost_nanos == (usage.input * 500_000_000 + usage.output * 1_500_000_000 + 500_000) // 1_000_000 > 0


@pytest.mark.asyncio
async def test_concurrent_requests_are_each_billed_once(gateway):
    # given
    async def openai_call(model: str, stream: bool):
        async with gateway.async_openai() as client:
            if stream:
                chunks = [
                    c async for c in await client.chat.completions.create(model=model, messages=HELLO, stream=True)
                ]
                return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            completion = await client.chat.completions.create(model=model, messages=HELLO)
            return completion.choices[0].message.content

    async def anthropic_call(model: str, stream: bool):
        async with gateway.async_anthropic() as client:
            if stream:
                async with client.messages.stream(model=model, max_tokens=50, messages=HELLO) as s:
                    return (await s.get_final_message()).content[0].text
            message = await client.messages.create(model=model, max_tokens=50, messages=HELLO)
            return message.content[0].text

    calls = [(call, model, stream) for call in (openai_call, anthropic_call)
             for model in ("gpt-test", "claude-test") for stream in (False, True)]  # fmt: skip

    # when
    texts = await asyncio.gather(*(call(model, stream) for call, model, stream in calls))

    # then
    assert texts == ["Echo: hello there"] * len(calls)

    def check():
        from billing.models import Balance, LedgerEntry

        events = wait_for_usage_events(gateway.tenant, count=len(calls))
        assert len(events) == len(calls)
        assert len({event.request_id for event in events}) == len(calls)
        expected = sorted(token_cost_nanos(model, Tokens(input=12, output=3)) for _, model, _ in calls)
        assert sorted(event.cost_nanos for event in events) == expected
        debits = LedgerEntry.objects.filter(org_id=gateway.tenant.org.id, kind="usage")
        assert sorted(-amount for amount in debits.values_list("amount_nanos", flat=True)) == expected
        balance = Balance.objects.get(org_id=gateway.tenant.org.id)
        assert (balance.balance_nanos, balance.held_nanos) == (10_000_000_000 - sum(expected), 0)

    await sync_to_async(check)()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_stream_whose_settlement_fails_ends_in_an_error_not_its_end_marker(gateway, protocol, monkeypatch):
    # given: the database refuses the settlement (e.g. it went away as the stream ended)
    import anthropic
    import openai

    from billing.models import Balance, UsageEvent
    from proxy import metering

    async def broken_settle(*args, **kwargs):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(metering, "settle", broken_settle)
    # when
    with pytest.raises((openai.APIError, anthropic.APIError)):
        if protocol == "openai":
            for _ in gateway.openai().chat.completions.create(model="gpt-test", messages=HELLO, stream=True):
                pass
        else:
            with gateway.anthropic().messages.stream(model="claude-test", max_tokens=50, messages=HELLO) as stream:
                for _ in stream:
                    pass
    # then: the client was told (no [DONE] / message_stop), nothing was billed, the money stays held
    # until the expiry task releases it
    assert not UsageEvent.objects.exists()
    balance = Balance.objects.get(org=gateway.tenant.org)
    assert balance.held_nanos > 0 and balance.balance_nanos == 10 * 10**9  # the tenant's $10, undebited
