"""Tools (definitions, tool_choice, calls, streamed calls, results in a follow-up turn) and thinking/reasoning
across the four client/upstream combinations. The mock rejects protocol-invalid histories with a 400."""

import json

import pytest

from proxy.tests.integration.helpers import (
    COMBINATION_IDS,
    COMBINATIONS,
    Tokens,
    anthropic_usage_numbers,
    assert_billed_once,
    openai_usage_numbers,
    stream_raw,
    token_cost_nanos,
    upstream_tokens,
)
from proxy.tests.mock_upstream import REASONING_TEXT, THINKING_SIGNATURE, TINY_PNG_BASE64, Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
O_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": CITY_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a city", "parameters": CITY_SCHEMA}},
]  # fmt: skip
A_TOOLS = [
    {"name": "get_weather", "description": "Weather of a city", "input_schema": CITY_SCHEMA},
    {"name": "get_time", "description": "Time in a city", "input_schema": CITY_SCHEMA},
]
QUESTION = [{"role": "user", "content": "weather in Paris?"}]
PARIS = {"city": "Paris"}
TOOL_CALL_TOKENS = Tokens(input=13, output=5)  # "weather in Paris?" + 10; 5 per tool call


def _tools_for(protocol: str) -> list[dict]:
    return O_TOOLS if protocol == "openai" else A_TOOLS


def _create(gateway, protocol: str, model: str, **params):
    if protocol == "openai":
        return gateway.openai().chat.completions.create(model=model, **params)
    params.setdefault("max_tokens", 200)
    return gateway.anthropic().messages.create(model=model, **params)


# -- tool calls ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
def test_tool_call_round_trip(gateway, case, protocol, model):
    # when
    result = _create(gateway, protocol, model, messages=QUESTION, tools=_tools_for(protocol))

    # then: the upstream got the tool definitions in its own shape (§2.5)
    (upstream,) = gateway.mock.requests
    assert upstream.json["tools"] == (O_TOOLS if model == "gpt-test" else A_TOOLS)
    call_id = "call_1" if model == "gpt-test" else "toolu_mock1"
    if protocol == "openai":
        message = result.choices[0].message
        assert message.content is None
        assert len(message.tool_calls) == 1
        call = message.tool_calls[0]
        assert (call.id, call.type, call.function.name) == (call_id, "function", "get_weather")
        assert json.loads(call.function.arguments) == PARIS
        assert result.choices[0].finish_reason == "tool_calls"
    else:
        assert [block.to_dict() for block in result.content] == [
            {"type": "tool_use", "id": call_id, "name": "get_weather", "input": PARIS}
        ]
        assert result.stop_reason == "tool_use"
    assert upstream_tokens(upstream) == TOOL_CALL_TOKENS
    assert_billed_once(gateway.tenant, token_cost_nanos(model, TOOL_CALL_TOKENS))


