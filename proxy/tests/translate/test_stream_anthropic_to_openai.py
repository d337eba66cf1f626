"""A upstream stream → O client chunks: PROTOCOLS §4.1 and edge cases 1, 2, 13, 14, 16, 34."""

import pytest

from proxy.translate import AnthropicToOpenAIStream, Conversion, ErrorKind

EOF = "EOF"


def run(
    events: list, *, include_usage: bool = True, json_tool: str | None = None
) -> tuple[AnthropicToOpenAIStream, list]:
    conv = Conversion(body={}, tool_names={"short_1": "long_original"}, json_tool=json_tool, input_estimate=30)
    stream = AnthropicToOpenAIStream(
        conv, model="claude", created=1700000000, chunk_id="chatcmpl-x", include_usage=include_usage
    )
    items: list = []
    for event in events:
        items += stream.finish() if event == EOF else stream.feed(event)
    return stream, items


def message_start(usage: dict | None = None) -> dict:
    usage = usage or {
        "input_tokens": 25,
        "output_tokens": 1,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return {"type": "message_start", "message": message}


def block_start(index: int, block: dict) -> dict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict:
    return {"type": "content_block_stop", "index": index}


def text_block(index: int, *texts: str) -> list:
    return [
        block_start(index, {"type": "text", "text": ""}),
        *[block_delta(index, {"type": "text_delta", "text": text}) for text in texts],
        block_stop(index),
    ]


def tool_block(index: int, tool_id: str, name: str, *fragments: str) -> list:
    return [
        block_start(index, {"type": "tool_use", "id": tool_id, "name": name, "input": {}}),
        *[block_delta(index, {"type": "input_json_delta", "partial_json": fragment}) for fragment in fragments],
        block_stop(index),
    ]


def message_end(stop_reason: str, usage: dict | None = None) -> list:
    usage = usage or {"output_tokens": 15}
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage},
        {"type": "message_stop"},
    ]


PING = {"type": "ping"}


def o_chunk(delta: dict, finish_reason: str | None = None, *, with_usage_key: bool = True) -> tuple:
    chunk = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "claude",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_key:
        chunk["usage"] = None
    return None, chunk


def o_usage(usage: dict) -> tuple:
    return None, {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "claude",
        "choices": [],
        "usage": usage,
    }


ROLE = o_chunk({"role": "assistant", "content": ""})
DONE = (None, "[DONE]")
USAGE_25_15 = {
    "prompt_tokens": 25,
    "completion_tokens": 15,
    "total_tokens": 40,
    "prompt_tokens_details": {"cached_tokens": 0},
}


def tool_open(index: int, tool_id: str, name: str) -> tuple:
    call = {"index": index, "id": tool_id, "type": "function", "function": {"name": name, "arguments": ""}}
    return o_chunk({"tool_calls": [call]})


def tool_args(index: int, arguments: str) -> tuple:
    return o_chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})


