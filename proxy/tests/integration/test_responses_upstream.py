"""A Responses upstream (`kind: responses`, the mock's strict /v1/responses): passed through for R clients
(fast path), converted for Chat Completions and Messages clients, streams included (PROTOCOLS-RESPONSES §5.11).
"""

import pytest

from proxy.tests.integration.helpers import (
    assert_billed_once,
    bearer,
    cost_of,
    header_usd,
    stream_raw,
    upstream_tokens,
    usd,
)
from proxy.tests.mock_upstream import RESPONSES_ENCRYPTED_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

PRICES = {"input": 2_000_000_000, "output": 8_000_000_000, "cache_read": 500_000_000}
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
O_WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
A_WEATHER = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture
def resp(gateway):
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate

    catalog_load({
        "providers": [{"name": "mock-responses", "kind": "responses", "base_url": gateway.mock.openai_base_url,
                       "api_key": gateway.mock.api_key}],
        "models": [{"name": "resp-test", "provider": "mock-responses", "upstream_model": "gpt-resp-1",
                    "input": "2", "output": "8", "cache_read": "0.5", "max_output_tokens": 16000,
                    "thinking": "adaptive"}],
    })  # fmt: skip
    catalog_invalidate()
    return gateway


def _cost(record) -> int:
    tokens = upstream_tokens(record)
    total = tokens.input * PRICES["input"] + tokens.output * PRICES["output"] + tokens.cache_read * PRICES["cache_read"]
    return (total + 500_000) // 1_000_000


def test_dumpcatalog_keeps_the_kind(resp):
    from catalog.services import catalog_dump

    dumped = catalog_dump()
    (provider,) = [p for p in dumped["providers"] if p["name"] == "mock-responses"]
    assert provider["kind"] == "responses"


# -- R client: the fast path ----------------------------------------------------------------------------------


def test_r_to_r_passthrough(resp):
    raw = resp.openai().responses.with_raw_response.create(
        model="resp-test", input="hello there", instructions="Be brief.", metadata={"k": "v"}, prompt_cache_key="t1"
    )
    response = raw.parse()
    (upstream,) = resp.mock.requests
    assert upstream.path == "/v1/responses"
    assert upstream.headers["authorization"] == f"Bearer {resp.mock.api_key}"
    assert upstream.json == {
        "model": "gpt-resp-1", "instructions": "Be brief.", "metadata": {"k": "v"}, "prompt_cache_key": "t1",
        "input": [{"type": "message", "role": "user", "content": "hello there"}], "store": False,
    }  # fmt: skip
    assert response.output_text == "Echo: hello there"
    assert response.id.startswith("resp_") and not response.id.startswith("resp_mock")
    assert response.model == "resp-test"
    assert response.store is True
    cost = _cost(upstream)
    assert upstream_tokens(upstream).cache_read > 0
    assert cost_of(response.usage) == usd(cost)
    assert header_usd(raw.headers["x-ruapi-cost-usd"]) == cost
    event = assert_billed_once(resp.tenant, cost)
    assert (event.upstream_protocol, event.cache_read_tokens) == ("responses", upstream_tokens(upstream).cache_read)