@pytest.mark.parametrize(
    ("case", "tool_choice", "parallel", "expected_upstream_choice", "called"),
    [
        ("auto", "auto", None, {"type": "auto"}, "get_weather"),
        ("required", "required", None, {"type": "any"}, "get_weather"),
        ("none", "none", None, {"type": "none"}, None),
        ("named", {"type": "function", "function": {"name": "get_time"}}, None, {"type": "tool", "name": "get_time"},
         "get_time"),
        ("no parallel calls", "auto", False, {"type": "auto", "disable_parallel_tool_use": True}, "get_weather"),
        ("default with no parallel calls", None, False, {"type": "auto", "disable_parallel_tool_use": True},
         "get_weather"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_openai_tool_choice(gateway, model, case, tool_choice, parallel, expected_upstream_choice, called):
    # given
    params = {"tools": O_TOOLS}
    if tool_choice is not None:
        params["tool_choice"] = tool_choice
    if parallel is not None:
        params["parallel_tool_calls"] = parallel

    # when
    completion = gateway.openai().chat.completions.create(model=model, messages=QUESTION, **params)

    # then
    upstream = gateway.mock.requests[0].json
    if model == "gpt-test":  # forwarded unchanged
        assert {k: upstream.get(k) for k in params} == params
    else:
        assert upstream["tool_choice"] == expected_upstream_choice
    message = completion.choices[0].message
    if called is None:
        assert (message.content, message.tool_calls) == ("Echo: weather in Paris?", None)
    else:
        assert [call.function.name for call in message.tool_calls] == [called]


def test_openai_allowed_tools_choice_keeps_only_the_listed_tools(gateway):
    # when
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_time"}}]}}  # fmt: skip
    completion = gateway.openai().chat.completions.create(
        model="claude-test", messages=QUESTION, tools=O_TOOLS, tool_choice=choice
    )

    # then
    upstream = gateway.mock.requests[0].json
    assert (upstream["tools"], upstream["tool_choice"]) == ([A_TOOLS[1]], {"type": "any"})
    assert completion.choices[0].message.tool_calls[0].function.name == "get_time"


@pytest.mark.parametrize(
    ("case", "tool_choice", "expected_upstream", "called"),
    [
        ("auto", {"type": "auto"}, {"tool_choice": "auto"}, "get_weather"),
        ("any", {"type": "any"}, {"tool_choice": "required"}, "get_weather"),
        ("none", {"type": "none"}, {"tool_choice": "none"}, None),
        ("tool", {"type": "tool", "name": "get_time"},
         {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "get_time"),
        ("no parallel calls", {"type": "auto", "disable_parallel_tool_use": True},
         {"tool_choice": "auto", "parallel_tool_calls": False}, "get_weather"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_anthropic_tool_choice(gateway, model, case, tool_choice, expected_upstream, called):
    # when
    message = gateway.anthropic().messages.create(
        model=model, max_tokens=200, messages=QUESTION, tools=A_TOOLS, tool_choice=tool_choice
    )

    # then
    upstream = gateway.mock.requests[0].json
    if model == "gpt-test":
        assert {k: upstream.get(k) for k in ("tool_choice", "parallel_tool_calls")} == {
            "parallel_tool_calls": None,
            **expected_upstream,
        }
    else:
        assert upstream["tool_choice"] == tool_choice
    if called is None:
        assert [block.to_dict() for block in message.content] == [{"type": "text", "text": "Echo: weather in Paris?"}]
    else:
        assert [(block.type, block.name) for block in message.content] == [("tool_use", called)]


def test_anthropic_disable_parallel_without_tools_sends_no_parallel_flag(gateway):
    # when (edge case 39)
    gateway.anthropic().messages.create(
        model="gpt-test", max_tokens=50, messages=QUESTION,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )  # fmt: skip

    # then
    upstream = gateway.mock.requests[0].json
    assert [k for k in ("tools", "tool_choice", "parallel_tool_calls") if k in upstream] == []


# -- tool results in a follow-up turn --------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
def test_tool_result_follow_up_turn(gateway, case, protocol, model):
    # given: the model asked for a tool in turn 1
    first = _create(gateway, protocol, model, messages=QUESTION, tools=_tools_for(protocol))
    if protocol == "openai":
        assistant = first.choices[0].message.to_dict()  # as the SDK gives it back: content null, refusal null
        call_id = assistant["tool_calls"][0]["id"]
        history = [*QUESTION, assistant, {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}]
    else:
        call_id = first.content[0].id
        history = [
            *QUESTION,
            {"role": "assistant", "content": [block.to_dict() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "sunny, 21C"}]},
        ]

    # when: turn 2 carries the result
    second = _create(gateway, protocol, model, messages=history, tools=_tools_for(protocol))

    # then: the upstream accepted the history (the mock 400s on an invalid one) and saw it in its own shape
    upstream = gateway.mock.requests[1]
    if model == "claude-test":
        assert upstream.json["messages"] == [
            *QUESTION,
            {"role": "assistant", "content": [{"type": "tool_use", "id": call_id, "name": "get_weather", "input": PARIS}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "sunny, 21C"}]},
        ]  # fmt: skip
    else:
        messages = upstream.json["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
        assert messages[1]["content"] in (None, "")
        assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in
                messages[1]["tool_calls"]] == [(call_id, "get_weather", PARIS)]  # fmt: skip
        assert messages[2] == {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}
    text = second.choices[0].message.content if protocol == "openai" else second.content[0].text
    assert text == "Echo: weather in Paris?"
    tokens = upstream_tokens(upstream)
    assert tokens == Tokens(input=13 + 10 + 12, output=4)
    from billing.models import UsageEvent

    assert UsageEvent.objects.filter(org_id=gateway.tenant.org.id).count() == 2


def test_openai_parallel_results_and_user_text_become_one_anthropic_user_turn(gateway):
    # given (edge cases 19 and 37): two calls, their two results, then a user message; one id needs sanitizing
    calls = [
        {"id": "functions.Bash:0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]  # fmt: skip
    messages = [
        *QUESTION,
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "next"},
    ]

    # when
    completion = gateway.openai().chat.completions.create(model="claude-test", messages=messages, tools=O_TOOLS)

    # then: no empty text block, ids sanitized consistently, "" arguments → {} (edge 21, 28)
    assert gateway.mock.requests[0].json["messages"] == [
        *QUESTION,
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "functions_Bash_0", "name": "get_weather", "input": PARIS},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "functions_Bash_0", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"type": "text", "text": "next"},
        ]},
    ]  # fmt: skip
    assert completion.choices[0].message.content == "Echo: next"


def test_openai_tool_history_without_tools_is_still_valid_upstream(gateway):
    # given (edge case 27): a finished tool exchange, but this request defines no tools
    messages = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ]  # fmt: skip

    # when
    completion = gateway.openai().chat.completions.create(model="claude-test", messages=messages)

    # then: the mock enforces "Requests which include tool_use or tool_result blocks must define tools"
    assert completion.choices[0].message.content == "Echo: thanks"
    upstream = gateway.mock.requests[0].json
    if "tools" in upstream:
        assert upstream["tool_choice"] == {"type": "none"}


def test_anthropic_tool_results_become_tool_messages_before_the_user_text(gateway):
    # given (edge cases 20 and 26): results interleaved with text, one with an image, one an error
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG_BASE64}}
    messages = [
        *QUESTION,
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": PARIS},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": PARIS},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}, image]},
            {"type": "text", "text": "go"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "clock broken", "is_error": True},
        ]},
    ]  # fmt: skip

    # when
    message = gateway.anthropic().messages.create(model="gpt-test", max_tokens=50, messages=messages, tools=A_TOOLS)

    # then: the O mock rejects tool messages that do not directly follow their calls
    upstream = gateway.mock.requests[0].json["messages"]
    assert upstream[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: clock broken"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG_BASE64}"}},
            {"type": "text", "text": "go"},
        ]},
    ]  # fmt: skip
    assert message.content[0].text == "Echo: go"


