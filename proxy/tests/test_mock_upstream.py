"""Tests of the mock upstream itself: the official openai and anthropic SDKs pointed straight at it, raw HTTP for
wire framing and faults."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from proxy.tests.mock_upstream import (
    REASONING_TEXT,
    THINKING_SIGNATURE,
    TINY_PNG_BASE64,
    Delay,
    MockUpstream,
    Script,
)

API_KEY = "sk-upstream-test"
OPENAI_AUTH = {"Authorization": f"Bearer {API_KEY}"}
ANTHROPIC_AUTH = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
A_WEATHER_TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}
A_TIME_TOOL = {"name": "get_time", "input_schema": {"type": "object"}}


@pytest.fixture(scope="module")
def server() -> Iterator[MockUpstream]:
    with MockUpstream(api_key=API_KEY) as started:
        yield started


@pytest.fixture
def upstream(server: MockUpstream) -> MockUpstream:
    server.reset()
    return server


@pytest.fixture
def openai_client(upstream: MockUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=upstream.openai_base_url, max_retries=0) as client:
        yield client


@pytest.fixture
def anthropic_client(upstream: MockUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=API_KEY, base_url=upstream.anthropic_base_url, max_retries=0) as client:
        yield client


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event of a raw stream body."""
    events = []
    for raw in text.split("\n\n"):
        if not raw:
            continue
        fields = dict(line.split(": ", 1) for line in raw.split("\n"))
        events.append((fields.get("event"), fields["data"]))
    return events


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# -- OpenAI chat completions -------------------------------------------------------------------------------------