def test_r_to_r_stream_reasoning_round_trip(resp):
    client = resp.openai()
    with client.responses.stream(
        model="resp-test",
        input="weather?",
        tools=[WEATHER],
        store=False,
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    reasoning, call = final.output
    assert reasoning.encrypted_content.startswith(RESPONSES_ENCRYPTED_PREFIX)  # first-party ciphertext unwrapped
    assert call.type == "function_call"
    assert cost_of(final.usage) == usd(_cost(resp.mock.requests[-1]))
    second = client.responses.create(
        model="resp-test", tools=[WEATHER], store=False, reasoning={"effort": "low"},
        input=[
            {"role": "user", "content": "weather?"},
            reasoning.model_dump(exclude_none=True),
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )  # fmt: skip
    assert second.output_text == "Echo: weather?"
    assert resp.mock.requests[-1].json["include"] == ["reasoning.encrypted_content"]


# -- O client on an R upstream --------------------------------------------------------------------------------


def test_o_to_r_text_and_tools(resp):
    client = resp.openai()
    completion = client.chat.completions.create(
        model="resp-test", messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi there"}],
        max_tokens=10, user="u1",
    )  # fmt: skip
    upstream = resp.mock.requests[-1]
    assert upstream.json == {
        "model": "gpt-resp-1", "instructions": "Be kind.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}],
        "max_output_tokens": 16, "user": "u1", "store": False,
    }  # fmt: skip
    assert completion.choices[0].message.content == "Echo: hi there"
    assert completion.model == "resp-test"
    cost = _cost(upstream)
    assert cost_of(completion.usage) == usd(cost)
    assert_billed_once(resp.tenant, cost)
    # tools: §7 edge case 14 — one choice, tool_calls finish
    first = client.chat.completions.create(model="resp-test", messages=[{"role": "user", "content": "w?"}],
                                           tools=[O_WEATHER])  # fmt: skip
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    second = client.chat.completions.create(
        model="resp-test", tools=[O_WEATHER],
        messages=[
            {"role": "user", "content": "w?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )  # fmt: skip
    assert second.choices[0].message.content == "Echo: w?"
    assert resp.mock.requests[-1].json["input"][1:] == [
        {"type": "function_call", "call_id": call.id, "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": call.id, "output": "sunny"},
    ]


def test_o_to_r_stream(resp):
    stream = resp.openai().chat.completions.create(
        model="resp-test", messages=[{"role": "user", "content": "hello stream"}], stream=True,
        stream_options={"include_usage": True}, reasoning_effort="low",
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert text == "Echo: hello stream"
    assert reasoning == "Thinking about it."  # §7 edge case 23: never in content
    assert chunks[-1].usage is not None
    assert resp.mock.requests[-1].json["reasoning"] == {"effort": "low", "summary": "auto"}
    cost = _cost(resp.mock.requests[-1])
    assert cost_of(chunks[-1].usage) == usd(cost)
    assert_billed_once(resp.tenant, cost)


# -- A client on an R upstream --------------------------------------------------------------------------------


def test_a_to_r_text_stream_and_reasoning_round_trip(resp):
    client = resp.anthropic()
    message = client.messages.create(
        model="resp-test", max_tokens=2000, system="Be kind.", tools=[A_WEATHER],
        thinking={"type": "adaptive"}, output_config={"effort": "high"},
        metadata={"user_id": "claude-code-user"},
        messages=[{"role": "user", "content": "weather?"}],
    )  # fmt: skip
    upstream = resp.mock.requests[-1].json
    assert upstream["reasoning"] == {"effort": "high", "summary": "auto"}
    assert upstream["include"] == ["reasoning.encrypted_content"]
    assert len(upstream["safety_identifier"]) == 64
    thinking, tool_use = message.content
    assert thinking.type == "thinking" and thinking.signature.startswith("rg1.")
    assert tool_use.type == "tool_use" and message.stop_reason == "tool_use"
    # turn 2: the thinking block's envelope becomes the R reasoning item again (§7 edge case 22)
    second = client.messages.create(
        model="resp-test", max_tokens=2000, tools=[A_WEATHER], thinking={"type": "adaptive"},
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [thinking.model_dump(), tool_use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}]},
        ],
    )  # fmt: skip
    assert second.content[-1].text == "Echo: weather?"
    replay = resp.mock.requests[-1].json["input"]
    assert replay[1]["type"] == "reasoning"
    assert replay[1]["encrypted_content"].startswith(RESPONSES_ENCRYPTED_PREFIX)
    assert replay[2]["type"] == "function_call" and replay[3]["type"] == "function_call_output"
    # streamed: A event grammar with the text and the R usage mapped back
    _response, events = stream_raw(resp, "/v1/messages", {
        "model": "resp-test", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi a"}]
    }, {**bearer(resp), "anthropic-version": "2023-06-01"})  # fmt: skip
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-1] == "message_stop"
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == "Echo: hi a"
    usage = next(d for n, d in events if n == "message_delta")["usage"]
    assert usage["output_tokens"] == upstream_tokens(resp.mock.requests[-1]).output


def test_r_to_r_foreign_ciphertext_is_retried_without_reasoning(resp):
    # R8: an upstream 400 "encrypted content … could not be verified" → reasoning items stripped, retried once
    response = resp.openai().responses.create(
        model="resp-test", store=False,
        input=[
            {"role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_other_org", "summary": [], "encrypted_content": "gAAAA-other-org"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yes?"}]},
            {"role": "user", "content": "again"},
        ],
    )  # fmt: skip
    assert response.output_text == "Echo: again"
    first, second = resp.mock.requests
    assert [i.get("type") for i in first.json["input"]] == ["message", "reasoning", "message", "message"]
    assert [i.get("type") for i in second.json["input"]] == ["message", "message", "message"]
    assert_billed_once(resp.tenant, _cost(second))


def test_admin_probe_lists_the_upstream_models(resp):
    import asyncio

    from catalog.snapshot import catalog_snapshot
    from proxy.upstreams.probe import provider_probe

    provider = asyncio.run(catalog_snapshot()).get("resp-test").routes[0].provider
    assert (provider.kind, provider.protocol) == ("responses", "responses")
    result = asyncio.run(provider_probe(provider))
    assert result.ok and "gpt-4o-mini" in result.model_ids
    assert resp.mock.requests[-1].path == "/v1/models"