# -- streamed tool calls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_openai_streamed_tool_call(gateway, model):
    # when
    with gateway.openai().chat.completions.stream(
        model=model, messages=QUESTION, tools=O_TOOLS, stream_options={"include_usage": True}
    ) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()

    # then: the call opens with index 0, id, name; then argument fragments only (§1.4)
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    opening, *fragments = calls
    assert (opening.index, opening.type, opening.function.name) == (0, "function", "get_weather")
    assert opening.id == ("call_1" if model == "gpt-test" else "toolu_mock1")
    assert all(f.index == 0 and f.id is None and f.function.name is None for f in fragments)
    assert "".join([opening.function.arguments or "", *(f.function.arguments for f in fragments)]) == json.dumps(PARIS)
    (tool_call,) = final.choices[0].message.tool_calls
    assert (tool_call.function.name, json.loads(tool_call.function.arguments)) == ("get_weather", PARIS)
    assert final.choices[0].finish_reason == "tool_calls"
    assert openai_usage_numbers(final.usage) == TOOL_CALL_TOKENS
    assert_billed_once(gateway.tenant, token_cost_nanos(model, TOOL_CALL_TOKENS))


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_anthropic_streamed_tool_call(gateway, model):
    # when
    with gateway.anthropic().messages.stream(model=model, max_tokens=200, messages=QUESTION, tools=A_TOOLS) as stream:
        events = list(stream)
        message = stream.get_final_message()

    # then: the first block is the tool_use at index 0, no empty text block (edge case 4)
    assert [block.to_dict() for block in message.content] == [
        {"type": "tool_use", "id": "call_1" if model == "gpt-test" else "toolu_mock1", "name": "get_weather",
         "input": PARIS}
    ]  # fmt: skip
    assert message.stop_reason == "tool_use"
    starts = [event for event in events if event.type == "content_block_start"]
    assert [(event.index, event.content_block.type) for event in starts] == [(0, "tool_use")]
    json_deltas = [event.delta.partial_json for event in events if event.type == "content_block_delta"]
    assert "".join(json_deltas) == json.dumps(PARIS)
    if model == "gpt-test":
        assert "" not in json_deltas  # never an empty partial_json from a converted stream
    assert anthropic_usage_numbers(message.usage) == TOOL_CALL_TOKENS
    assert_billed_once(gateway.tenant, token_cost_nanos(model, TOOL_CALL_TOKENS))


