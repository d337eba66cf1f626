"""Stream-only providers answering a non-stream client: PROTOCOLS §4.3."""

import pytest

from proxy.translate import (
    Conversion,
    ErrorKind,
    GatewayError,
    anthropic_response_to_openai,
    anthropic_stream_to_response,
    openai_stream_to_response,
)


def o_chunk(delta: dict, finish_reason: str | None = None) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "gpt-up",
        "choices": [choice],
        "usage": None,
    }


def test_openai_stream_to_response():
    chunks = [
        o_chunk({"role": "assistant", "content": ""}),
        o_chunk({"reasoning_content": "hm"}),
        o_chunk({"content": "Hi"}),
        o_chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
                ]
            }
        ),
        o_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        o_chunk({}, "tool_calls"),
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 5,
            "model": "gpt-up",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        },
    ]

    assert openai_stream_to_response(chunks) == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "gpt-up",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "refusal": None,
                    "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                    ],
                    "reasoning_content": "hm",
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def test_anthropic_stream_to_response_then_to_openai():
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-up",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "ping"},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
    ]

    message = anthropic_stream_to_response(events)

    assert message == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 15,
        },
    }
    assert anthropic_response_to_openai(message, Conversion(body={}), model="claude", created=9)["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            "reasoning_content": "hm",
        },
        "finish_reason": "tool_calls",
        "logprobs": None,
    }


@pytest.mark.parametrize(
    ("_case", "aggregate", "items", "expected_kind"),
    [
        (
            "O error chunk",
            openai_stream_to_response,
            [{"error": {"message": "x", "code": "rate_limit_exceeded"}}],
            ErrorKind.RATE_LIMIT,
        ),
        (
            "A error event",
            anthropic_stream_to_response,
            [{"type": "error", "error": {"type": "overloaded_error", "message": "x"}}],
            ErrorKind.OVERLOADED,
        ),
    ],
)
def test_aggregation_raises_on_stream_errors(_case, aggregate, items, expected_kind):
    with pytest.raises(GatewayError) as caught:
        aggregate(items)

    assert caught.value.kind is expected_kind