@pytest.mark.parametrize(
    ("_case", "events", "expected"),
    [
        (
            "edge 1: text at block 0, tool_use at block 1 → tool_calls[0].index == 0",
            [
                message_start(),
                PING,
                *text_block(0, "Checking."),
                *tool_block(1, "toolu_1", "weather", "", '{"city":', '"Oslo"}'),
                *message_end("tool_use"),
            ],
            [
                ROLE,
                o_chunk({"content": "Checking."}),
                tool_open(0, "toolu_1", "weather"),
                tool_args(0, '{"city":'),
                tool_args(0, '"Oslo"}'),
                o_chunk({}, "tool_calls"),
                o_usage(USAGE_25_15),
                DONE,
            ],
        ),
        (
            "edge 2 + 34: thinking(0), text(1), tool_use(2), tool_use(3) → reasoning_content, content, tools 0 and 1",
            [
                message_start(),
                block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
                block_delta(0, {"type": "thinking_delta", "thinking": "Hmm."}),
                block_delta(0, {"type": "signature_delta", "signature": "sig"}),
                block_stop(0),
                *text_block(1, "Two calls."),
                *tool_block(2, "toolu_a", "f", "{}"),
                *tool_block(3, "toolu_b", "short_1", '{"x":1}'),
                *message_end("tool_use"),
            ],
            [
                ROLE,
                o_chunk({"reasoning_content": "Hmm."}),
                o_chunk({"content": "Two calls."}),
                tool_open(0, "toolu_a", "f"),
                tool_args(0, "{}"),
                tool_open(1, "toolu_b", "long_original"),
                tool_args(1, '{"x":1}'),
                o_chunk({}, "tool_calls"),
                o_usage(USAGE_25_15),
                DONE,
            ],
        ),
        (
            "redacted thinking and server blocks emit nothing; citations dropped",
            [
                message_start(),
                block_start(0, {"type": "redacted_thinking", "data": "xx"}),
                block_stop(0),
                block_start(1, {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}),
                block_delta(1, {"type": "input_json_delta", "partial_json": '{"q":1}'}),
                block_stop(1),
                block_start(2, {"type": "text", "text": ""}),
                block_delta(2, {"type": "citations_delta", "citation": {"type": "char_location"}}),
                block_delta(2, {"type": "text_delta", "text": "ok"}),
                block_stop(2),
                *message_end("end_turn"),
            ],
            [ROLE, o_chunk({"content": "ok"}), o_chunk({}, "stop"), o_usage(USAGE_25_15), DONE],
        ),
        (
            "edge 36: refusal → content_filter",
            [message_start(), *text_block(0, "No."), *message_end("refusal")],
            [ROLE, o_chunk({"content": "No."}), o_chunk({}, "content_filter"), o_usage(USAGE_25_15), DONE],
        ),
        (
            "edge 13: cumulative message_delta repeating input/cache values is not added twice",
            [
                message_start(
                    {
                        "input_tokens": 25,
                        "cache_read_input_tokens": 100,
                        "cache_creation_input_tokens": 0,
                        "output_tokens": 1,
                    }
                ),
                *text_block(0, "a"),
                *message_end("end_turn", {"input_tokens": 25, "cache_read_input_tokens": 100, "output_tokens": 15}),
            ],
            [
                ROLE,
                o_chunk({"content": "a"}),
                o_chunk({}, "stop"),
                o_usage(
                    {
                        "prompt_tokens": 125,
                        "completion_tokens": 15,
                        "total_tokens": 140,
                        "prompt_tokens_details": {"cached_tokens": 100},
                    }
                ),
                DONE,
            ],
        ),
        (
            "events after message_stop are ignored",
            [message_start(), *message_end("max_tokens"), *text_block(0, "late"), EOF],
            [ROLE, o_chunk({}, "length"), o_usage(USAGE_25_15), DONE],
        ),
    ],
)
def test_stream(_case, events, expected):
    stream, items = run(events)

    assert items == expected
    assert (stream.done, stream.error) == (True, None)


def test_edge_13_usage_output_overwritten_not_added():
    stream, _ = run([message_start(), *text_block(0, "a"), *message_end("end_turn")])

    assert (stream.usage.prompt_tokens, stream.usage.output_tokens, stream.usage.estimated) == (25, 15, False)


def test_edge_14_without_include_usage_no_usage_chunk_and_no_usage_keys():
    stream, items = run([message_start(), *text_block(0, "a"), *message_end("end_turn")], include_usage=False)

    assert items == [
        o_chunk({"role": "assistant", "content": ""}, with_usage_key=False),
        o_chunk({"content": "a"}, with_usage_key=False),
        o_chunk({}, "stop", with_usage_key=False),
        DONE,
    ]
    assert stream.usage.output_tokens == 15  # still known for billing


def test_json_tool_fallback_streams_as_content():
    events = [message_start(), *tool_block(0, "toolu_1", "json_tool_call", '{"a":', "1}"), *message_end("tool_use")]

    _, items = run(events, json_tool="json_tool_call")

    assert items == [
        ROLE,
        o_chunk({"content": '{"a":'}),
        o_chunk({"content": "1}"}),
        o_chunk({}, "stop"),
        o_usage(USAGE_25_15),
        DONE,
    ]


def test_edge_16_overloaded_error_after_text_ends_without_done():
    events = [
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hel"}),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        block_delta(0, {"type": "text_delta", "text": "lo"}),
        EOF,
    ]

    stream, items = run(events)

    assert items == [
        ROLE,
        o_chunk({"content": "Hel"}),
        (None, {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}}),
    ]
    assert (stream.done, stream.error.kind) == (True, ErrorKind.OVERLOADED)


def test_eof_before_message_stop_is_an_error_and_bills_the_output_seen():
    stream, items = run(
        [
            message_start(),
            block_start(0, {"type": "text", "text": ""}),
            block_delta(0, {"type": "text_delta", "text": "x" * 40}),
            EOF,
        ]
    )

    assert items[-1] == (
        None,
        {
            "error": {
                "message": "upstream stream ended before completion",
                "type": "server_error",
                "param": None,
                "code": "stream_incomplete",
            }
        },
    )
    # message_start said output 1; 40 bytes were streamed → 10 tokens, marked as an estimate
    assert (stream.usage.input_tokens, stream.usage.output_tokens, stream.usage.estimated) == (25, 10, True)


def test_no_upstream_usage_at_all_is_estimated():
    events = [
        {"type": "message_start", "message": {"id": "m", "content": []}},
        *text_block(0, "12345678"),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "message_stop"},
    ]

    stream, items = run(events)

    assert items[-2] == o_usage(
        {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32, "prompt_tokens_details": {"cached_tokens": 0}}
    )
    assert stream.usage.estimated is True