# -- thinking / reasoning --------------------------------------------------------------------------------------

THINKING_TOKENS = Tokens(input=12, output=6)  # 3 reply words + 3 reasoning words


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_openai_reasoning_effort(gateway, model):
    # when
    completion = gateway.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], reasoning_effort="low"
    )

    # then
    upstream = gateway.mock.requests[0]
    if model == "gpt-test":
        assert upstream.json["reasoning_effort"] == "low"
    else:  # §2.6: low → 1024 budget, max_tokens above it
        assert upstream.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert upstream.json["max_tokens"] > 1024
        assert "reasoning_effort" not in upstream.json
    message = completion.choices[0].message
    assert message.content == "Echo: hello there"
    assert message.model_extra["reasoning_content"] == REASONING_TEXT
    assert "<think>" not in message.content
    usage = openai_usage_numbers(completion.usage)
    assert (usage.input, usage.output) == (12, 6)
    if model == "gpt-test":
        assert completion.usage.completion_tokens_details.reasoning_tokens == 3
    assert_billed_once(gateway.tenant, token_cost_nanos(model, THINKING_TOKENS))


def test_openai_high_effort_with_a_small_cap_fits_the_thinking_budget(gateway):
    # when (edge case 29)
    gateway.openai().chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "hello there"}],
        reasoning_effort="high", max_tokens=1000, temperature=0.5,
    )  # fmt: skip

    # then
    upstream = gateway.mock.requests[0].json
    budget = upstream["thinking"]["budget_tokens"]
    assert upstream["thinking"]["type"] == "enabled"
    assert 1024 <= budget < upstream["max_tokens"] <= 32000
    assert "temperature" not in upstream


def test_openai_forced_tool_drops_thinking(gateway):
    # when (§2.6: forced tool use is incompatible with thinking; the client's choice wins)
    gateway.openai().chat.completions.create(
        model="claude-test", messages=QUESTION, tools=O_TOOLS, tool_choice="required", reasoning_effort="low"
    )

    # then
    upstream = gateway.mock.requests[0].json
    assert (upstream["tool_choice"], "thinking" in upstream) == ({"type": "any"}, False)