def test_openai_chat_echoes_last_user_message_with_word_count_usage(
    upstream: MockUpstream, openai_client: openai.OpenAI
) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "system", "content": "You are terse."}, user("Hi"), user("Hello there")],
    )

    assert completion.id == "chatcmpl-mock1"
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.content == "Echo: Hello there"
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    # 3 + 1 + 2 words, + 10 per message; the reply "Echo: Hello there" is 3 words.
    expected_usage = {
        "prompt_tokens": 36,
        "completion_tokens": 3,
        "total_tokens": 39,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == expected_usage
    [record] = upstream.requests
    assert (record.method, record.path) == ("POST", "/v1/chat/completions")
    assert record.headers["authorization"] == f"Bearer {API_KEY}"
    assert record.json is not None and record.json["model"] == "gpt-test"
    assert json.loads(record.body) == record.json
    assert record.response_usage == expected_usage
    assert upstream.wait_idle()
    assert record.completed and not record.disconnected


def test_openai_stream_sends_words_then_finish_then_usage_chunk(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="gpt-test", messages=[user("one two three")], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert {chunk.id for chunk in chunks} == {"chatcmpl-mock1"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert [chunk.choices[0].delta.content for chunk in chunks[1:-2]] == ["Echo: ", "one ", "two ", "three"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (13, 4)
    assert all(chunk.usage is None for chunk in chunks[:-1])


@pytest.mark.parametrize(("_case", "include_usage"), [("with usage", True), ("without usage", False)])
def test_openai_stream_wire_framing(upstream: MockUpstream, _case: str, include_usage: bool) -> None:
    body = {
        "model": "gpt-test",
        "messages": [user("hi")],
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }

    response = httpx.post(f"{upstream.openai_base_url}/chat/completions", json=body, headers=OPENAI_AUTH)

    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    assert all(name is None for name, _ in events)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    if include_usage:
        assert [chunk["usage"] for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == 11 + 2
    else:
        assert not any("usage" in chunk for chunk in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("_case", "tool_choice", "expected_name"),
    [
        ("auto calls the first tool", "auto", "get_weather"),
        ("required calls the first tool", "required", "get_weather"),
        ("forced tool", {"type": "function", "function": {"name": "get_time"}}, "get_time"),
    ],
)
def test_openai_tools_produce_one_tool_call(
    openai_client: openai.OpenAI, _case: str, tool_choice: Any, expected_name: str
) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-test", messages=[user("Weather?")], tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice
    )

    message = completion.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    assert [(call.id, call.function.name, call.function.arguments) for call in message.tool_calls] == [
        ("call_1", expected_name, '{"city": "Paris"}')
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_openai_tool_choice_none_answers_with_text(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-test", messages=[user("Weather?")], tools=[WEATHER_TOOL], tool_choice="none"
    )

    assert completion.choices[0].message.content == "Echo: Weather?"
    assert completion.choices[0].finish_reason == "stop"


def test_openai_turn_answering_tool_results_gets_text(openai_client: openai.OpenAI) -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        user("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": "Sunny"},
    ]

    completion = openai_client.chat.completions.create(model="gpt-test", messages=messages, tools=[WEATHER_TOOL])

    assert completion.choices[0].message.content == "Echo: Weather in Paris?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 3 + 0 + 1 + 30


def test_openai_streamed_tool_call_arrives_in_fragments(openai_client: openai.OpenAI) -> None:
    chunks = list(
        openai_client.chat.completions.create(
            model="gpt-test", messages=[user("Weather?")], tools=[WEATHER_TOOL], stream=True
        )
    )

    calls = [chunk.choices[0].delta.tool_calls for chunk in chunks if chunk.choices[0].delta.tool_calls]
    opening, *fragments = [call for [call] in calls]
    assert (opening.index, opening.id, opening.type) == (0, "call_1", "function")
    assert opening.function is not None
    assert (opening.function.name, opening.function.arguments) == ("get_weather", "")
    assert len(fragments) >= 2
    assert all(fragment.index == 0 and fragment.id is None for fragment in fragments)
    assert "".join(fragment.function.arguments for fragment in fragments if fragment.function) == '{"city": "Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_stream_helper_accumulates_the_tool_call(openai_client: openai.OpenAI) -> None:
    with openai_client.chat.completions.stream(
        model="gpt-test", messages=[user("Weather?")], tools=[WEATHER_TOOL]
    ) as stream:
        completion = stream.get_final_completion()

    [call] = completion.choices[0].message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Paris"}')


def test_openai_reasoning_effort_adds_reasoning_content(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-test", messages=[user("Why?")], reasoning_effort="high"
    )
    chunks = list(
        openai_client.chat.completions.create(
            model="gpt-test", messages=[user("Why?")], reasoning_effort="high", stream=True
        )
    )

    message = completion.choices[0].message
    assert (message.model_extra or {})["reasoning_content"] == REASONING_TEXT
    assert message.content == "Echo: Why?"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 + 2
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 3
    deltas = [chunk.choices[0].delta.model_dump(exclude_none=True) for chunk in chunks[1:-1]]
    assert deltas == [
        {"reasoning_content": "Thinking "},
        {"reasoning_content": "about "},
        {"reasoning_content": "it."},
        {"content": "Echo: "},
        {"content": "Why?"},
    ]


@pytest.mark.parametrize(
    ("_case", "limits", "expected_text", "expected_finish"),
    [
        ("stop string", {"stop": "STOP"}, "Echo: alpha beta ", "stop"),
        ("earliest of stop list", {"stop": ["gamma", "beta"]}, "Echo: alpha ", "stop"),
        ("max_completion_tokens", {"max_completion_tokens": 2}, "Echo: alpha", "length"),
        ("legacy max_tokens", {"max_tokens": 3}, "Echo: alpha beta", "length"),
        ("limit not reached", {"max_completion_tokens": 5}, "Echo: alpha beta STOP gamma", "stop"),
    ],
)
def test_openai_stop_sequences_and_token_limits_truncate(
    openai_client: openai.OpenAI, _case: str, limits: dict[str, Any], expected_text: str, expected_finish: str
) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-test", messages=[user("alpha beta STOP gamma")], **limits
    )

    assert completion.choices[0].message.content == expected_text
    assert completion.choices[0].finish_reason == expected_finish
    assert completion.usage is not None and completion.usage.completion_tokens == len(expected_text.split())


def test_openai_prompt_cache_key_reports_half_the_prompt_cached(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-test", messages=[user("a b c")], prompt_cache_key="tenant-1"
    )

    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert (completion.usage.prompt_tokens, completion.usage.prompt_tokens_details.cached_tokens) == (13, 6)


@pytest.mark.parametrize(
    ("_case", "messages", "expected_message"),
    [
        ("no messages", [], "too short"),
        (
            "tool message without a call",
            [user("hi"), {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
            "must be a response to a preceding message with 'tool_calls'",
        ),
        (
            "call left unanswered",
            [
                user("hi"),
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                user("next"),
            ],
            "did not have response messages: c1",
        ),
    ],
)
def test_openai_rejects_invalid_message_lists(
    openai_client: openai.OpenAI, _case: str, messages: list[dict[str, Any]], expected_message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.chat.completions.create(model="gpt-test", messages=messages)

    assert expected_message in raised.value.message
    assert isinstance(raised.value.body, dict) and raised.value.body["type"] == "invalid_request_error"


def test_openai_rejects_a_wrong_key(upstream: MockUpstream) -> None:
    client = openai.OpenAI(api_key="sk-wrong", base_url=upstream.openai_base_url, max_retries=0)

    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="gpt-test", messages=[user("hi")])

    assert raised.value.body == {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


# -- Anthropic messages ------------------------------------------------------------------------------------------


def test_anthropic_message_echoes_with_usage(upstream: MockUpstream, anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model="claude-test", max_tokens=100, system="You are terse.", messages=[user("Hello there")]
    )

    assert (message.id, message.model, message.stop_reason, message.stop_sequence) == (
        "msg_mock1",
        "claude-test",
        "end_turn",
        None,
    )
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "text", "text": "Echo: Hello there"}
    ]
    # system counts as one message: 3 + 2 words + 2 x 10.
    expected_usage = {
        "input_tokens": 25,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert message.usage.model_dump(exclude_none=True) == expected_usage
    [record] = upstream.requests
    assert record.headers["authorization"] == f"Bearer {API_KEY}"  # anthropic 2.x sends api_key as a Bearer token
    assert "anthropic-version" in record.headers
    assert record.response_usage == expected_usage


def test_anthropic_stream_with_thinking(upstream: MockUpstream, anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model="claude-test",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[user("Why so?")],
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()

    assert text == "Echo: Why so?"
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "thinking", "thinking": REASONING_TEXT, "signature": THINKING_SIGNATURE},
        {"type": "text", "text": "Echo: Why so?"},
    ]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3 + 3)
    assert upstream.requests[0].response_usage == {
        "input_tokens": 12,
        "output_tokens": 6,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_anthropic_stream_wire_events(upstream: MockUpstream) -> None:
    body = {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": True,
        "thinking": {"type": "adaptive"},
        "messages": [user("hi")],
    }

    response = httpx.post(f"{upstream.anthropic_base_url}/v1/messages", json=body, headers=ANTHROPIC_AUTH)

    events = [(name, json.loads(data)) for name, data in sse_events(response.text)]
    assert all(name == data["type"] for name, data in events)
    assert [
        (name, data.get("index"), (data.get("delta") or data.get("content_block") or {}).get("type"))
        for name, data in events
    ] == [
        ("message_start", None, None),
        ("ping", None, None),
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert events[0][1]["message"]["usage"]["output_tokens"] == 1
    assert events[-2][1]["usage"] == {
        "input_tokens": 11,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert "[DONE]" not in response.text


def test_anthropic_streamed_tool_use(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model="claude-test", max_tokens=100, tools=[A_WEATHER_TOOL], messages=[user("Weather?")]
    ) as stream:
        partial_json = [
            event.delta.partial_json
            for event in stream
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
        ]
        message = stream.get_final_message()

    assert len([part for part in partial_json if part]) >= 2
    assert "".join(partial_json) == '{"city": "Paris"}'
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 5


@pytest.mark.parametrize(
    ("_case", "tool_choice", "expected"),
    [
        ("any", {"type": "any"}, ("tool_use", "get_weather")),
        ("forced", {"type": "tool", "name": "get_time"}, ("tool_use", "get_time")),
        ("none", {"type": "none"}, ("text", "Echo: Weather?")),
    ],
)
def test_anthropic_tool_choice(
    anthropic_client: anthropic.Anthropic, _case: str, tool_choice: Any, expected: tuple[str, str]
) -> None:
    message = anthropic_client.messages.create(
        model="claude-test",
        max_tokens=100,
        tools=[A_WEATHER_TOOL, A_TIME_TOOL],
        tool_choice=tool_choice,
        messages=[user("Weather?")],
    )

    [block] = message.content
    assert (block.type, block.name if block.type == "tool_use" else block.text) == expected


def test_anthropic_turn_answering_tool_results_gets_text(anthropic_client: anthropic.Anthropic) -> None:
    messages = [
        user("Weather in Paris?"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Sunny"}]},
    ]

    message = anthropic_client.messages.create(
        model="claude-test", max_tokens=100, tools=[A_WEATHER_TOOL], messages=messages
    )

    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "text", "text": "Echo: Weather in Paris?"}
    ]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 3 + 0 + 1 + 30


def test_anthropic_cache_control_reports_half_the_prompt_as_cache_read(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model="claude-test",
        max_tokens=100,
        system=[{"type": "text", "text": "A long stable preamble", "cache_control": {"type": "ephemeral"}}],
        messages=[user("a b c")],
    )

    # prompt = 4 + 3 words + 2 x 10 = 27; half (13) is read from cache, input_tokens excludes it.
    assert message.usage.model_dump(exclude_none=True) == {
        "input_tokens": 14,
        "output_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 13,
    }


@pytest.mark.parametrize(
    ("_case", "limits", "expected_text", "expected_stop"),
    [
        (
            "stop sequence",
            {"stop_sequences": ["STOP"], "max_tokens": 100},
            "Echo: alpha beta ",
            ("stop_sequence", "STOP"),
        ),
        ("max_tokens", {"max_tokens": 2}, "Echo: alpha", ("max_tokens", None)),
    ],
)
def test_anthropic_stop_sequences_and_max_tokens_truncate(
    anthropic_client: anthropic.Anthropic,
    _case: str,
    limits: dict[str, Any],
    expected_text: str,
    expected_stop: tuple[str, str | None],
) -> None:
    message = anthropic_client.messages.create(model="claude-test", messages=[user("alpha beta STOP gamma")], **limits)

    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "text", "text": expected_text}
    ]
    assert (message.stop_reason, message.stop_sequence) == expected_stop


@pytest.mark.parametrize(
    ("_case", "request_fields", "expected_message"),
    [
        ("missing max_tokens", {"messages": [user("hi")]}, "max_tokens: Field required"),
        (
            "empty text block",
            {"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            "text content blocks must be non-empty",
        ),
        (
            "whitespace-only text block",
            {"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]},
            "text content blocks must contain non-whitespace text",
        ),
        (
            "empty message",
            {"max_tokens": 10, "messages": [user(""), {"role": "assistant", "content": "ok"}]},
            "all messages must have non-empty content",
        ),
        (
            "tool blocks without tools",
            {
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]}
                ],
            },
            "must define tools",
        ),
        (
            "system role on a model without mid-conversation system messages",
            {"max_tokens": 10, "messages": [user("hi"), {"role": "system", "content": "Be terse."}]},
            "messages.1.role: role 'system' is not supported on this model",
        ),
        (
            "unknown role inside messages",
            {"max_tokens": 10, "messages": [{"role": "tool", "content": "Be terse."}, user("hi")]},
            "Input should be 'user' or 'assistant'",
        ),
    ],
)
def test_anthropic_rejects_what_the_real_api_rejects(
    upstream: MockUpstream, _case: str, request_fields: dict[str, Any], expected_message: str
) -> None:
    response = httpx.post(
        f"{upstream.anthropic_base_url}/v1/messages",
        json={"model": "claude-test", **request_fields},
        headers=ANTHROPIC_AUTH,
    )

    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert expected_message in error["error"]["message"]


def test_anthropic_sdk_raises_bad_request_for_an_empty_text_block(anthropic_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client.messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]
        )


@pytest.mark.parametrize(
    ("_case", "headers", "expected_status"),
    [
        ("x-api-key", {"x-api-key": API_KEY}, 200),
        ("bearer", {"Authorization": f"Bearer {API_KEY}"}, 200),
        ("wrong x-api-key wins over a good bearer", {"x-api-key": "nope", "Authorization": f"Bearer {API_KEY}"}, 401),
        ("no key", {}, 401),
    ],
)
def test_anthropic_auth(upstream: MockUpstream, _case: str, headers: dict[str, str], expected_status: int) -> None:
    body = {"model": "claude-test", "max_tokens": 10, "messages": [user("hi")]}

    response = httpx.post(f"{upstream.anthropic_base_url}/v1/messages", json=body, headers=headers)

    assert response.status_code == expected_status
    if expected_status == 401:
        assert response.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        }


