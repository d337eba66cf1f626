"""POST /v1/responses through the official openai SDK (`client.responses.create` / `.stream`), R clients on
O and A upstreams (converted through the hub), with exact billing: `usage.cost` == ledger debit.
"""

import pytest

from proxy.tests.integration.helpers import (
    assert_billed_once,
    assert_not_debited,
    bearer,
    cost_of,
    header_usd,
    raw_client,
    stream_raw,
    token_cost_nanos,
    upstream_tokens,
    usd,
)

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
UPSTREAM = {
    "gpt-test": ("/v1/chat/completions", "gpt-upstream-1"),
    "claude-test": ("/v1/messages", "claude-upstream-1"),
}


def _cost(model: str, record) -> int:
    return token_cost_nanos(model, upstream_tokens(record))


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_create_text(gateway, model):
    # when
    raw = gateway.openai().responses.with_raw_response.create(
        model=model, instructions="Be brief.", input="hello there", max_output_tokens=50
    )
    response = raw.parse()

    # then: the upstream got the converted request
    (upstream,) = gateway.mock.requests
    path, upstream_model = UPSTREAM[model]
    assert upstream.path == path
    if model == "gpt-test":
        assert upstream.json == {
            "model": upstream_model,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
            "max_tokens": 50,
        }
    else:
        assert upstream.json == {
            "model": upstream_model,
            "max_tokens": 50,
            # §5.3 step 7: cache breakpoints on the system prompt and the last user turn
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}],
                }
            ],
        }
    # the client got an R response
    assert response.object == "response"
    assert response.id.startswith("resp_") and len(response.id) == 37
    assert response.model == model
    assert response.status == "completed"
    assert response.output_text == "Echo: hello there"
    (item,) = response.output
    assert item.type == "message" and item.id.startswith("msg_") and item.status == "completed"
    assert response.instructions == "Be brief."
    tokens = upstream_tokens(upstream)
    assert response.usage.input_tokens == tokens.prompt
    assert response.usage.output_tokens == tokens.output
    assert response.usage.total_tokens == tokens.prompt + tokens.output
    assert response.usage.input_tokens_details.cached_tokens == tokens.cache_read
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    cost = _cost(model, upstream)
    assert cost_of(response.usage) == usd(cost)
    assert header_usd(raw.headers["x-ruapi-cost-usd"]) == cost
    event = assert_billed_once(gateway.tenant, cost)
    assert (event.endpoint, event.client_protocol, event.status_code) == ("responses", "responses", 200)


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_stream_text_grammar_and_billing(gateway, model):
    # when
    with gateway.openai().responses.stream(model=model, input="hello stream world", max_output_tokens=50) as stream:
        events = list(stream)
        final = stream.get_final_response()

    # then: §7 edge case 1, exactly this event grammar with dense sequence numbers
    types = [event.type for event in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 2
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.output_text == "Echo: hello stream world"
    assert final.status == "completed"
    (upstream,) = gateway.mock.requests
    cost = _cost(model, upstream)
    assert cost_of(final.usage) == usd(cost)
    assert final.usage.input_tokens == upstream_tokens(upstream).prompt
    assert_billed_once(gateway.tenant, cost)


def test_stream_raw_has_no_done_marker(gateway):
    response, events = stream_raw(
        gateway, "/v1/responses", {"model": "claude-test", "input": "hi", "stream": True}, bearer(gateway)
    )
    assert response.status_code == 200
    assert all(name == data["type"] for name, data in events)
    assert "[DONE]" not in [data for _, data in events]
    assert events[-1][0] == "response.completed"


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_tool_round_trip(gateway, model):
    client = gateway.openai()
    # turn 1: the model calls the tool
    first = client.responses.create(model=model, input="weather in Paris?", tools=[WEATHER_TOOL])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert call.arguments == '{"city":"Paris"}'
    assert call.id.startswith("fc_") and call.call_id
    assert first.status == "completed"
    # turn 2: the client sends the history back with the output (stateless, store false)
    second = client.responses.create(
        model=model,
        store=False,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "Echo: weather in Paris?"
    upstream = gateway.mock.requests[-1].json
    if model == "gpt-test":
        assert upstream["messages"][1:] == [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
        ]
    else:
        assert upstream["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call.call_id, "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.call_id,
                        "content": "sunny",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ]


def test_errors_in_openai_shape(gateway):
    client = raw_client(gateway)
    # §7 edge case 7 and 8: below min, moved fields
    r = client.post(
        "/v1/responses", json={"model": "claude-test", "input": "x", "max_output_tokens": 10}, headers=bearer(gateway)
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "integer_below_min_value"
    assert r.json()["error"]["param"] == "max_output_tokens"
    for field in ("messages", "max_tokens", "reasoning_effort", "response_format"):
        r = client.post("/v1/responses", json={"model": "claude-test", "input": "x", field: 1}, headers=bearer(gateway))
        assert r.status_code == 400
        assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("unsupported_parameter", field)
    # §7 edge case 11
    r = client.post(
        "/v1/responses",
        headers=bearer(gateway),
        json={"model": "claude-test", "input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "No tool call found for function call output with call_id c9."
    # §7 edge case 24 (stub store): an unknown previous response
    r = client.post(
        "/v1/responses",
        headers=bearer(gateway),
        json={"model": "claude-test", "input": "x", "previous_response_id": "resp_nope"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "previous_response_not_found"
    # §7 edge case 18: hosted tools
    r = client.post(
        "/v1/responses",
        headers=bearer(gateway),
        json={"model": "claude-test", "input": "x", "tools": [{"type": "file_search"}]},
    )
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("unsupported_tool", "tools[0]")
    assert gateway.mock.requests == []
    assert_not_debited(gateway.tenant)


def test_web_search_tool_dropped(gateway):
    response = gateway.openai().responses.create(model="claude-test", input="hi", tools=[{"type": "web_search"}])
    assert response.status == "completed"
    assert "tools" not in gateway.mock.requests[-1].json


def test_max_output_tokens_incomplete(gateway):
    # §7 edge case 6
    response = gateway.openai().responses.create(
        model="claude-test",
        input="one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen",
        max_output_tokens=16,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"


def test_reasoning_round_trip_on_anthropic(gateway):
    # §7 edge case 19: Codex-style store:false + include; turn 2 replays the reasoning item
    client = gateway.openai()
    first = client.responses.create(
        model="claude-test",
        input="weather in Paris?",
        tools=[WEATHER_TOOL],
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "high", "summary": "auto"},
    )
    reasoning, call = first.output
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == "Thinking about it."
    assert reasoning.encrypted_content.startswith("rg1.")
    assert call.type == "function_call"
    second = client.responses.create(
        model="claude-test",
        tools=[WEATHER_TOOL],
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "high", "summary": "auto"},
        input=[
            {"role": "user", "content": "weather in Paris?"},
            reasoning.model_dump(exclude_none=True),
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.status == "completed"
    upstream = gateway.mock.requests[-1].json
    assert upstream["thinking"]["type"] == "enabled"
    assistant = upstream["messages"][1]
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "Thinking about it.",
        "signature": "sig_mock_thinking_signature",
    }
    # another tenant's envelope does not open: dropped, and thinking is omitted for the tool turn (edge 20/21)
    from conftest import make_tenant

    other = make_tenant("Other")
    other_client = gateway.openai(api_key=other.secret)
    third = other_client.responses.create(
        model="claude-test",
        tools=[WEATHER_TOOL],
        store=False,
        reasoning={"effort": "high"},
        input=[
            {"role": "user", "content": "weather in Paris?"},
            reasoning.model_dump(exclude_none=True),
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert third.status == "completed"
    upstream = gateway.mock.requests[-1].json
    assert "thinking" not in upstream
    assert upstream["messages"][1]["content"][0]["type"] == "tool_use"


def test_stream_tool_call_events(gateway):
    _response, events = stream_raw(
        gateway, "/v1/responses", {"model": "gpt-test", "input": "weather?", "tools": [WEATHER_TOOL], "stream": True}
    )
    types = [name for name, _ in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    added = events[2][1]
    assert added["output_index"] == 0 and added["item"]["type"] == "function_call"
    assert added["item"]["name"] == "get_weather"
    args = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    assert args == '{"city": "Paris"}'
    done = next(d for n, d in events if n == "response.function_call_arguments.done")
    assert (done["arguments"], done["name"]) == ('{"city": "Paris"}', "get_weather")
    final = events[-1][1]["response"]
    assert events[-1][0] == "response.completed"
    assert final["output"][0]["call_id"] == added["item"]["call_id"]
    assert isinstance(final["usage"]["cost"], float)


def test_unknown_path_is_404_code_null(gateway):
    r = raw_client(gateway).post("/v1/responsez", json={}, headers=bearer(gateway))
    assert r.status_code == 404


def test_upstream_error_before_bytes_in_openai_shape(gateway):
    from proxy.tests.mock_upstream import Script

    gateway.mock.enqueue("/v1/messages", Script.error(429, provider="anthropic", retry_after=7))
    r = raw_client(gateway).post("/v1/responses", json={"model": "claude-test", "input": "hi"}, headers=bearer(gateway))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert_not_debited(gateway.tenant)


def test_mid_stream_error_is_response_failed(gateway):
    # §7 edge case 27: A overloaded_error after text → error (flat + nested) + response.failed, no completed
    from proxy.tests.mock_upstream import Script

    gateway.mock.enqueue(
        "/v1/messages",
        Script(
            sse=[
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": "m",
                            "type": "message",
                            "role": "assistant",
                            "model": "x",
                            "content": [],
                            "usage": {"input_tokens": 5, "output_tokens": 1},
                        },
                    },
                ),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
                ),
                ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ]
        ),
    )
    _response, events = stream_raw(gateway, "/v1/responses", {"model": "claude-test", "input": "hi", "stream": True})
    names = [n for n, _ in events]
    assert names[-2:] == ["error", "response.failed"]
    assert "response.completed" not in names
    error = events[-2][1]
    assert error["code"] == "server_error" and error["error"]["code"] == "server_error"
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    import openai

    gateway.mock.enqueue(
        "/v1/messages",
        Script(
            sse=[
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": "m",
                            "type": "message",
                            "role": "assistant",
                            "model": "x",
                            "content": [],
                            "usage": {"input_tokens": 5, "output_tokens": 1},
                        },
                    },
                ),
                ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ]
        ),
    )
    with pytest.raises(openai.APIError), gateway.openai().responses.stream(model="claude-test", input="hi") as stream:
        for _ in stream:
            pass


# -- Gemini upstream (through the neutral A form) --------------------------------------------------------------


@pytest.fixture
def gemini(gateway):
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate

    catalog_load({
        "providers": [{"name": "mock-gemini", "kind": "gemini", "base_url": f"{gateway.mock.url}/v1beta",
                       "api_key": gateway.mock.api_key}],
        "models": [{"name": "gemini-test", "provider": "mock-gemini", "upstream_model": "gemini-2.5-flash",
                    "input": "0.30", "output": "2.50", "cache_read": "0.075", "thinking": "budget",
                    "max_output_tokens": 65536}],
    })  # fmt: skip
    catalog_invalidate()
    return gateway


def test_gemini_create_stream_and_tools(gemini):
    client = gemini.openai()
    response = client.responses.create(model="gemini-test", instructions="Be kind.", input="hi gemini")
    upstream = gemini.mock.requests[-1]
    assert upstream.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert upstream.json["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    assert response.output_text == "Echo: hi gemini"
    meta = upstream.response_usage
    assert response.usage.input_tokens == meta["promptTokenCount"]
    with client.responses.stream(model="gemini-test", input="hi stream") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.output_text == "Echo: hi stream"
    first = client.responses.create(model="gemini-test", input="weather?", tools=[WEATHER_TOOL])
    (call,) = first.output
    assert (call.type, call.name) == ("function_call", "get_weather")
    second = client.responses.create(model="gemini-test", tools=[WEATHER_TOOL], input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ])  # fmt: skip
    assert second.output_text == "Echo: weather?"
    contents = gemini.mock.requests[-1].json["contents"]
    assert contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


# -- disconnects ---------------------------------------------------------------------------------------------


def test_client_disconnect_bills_what_was_produced(gateway):
    import time

    import httpx

    from billing.models import LedgerEntry, UsageEvent
    from proxy.tests.mock_upstream import Script

    chunks = [
        (None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-1",
                "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]})
        for i in range(100)
    ]  # fmt: skip
    gateway.mock.enqueue("/v1/chat/completions", Script(sse=chunks, chunk_delay=0.1))
    body = {"model": "gpt-test", "stream": True, "input": "talk slowly"}
    with (
        httpx.Client(base_url=gateway.server.url, timeout=10) as client,
        client.stream("POST", "/v1/responses", json=body, headers=bearer(gateway)) as response,
    ):
        assert response.status_code == 200
        received = 0
        for line in response.iter_lines():
            if "output_text.delta" in line and line.startswith("event:"):
                received += 1
            if received == 3:
                break
    assert gateway.mock.wait_for_disconnect(timeout=5)
    deadline = time.monotonic() + 5
    while not UsageEvent.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    event = UsageEvent.objects.get()
    assert (event.endpoint, event.error_type, event.is_estimated) == ("responses", "client_disconnected", True)
    assert 3 <= event.output_tokens < 100
    assert LedgerEntry.objects.get(kind="usage").amount_nanos == -event.cost_nanos


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_stream_reasoning_and_tool_through_the_sdk_accumulator(gateway, model):
    # the SDK's own stream accumulator accepts the reasoning summary and function call grammar (§2.2)
    with gateway.openai().responses.stream(
        model=model, input="weather?", tools=[WEATHER_TOOL], reasoning={"effort": "high", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    ) as stream:  # fmt: skip
        events = list(stream)
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "function_call"]
    assert final.output[0].summary[0].text == "Thinking about it."
    if model == "claude-test":  # a signed A block: the envelope; O reasoning has nothing to replay
        assert final.output[0].encrypted_content.startswith("rg1.")
    else:
        assert final.output[0].encrypted_content is None
    assert final.output[1].arguments == '{"city": "Paris"}'
    types = [event.type for event in events]
    assert types.index("response.reasoning_summary_part.added") < types.index("response.reasoning_summary_text.delta")
    assert types[-1] == "response.completed"
    done = [event.item for event in events if event.type == "response.output_item.done"]
    assert [item.id for item in done] == [item.id for item in final.output]