@pytest.mark.parametrize(
    ("case", "model", "thinking", "max_tokens", "expected_effort"),
    [
        ("A->O budget 1024", "gpt-test", {"type": "enabled", "budget_tokens": 1024}, 4096, "low"),
        ("A->O budget 2048", "gpt-test", {"type": "enabled", "budget_tokens": 2048}, 4096, "medium"),
        ("A->O budget 31999", "gpt-test", {"type": "enabled", "budget_tokens": 31999}, 32000, "high"),
        ("A->O disabled", "gpt-test", {"type": "disabled"}, 4096, None),
        ("A->A budget 2048", "claude-test", {"type": "enabled", "budget_tokens": 2048}, 4096, "forwarded"),
        ("A->A disabled", "claude-test", {"type": "disabled"}, 4096, None),
    ],
)
def test_anthropic_thinking(gateway, case, model, thinking, max_tokens, expected_effort):
    # when
    message = gateway.anthropic().messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": "hello there"}], thinking=thinking,
        timeout=30,  # a large max_tokens without streaming needs an explicit timeout in the SDK
    )  # fmt: skip

    # then
    upstream = gateway.mock.requests[0].json
    if model == "gpt-test":  # §2.6 A→O (edge case 32)
        assert upstream.get("reasoning_effort") == expected_effort
        assert "thinking" not in upstream
    else:
        assert upstream["thinking"] == thinking
    blocks = [block.to_dict() for block in message.content]
    if expected_effort is None:
        assert blocks == [{"type": "text", "text": "Echo: hello there"}]
        return
    signature = THINKING_SIGNATURE if model == "claude-test" else ""  # synthesized blocks are unsigned (§3.4)
    assert blocks == [
        {"type": "thinking", "thinking": REASONING_TEXT, "signature": signature},
        {"type": "text", "text": "Echo: hello there"},
    ]
    assert anthropic_usage_numbers(message.usage) == Tokens(
        input=12, output=6, reasoning=3 if model == "gpt-test" else 0
    )
    assert_billed_once(gateway.tenant, token_cost_nanos(model, THINKING_TOKENS))


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_openai_streamed_reasoning_content(gateway, model):
    # when
    chunks = list(
        gateway.openai().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello there"}], reasoning_effort="medium", stream=True
        )
    )

    # then: reasoning deltas come first, never inside content (edge case 34)
    kinds, reasoning, content = [], [], []
    for chunk in chunks:
        delta = chunk.choices[0].delta
        piece = (delta.model_extra or {}).get("reasoning_content")
        if piece:
            reasoning.append(piece)
            kinds.append("reasoning")
        if delta.content:
            content.append(delta.content)
            kinds.append("content")
    assert "".join(reasoning) == REASONING_TEXT
    assert "".join(content) == "Echo: hello there"
    assert kinds == sorted(kinds, key=lambda kind: kind != "reasoning")
    assert_billed_once(gateway.tenant, token_cost_nanos(model, THINKING_TOKENS))


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_anthropic_streamed_thinking(gateway, model):
    # when
    body = {"model": model, "max_tokens": 4096, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [{"role": "user", "content": "hello there"}]}  # fmt: skip
    _, events = stream_raw(gateway, "/v1/messages", body, headers={"x-api-key": gateway.tenant.secret})

    # then: block 0 thinking, block 1 text; deltas match their block types (§4.2 invariants)
    data = [payload for name, payload in events if name not in (":comment", "ping")]
    starts = [(d["index"], d["content_block"]["type"]) for d in data if d["type"] == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "text")]
    stops = [d["index"] for d in data if d["type"] == "content_block_stop"]
    assert stops == [0, 1]
    deltas = [(d["index"], d["delta"]["type"]) for d in data if d["type"] == "content_block_delta"]
    assert {index for index, kind in deltas if kind in ("thinking_delta", "signature_delta")} == {0}
    assert {index for index, kind in deltas if kind == "text_delta"} == {1}
    thinking = "".join(d["delta"].get("thinking", "") for d in data if d["type"] == "content_block_delta")
    assert thinking == REASONING_TEXT
    types = [d["type"] for d in data]
    assert types.index("message_delta") > max(i for i, t in enumerate(types) if t == "content_block_stop")
    assert types[-1] == "message_stop"
    assert_billed_once(gateway.tenant, token_cost_nanos(model, THINKING_TOKENS))


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_replayed_thinking_blocks(gateway, model):
    # given (edge case 35): a gateway-synthesized (unsigned) block and a signed one in history
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "synthesized", "signature": ""},
            {"type": "text", "text": "first answer"},
        ]},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": REASONING_TEXT, "signature": THINKING_SIGNATURE},
            {"type": "text", "text": "second answer"},
        ]},
        {"role": "user", "content": "third question"},
    ]  # fmt: skip

    # when
    message = gateway.anthropic().messages.create(
        model=model, max_tokens=4096, messages=history, thinking={"type": "enabled", "budget_tokens": 1024}
    )

    # then
    upstream = gateway.mock.requests[0].json["messages"]
    if model == "claude-test":  # unsigned dropped, signed forwarded byte-identical
        assert upstream[1] == {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]}
        assert upstream[3] == history[3]
    else:  # an O upstream gets no thinking at all
        assert upstream[1] == {"role": "assistant", "content": "first answer"}
        assert upstream[3] == {"role": "assistant", "content": "second answer"}
    assert message.content[-1].text == "Echo: third question"