def test_anthropic_count_tokens_uses_the_same_rule(anthropic_client: anthropic.Anthropic) -> None:
    counted = anthropic_client.messages.count_tokens(
        model="claude-test", system="Be brief.", messages=[user("one two three")]
    )

    assert counted.input_tokens == 2 + 3 + 2 * 10


# -- other endpoints ---------------------------------------------------------------------------------------------


def test_embeddings_are_deterministic_in_float_and_base64(upstream: MockUpstream, openai_client: openai.OpenAI) -> None:
    as_floats = openai_client.embeddings.create(model="emb", input=["red fox", "blue"], encoding_format="float")
    as_base64 = openai_client.embeddings.create(model="emb", input=["red fox", "blue"])  # the SDK asks for base64

    vectors = [item.embedding for item in as_floats.data]
    assert [item.embedding for item in as_base64.data] == vectors
    assert [len(vector) for vector in vectors] == [8, 8]
    assert vectors[0] != vectors[1]
    assert as_floats.usage.model_dump() == {"prompt_tokens": 3, "total_tokens": 3}
    assert upstream.requests[1].json is not None and upstream.requests[1].json["encoding_format"] == "base64"


def test_embeddings_base64_is_little_endian_float32(upstream: MockUpstream) -> None:
    url = f"{upstream.openai_base_url}/embeddings"
    body = {"model": "emb", "input": "red fox"}

    floats = httpx.post(url, json=body, headers=OPENAI_AUTH).json()
    encoded = httpx.post(url, json={**body, "encoding_format": "base64"}, headers=OPENAI_AUTH).json()

    decoded = struct.unpack("<8f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert list(decoded) == floats["data"][0]["embedding"]


def test_image_generation_returns_png_per_image(upstream: MockUpstream, openai_client: openai.OpenAI) -> None:
    result = openai_client.images.generate(model="gpt-image-1", prompt="a red fox", n=2)

    assert [item.revised_prompt for item in result.data or []] == ["a red fox", "a red fox"]
    png = base64.b64decode((result.data or [])[0].b64_json or "")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == base64.b64decode(TINY_PNG_BASE64)
    assert upstream.requests[0].response_usage == {
        "input_tokens": 3,
        "input_tokens_details": {"text_tokens": 3, "image_tokens": 0},
        "output_tokens": 544,
        "total_tokens": 547,
    }


def test_audio_transcription_reads_the_multipart_file(upstream: MockUpstream, openai_client: openai.OpenAI) -> None:
    audio = b"\x01" * 40_000

    transcription = openai_client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", audio))
    as_text = openai_client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", audio), response_format="text"
    )

    assert transcription.text == "transcribed 40000 bytes"
    assert as_text == "transcribed 40000 bytes"
    first, second = upstream.requests
    assert first.form == {"model": "whisper-1", "file": audio}
    assert first.response_usage == {"type": "duration", "seconds": 3}
    assert second.form["response_format"] == "text"