# -- scripted upstream streams: several blocks, several calls (PROTOCOLS §6 edge cases 2-10) ------------------


def _a_event(name: str, **fields) -> tuple:
    return name, {"type": name, **fields}


def _o_chunk(delta: dict | None, finish_reason=None, **extra) -> tuple:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return None, {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-1",
                  "choices": choices, **extra}  # fmt: skip


A_MIXED_STREAM = [
    _a_event("message_start", message={
        "id": "msg_s", "type": "message", "role": "assistant", "model": "claude-upstream-1", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}}),
    _a_event("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""}),
    _a_event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "Need tools."}),
    _a_event("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "sig"}),
    _a_event("content_block_stop", index=0),
    _a_event("content_block_start", index=1, content_block={"type": "text", "text": ""}),
    _a_event("content_block_delta", index=1, delta={"type": "text_delta", "text": "Checking."}),
    _a_event("content_block_stop", index=1),
    _a_event("content_block_start", index=2, content_block={"type": "tool_use", "id": "toolu_a", "name": "get_weather",
                                                            "input": {}}),
    _a_event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": ""}),
    _a_event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '{"city": '}),
    _a_event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '"Paris"}'}),
    _a_event("content_block_stop", index=2),
    _a_event("content_block_start", index=3, content_block={"type": "tool_use", "id": "toolu_b", "name": "get_time",
                                                            "input": {}}),
    _a_event("content_block_delta", index=3, delta={"type": "input_json_delta", "partial_json": '{"city": "Rome"}'}),
    _a_event("content_block_stop", index=3),
    _a_event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 40}),
    _a_event("message_stop"),
]  # fmt: skip