def test_audio_speech_streams_audio_bytes(upstream: MockUpstream, openai_client: openai.OpenAI) -> None:
    with openai_client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="hello"
    ) as response:
        audio = b"".join(response.iter_bytes())
        content_type = response.headers["content-type"]

    assert content_type == "audio/mpeg"
    assert audio == bytes(range(256)) + bytes(range(244))
    assert upstream.requests[0].json == {"model": "tts-1", "voice": "alloy", "input": "hello"}


def test_models_list_follows_the_client_protocol(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    openai_ids = [model.id for model in openai_client.models.list()]
    anthropic_models = list(anthropic_client.models.list())

    assert "gpt-4o-mini" in openai_ids
    assert [(model.id, model.type) for model in anthropic_models] == [
        ("claude-sonnet-4-5", "model"),
        ("claude-haiku-4-5", "model"),
    ]


@pytest.mark.parametrize(
    ("_case", "headers", "expected_body"),
    [
        (
            "openai shape",
            OPENAI_AUTH,
            {
                "error": {
                    "message": "Unknown endpoint: GET /v1/nope",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (
            "anthropic shape",
            ANTHROPIC_AUTH,
            {"type": "error", "error": {"type": "not_found_error", "message": "Unknown endpoint: GET /v1/nope"}},
        ),
    ],
)
def test_unknown_path_is_a_provider_shaped_404(
    upstream: MockUpstream, _case: str, headers: dict[str, str], expected_body: dict[str, Any]
) -> None:
    response = httpx.get(f"{upstream.url}/v1/nope", headers=headers)

    assert (response.status_code, response.json()) == (404, expected_body)


# -- scripts and faults ------------------------------------------------------------------------------------------


def test_scripts_are_used_first_in_first_out_per_path(
    upstream: MockUpstream, openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    upstream.enqueue("/v1/chat/completions", Script.error(429, message="slow down", retry_after=2))
    upstream.enqueue("/v1/chat/completions", Script.error(500, message="boom"))

    with pytest.raises(openai.RateLimitError) as rate_limited:
        openai_client.chat.completions.create(model="gpt-test", messages=[user("hi")])
    message = anthropic_client.messages.create(model="claude-test", max_tokens=10, messages=[user("hi")])
    with pytest.raises(openai.InternalServerError):
        openai_client.chat.completions.create(model="gpt-test", messages=[user("hi")])
    completion = openai_client.chat.completions.create(model="gpt-test", messages=[user("hi")])

    assert rate_limited.value.response.headers["retry-after"] == "2"
    assert rate_limited.value.body == {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    assert message.content[0].type == "text"
    assert completion.choices[0].message.content == "Echo: hi"
    assert [record.path for record in upstream.requests] == [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ]


@pytest.mark.parametrize(
    ("_case", "status", "expected_exception", "expected_type"),
    [
        ("rate limit", 429, anthropic.RateLimitError, "rate_limit_error"),
        ("overloaded", 529, anthropic.OverloadedError, "overloaded_error"),
        ("billing", 402, anthropic.PaymentRequiredError, "billing_error"),
    ],
)
def test_anthropic_error_scripts_raise_the_sdk_exception(
    upstream: MockUpstream,
    anthropic_client: anthropic.Anthropic,
    _case: str,
    status: int,
    expected_exception: type[anthropic.APIStatusError],
    expected_type: str,
) -> None:
    upstream.enqueue("/v1/messages", Script.error(status, provider="anthropic", message="nope"))

    with pytest.raises(expected_exception) as raised:
        anthropic_client.messages.create(model="claude-test", max_tokens=10, messages=[user("hi")])

    assert raised.value.body == {"type": "error", "error": {"type": expected_type, "message": "nope"}}


def test_malformed_json_bodies_reach_the_sdks(
    upstream: MockUpstream, openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    upstream.enqueue("/v1/chat/completions", Script(raw=b'{"id": "chatcmpl-1", "choices": [tru'))
    upstream.enqueue("/v1/messages", Script(raw=b"not json at all"))

    with pytest.raises(json.JSONDecodeError):
        openai_client.chat.completions.create(model="gpt-test", messages=[user("hi")])
    with pytest.raises(json.JSONDecodeError):
        anthropic_client.messages.create(model="claude-test", max_tokens=10, messages=[user("hi")])


def test_scripted_stream_dropped_mid_way(upstream: MockUpstream, openai_client: openai.OpenAI) -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
    }
    upstream.enqueue("/v1/chat/completions", Script(sse=[(None, chunk)] * 5 + [(None, "[DONE]")], drop_after=2))
    received = []

    with pytest.raises(openai.APIConnectionError):
        for item in openai_client.chat.completions.create(model="m", messages=[user("hi")], stream=True):
            received.append(item.choices[0].delta.content)

    assert received == ["x", "x"]
    assert upstream.wait_idle()
    [record] = upstream.requests
    assert (record.completed, record.disconnected) == (False, False)


def test_dropped_anthropic_stream_raises_in_the_sdk(
    upstream: MockUpstream, anthropic_client: anthropic.Anthropic
) -> None:
    body = {"model": "claude-test", "max_tokens": 10, "stream": True, "messages": [user("one two")]}
    default_events = sse_events(
        httpx.post(f"{upstream.anthropic_base_url}/v1/messages", json=body, headers=ANTHROPIC_AUTH).text
    )
    upstream.enqueue(
        "/v1/messages",
        Script(sse=[(name, json.loads(data)) for name, data in default_events], drop_after=4),
    )

    # Unlike openai, anthropic 2.x lets the transport error of a stream through unwrapped.
    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)),
        anthropic_client.messages.stream(model="claude-test", max_tokens=10, messages=[user("one two")]) as stream,
    ):
        stream.get_final_message()

    assert upstream.requests[-1].response_usage == {
        "input_tokens": 12,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_scripted_mid_stream_errors_raise_in_the_sdks(
    upstream: MockUpstream, openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.enqueue("/v1/messages", Script(sse=[("ping", {"type": "ping"}), ("error", overloaded)]))
    server_error = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    upstream.enqueue("/v1/chat/completions", Script(sse=[(None, server_error)]))

    with (
        pytest.raises(anthropic.APIStatusError) as anthropic_raised,
        anthropic_client.messages.stream(model="claude-test", max_tokens=10, messages=[user("hi")]) as stream,
    ):
        stream.get_final_message()
    with pytest.raises(openai.APIError, match="boom"):
        list(openai_client.chat.completions.create(model="gpt-test", messages=[user("hi")], stream=True))

    assert anthropic_raised.value.body == overloaded


def test_first_byte_delay_and_client_timeout_is_seen_as_a_disconnect(
    upstream: MockUpstream, openai_client: openai.OpenAI
) -> None:
    upstream.enqueue("/v1/chat/completions", Script(first_byte_delay=5, json={}))

    with pytest.raises(openai.APITimeoutError):
        openai_client.with_options(timeout=0.2).chat.completions.create(model="gpt-test", messages=[user("hi")])

    assert upstream.wait_for_disconnect(timeout=2)
    assert (upstream.requests[0].disconnected, upstream.requests[0].completed) == (True, False)


def test_stalled_stream_and_client_read_timeout(upstream: MockUpstream, openai_client: openai.OpenAI) -> None:
    default_stream = httpx.post(
        f"{upstream.openai_base_url}/chat/completions",
        json={"model": "gpt-test", "messages": [user("a b c")], "stream": True},
        headers=OPENAI_AUTH,
    ).text
    events = [(name, data if data == "[DONE]" else json.loads(data)) for name, data in sse_events(default_stream)]
    upstream.enqueue("/v1/chat/completions", Script(sse=events, stall_after=2, stall_seconds=10))
    received = []

    with pytest.raises(openai.APITimeoutError):
        stream = openai_client.with_options(timeout=0.3).chat.completions.create(
            model="gpt-test", messages=[user("a b c")], stream=True
        )
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)

    assert received == ["", "Echo: "]
    assert upstream.wait_for_disconnect(timeout=2)
    assert upstream.requests[-1].disconnected


def test_client_closing_a_stream_is_detected(upstream: MockUpstream, anthropic_client: anthropic.Anthropic) -> None:
    upstream.enqueue(
        "/v1/messages",
        Script(sse=[("ping", {"type": "ping"})] * 50, chunk_delay=0.05),
    )

    with httpx.stream(
        "POST", f"{upstream.anthropic_base_url}/v1/messages", json={}, headers=ANTHROPIC_AUTH
    ) as response:
        first = next(response.iter_lines())

    assert first == "event: ping"
    assert upstream.wait_for_disconnect(timeout=2)
    assert upstream.wait_idle()
    assert (upstream.requests[0].disconnected, upstream.requests[0].completed) == (True, False)


def test_delays_between_events(upstream: MockUpstream) -> None:
    upstream.enqueue(
        "/v1/chat/completions",
        Script(sse=[(None, "one"), Delay(0.2), (None, "two"), (None, "three")], chunk_delay=0.1),
    )
    started = time.monotonic()

    response = httpx.post(f"{upstream.openai_base_url}/chat/completions", json={})

    assert time.monotonic() - started >= 0.3
    assert response.text == "data: one\n\ndata: two\n\ndata: three\n\n"


def test_reset_forgets_requests_scripts_and_counters(upstream: MockUpstream, openai_client: openai.OpenAI) -> None:
    openai_client.chat.completions.create(model="gpt-test", messages=[user("hi")])
    upstream.enqueue("/v1/chat/completions", Script.error(500))

    upstream.reset()
    completion = openai_client.chat.completions.create(model="gpt-test", messages=[user("hi")])

    assert completion.id == "chatcmpl-mock1"
    assert len(upstream.requests) == 1


@pytest.mark.asyncio
async def test_usable_from_async_code() -> None:
    with MockUpstream(api_key=API_KEY).start() as server:
        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=server.openai_base_url, max_retries=0) as client:
            completion = await client.chat.completions.create(model="gpt-test", messages=[user("async hi")])

    assert completion.choices[0].message.content == "Echo: async hi"


# -- Issue 14: mid-conversation system messages, server tools, MCP, strict prompt caching ------------------------


def _post_messages(upstream: MockUpstream, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{upstream.anthropic_base_url}/v1/messages", json=body, headers={**ANTHROPIC_AUTH, **headers})


@pytest.mark.parametrize(
    ("_case", "messages", "status", "message"),
    [
        ("after a user message, before an assistant one", [user("a"), {"role": "system", "content": "s"},
                                                           {"role": "assistant", "content": "b"}, user("c")], 200, None),
        ("last", [user("a"), {"role": "system", "content": "s"}], 200, None),
        ("first", [{"role": "system", "content": "s"}, user("a")], 400, "must follow a user message"),
        ("two in a row", [user("a"), {"role": "system", "content": "s"}, {"role": "system", "content": "t"}], 400,
         "must precede an assistant message"),
    ],
)  # fmt: skip
def test_mid_conversation_system_placement(upstream: MockUpstream, _case, messages, status, message) -> None:
    response = _post_messages(upstream, {"model": "claude-opus-4-8", "max_tokens": 10, "messages": messages})
    assert response.status_code == status
    if message:
        assert message in response.json()["error"]["message"]


def test_web_search_reports_server_tool_use(upstream: MockUpstream) -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    response = _post_messages(upstream, {"model": "claude-test", "max_tokens": 50, "tools": tools,
                                         "messages": [user("news")]})  # fmt: skip
    data = response.json()
    assert [block["type"] for block in data["content"]] == [
        "server_tool_use", "web_search_tool_result", "server_tool_use", "web_search_tool_result", "text",
    ]  # fmt: skip
    assert data["usage"]["server_tool_use"] == {"web_search_requests": 2, "web_fetch_requests": 0}


def test_mcp_servers_need_the_beta(upstream: MockUpstream) -> None:
    body = {"model": "claude-test", "max_tokens": 50, "messages": [user("hi")],
            "mcp_servers": [{"type": "url", "url": "https://mcp.example.test/sse", "name": "ex"}]}  # fmt: skip
    refused = _post_messages(upstream, body)
    accepted = _post_messages(upstream, body, **{"anthropic-beta": "mcp-client-2025-04-04"})
    assert refused.status_code == 400
    assert [b["type"] for b in accepted.json()["content"]] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert accepted.json()["content"][0]["server_name"] == "ex"


def test_strict_prompt_caching(upstream: MockUpstream) -> None:
    long_text = " ".join(["word"] * 1200)
    marked = {"model": "claude-test", "max_tokens": 5, "system": [
        {"type": "text", "text": long_text, "cache_control": {"type": "ephemeral"}}], "messages": [user("hi")]}
    unmarked = {"model": "claude-test", "max_tokens": 5, "system": long_text, "messages": [user("hi")]}
    upstream.prompt_caching = True
    try:
        usages = [_post_messages(upstream, body).json()["usage"] for body in (unmarked, unmarked, marked, marked)]
    finally:
        upstream.prompt_caching = False
    prompt = 1200 + 10 + 1 + 10
    cached_prefix = 1200 + 10
    assert [(u["input_tokens"], u["cache_creation_input_tokens"], u["cache_read_input_tokens"]) for u in usages] == [
        (prompt, 0, 0),  # no breakpoint, no cache
        (prompt, 0, 0),
        (prompt - cached_prefix, cached_prefix, 0),  # written
        (prompt - cached_prefix, 0, cached_prefix),  # read
    ]