def test_anthropic_upstream_stream_with_thinking_text_and_two_tools_to_an_openai_client(gateway):
    # given (edge cases 1, 2)
    gateway.mock.enqueue("/v1/messages", Script(sse=A_MIXED_STREAM))

    # when
    body = {"model": "claude-test", "messages": QUESTION, "tools": O_TOOLS, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    _, events = stream_raw(gateway, "/v1/chat/completions", body)

    # then: reasoning, content, then tool calls with dense O indices 0 and 1 (never the A block index)
    chunks = [data for _, data in events if isinstance(data, dict)]
    assert events[-1] == (None, "[DONE]")
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Need tools."
    assert "".join(d.get("content") or "" for d in deltas) == "Checking."
    calls = [call for d in deltas for call in d.get("tool_calls") or []]
    openings = [(c["index"], c["id"], c["function"]["name"]) for c in calls if "id" in c]
    assert openings == [(0, "toolu_a", "get_weather"), (1, "toolu_b", "get_time")]
    arguments = {0: "", 1: ""}
    for call in calls:
        arguments[call["index"]] += call["function"].get("arguments") or ""
    assert {i: json.loads(a) for i, a in arguments.items()} == {0: PARIS, 1: {"city": "Rome"}}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 20
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert_billed_once(gateway.tenant, token_cost_nanos("claude-test", Tokens(input=20, output=40)))


def _indexless(call: dict) -> dict:
    return {key: value for key, value in call.items() if key != "index"}


@pytest.mark.parametrize(
    ("case", "calls_of"),
    [
        ("indexed tool deltas", lambda call: call),
        ("tool deltas without index, distinct ids (edge 7)", _indexless),
    ],
)
def test_openai_upstream_stream_with_reasoning_text_and_two_tools_to_an_anthropic_client(gateway, case, calls_of):
    # given (edge cases 3, 5, 6, 8, 9, 10): empty content between fragments, a complete call in one chunk,
    # finish_reason "stop" after tool calls, usage on its own chunk, and no [DONE]
    usage = {"prompt_tokens": 30, "completion_tokens": 25, "total_tokens": 55}
    chunks = [
        _o_chunk({"role": "assistant", "content": ""}),
        _o_chunk({"reasoning_content": "Need tools."}),
        _o_chunk({"content": "Checking."}),
        _o_chunk({"tool_calls": [calls_of({"index": 0, "id": "call_a", "type": "function",
                                          "function": {"name": "get_weather", "arguments": ""}})]}),
        _o_chunk({"content": ""}),
        _o_chunk({"tool_calls": [calls_of({"index": 0, "id": "call_a", "function": {"arguments": '{"city":'}})]}),
        _o_chunk({"content": ""}),
        _o_chunk({"tool_calls": [calls_of({"index": 0, "id": "call_a", "function": {"arguments": '"Paris"}'}})]}),
        _o_chunk({"tool_calls": [calls_of({"index": 1, "id": "call_b", "type": "function",
                                          "function": {"name": "get_time", "arguments": '{"city":"Rome"}'}})]}),
        _o_chunk({}, "stop"),
        _o_chunk(None, usage=usage),
    ]  # fmt: skip
    gateway.mock.enqueue("/v1/chat/completions", Script(sse=chunks))

    # when
    with gateway.anthropic().messages.stream(model="gpt-test", max_tokens=200, messages=QUESTION, tools=A_TOOLS) as s:
        events = [event for event in s if event.type in (
            "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
            "message_stop")]  # fmt: skip
        message = s.get_final_message()

    # then: blocks 0 thinking, 1 text, 2 and 3 tool_use; each started once and stopped once, before message_delta
    assert [block.to_dict() for block in message.content] == [
        {"type": "thinking", "thinking": "Need tools.", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": PARIS},
        {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {"city": "Rome"}},
    ]
    assert message.stop_reason == "tool_use"
    assert [e.index for e in events if e.type == "content_block_start"] == [0, 1, 2, 3]
    opened, closed = set(), set()
    for event in events:  # §4.2 invariants: no delta or stop for an unopened or closed index
        if event.type == "content_block_start":
            assert event.index not in opened
            opened.add(event.index)
        elif event.type == "content_block_delta":
            assert event.index in opened - closed
            if event.delta.type == "input_json_delta":
                assert event.delta.partial_json != ""
        elif event.type == "content_block_stop":
            assert event.index in opened - closed
            closed.add(event.index)
        elif event.type == "message_delta":
            assert closed == opened == {0, 1, 2, 3}
    types = [e.type for e in events]
    assert types.count("message_delta") == 1
    assert types[-2:] == ["message_delta", "message_stop"]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 25)
    assert_billed_once(gateway.tenant, token_cost_nanos("gpt-test", Tokens(input=30, output=25)))
