"""O upstream stream → A client events: PROTOCOLS §4.2 and edge cases 3–12, 17."""

import pytest

from proxy.translate import Conversion, ErrorKind, OpenAIToAnthropicStream

from .stream_checks import assert_anthropic_stream_invariants

DONE = "[DONE]"
EOF = "EOF"
INPUT_ESTIMATE = 42


def chunk(delta: dict | None = None, finish_reason: str | None = None, usage: dict | None = None, **choice) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-up",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason, **choice}],
        "usage": usage,
    }


def usage_chunk(prompt: int = 20, completion: int = 10, cached: int = 0) -> dict:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-up",
        "choices": [],
        "usage": usage,
    }


def tool_delta(
    index: int | None = None, call_id: str | None = None, name: str | None = None, arguments: str | None = None
) -> dict:
    function = {key: value for key, value in (("name", name), ("arguments", arguments)) if value is not None}
    call: dict = {"function": function}
    if index is not None:
        call["index"] = index
    if call_id is not None:
        call.update(id=call_id, type="function")
    return {"tool_calls": [call]}


def run(inputs: list, tool_names: dict | None = None) -> tuple[OpenAIToAnthropicStream, list]:
    ids = iter(f"toolu_{n:024x}" for n in range(1, 100))
    stream = OpenAIToAnthropicStream(
        Conversion(body={}, tool_names=tool_names or {}, input_estimate=INPUT_ESTIMATE),
        model="claude",
        message_id="msg_test",
        new_id=lambda: next(ids),
    )
    items: list = []
    for item in inputs:
        if item == DONE:
            items += stream.feed_done()
        elif item == EOF:
            items += stream.finish()
        else:
            items += stream.feed(item)
    return stream, items


MESSAGE_START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # edge 12: a real-looking estimate, not 0
            "usage": {
                "input_tokens": 42,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
    },
)
PING = ("ping", {"type": "ping"})
USAGE_20_10 = {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 10}


def start(index: int, block: dict) -> tuple:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, kind: str, value: str) -> tuple:
    key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}[kind]
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": kind, key: value}}


def stop(index: int) -> tuple:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def tool_block(tool_id: str, name: str) -> dict:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {}}


TEXT_BLOCK = {"type": "text", "text": ""}
THINKING_BLOCK = {"type": "thinking", "thinking": "", "signature": ""}


def end(stop_reason: str, usage: dict = USAGE_20_10, stop_sequence: str | None = None) -> list:
    return [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


@pytest.mark.parametrize(
    ("_case", "inputs", "expected"),
    [
        (
            "edge 3 + 9: reasoning → text → two tool calls; finish, usage chunk, [DONE] → one message_delta",
            [
                chunk({"role": "assistant", "content": ""}),
                chunk({"reasoning_content": "think"}),
                chunk({"content": "Hi"}),
                chunk(tool_delta(0, "call_a", "f", "")),
                chunk(tool_delta(0, arguments='{"x":1}')),
                chunk(tool_delta(1, "call_b", "g", "{}")),
                chunk({}, "tool_calls"),
                usage_chunk(),
                DONE,
            ],
            [
                MESSAGE_START,
                PING,
                start(0, THINKING_BLOCK),
                delta(0, "thinking_delta", "think"),
                stop(0),
                start(1, TEXT_BLOCK),
                delta(1, "text_delta", "Hi"),
                stop(1),
                start(2, tool_block("call_a", "f")),
                delta(2, "input_json_delta", '{"x":1}'),
                start(3, tool_block("call_b", "g")),
                delta(3, "input_json_delta", "{}"),
                stop(2),
                stop(3),
                *end("tool_use"),
            ],
        ),
        (
            "edge 4: role chunk with content '' then a tool call → tool_use at index 0, no empty block or delta",
            [
                chunk({"role": "assistant", "content": ""}),
                chunk(tool_delta(0, "call_a", "f", "")),
                chunk(tool_delta(0, arguments='{"q":"x"}')),
                chunk({}, "tool_calls", usage_chunk()["usage"]),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, tool_block("call_a", "f")),
                delta(0, "input_json_delta", '{"q":"x"}'),
                stop(0),
                *end("tool_use"),
            ],
        ),
        (
            "edge 5: empty content deltas between argument fragments keep one tool block",
            [
                chunk(tool_delta(0, "call_a", "f", '{"a":')),
                chunk({"content": ""}),
                chunk({"content": None, **tool_delta(0, arguments="1}")}),
                chunk({}, "tool_calls"),
                usage_chunk(),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, tool_block("call_a", "f")),
                delta(0, "input_json_delta", '{"a":'),
                delta(0, "input_json_delta", "1}"),
                stop(0),
                *end("tool_use"),
            ],
        ),
        (
            "edge 6: id + name + complete arguments in one chunk → start then one delta",
            [chunk(tool_delta(0, "call_a", "f", '{"a":1}')), chunk({}, "tool_calls"), usage_chunk()],
            [
                MESSAGE_START,
                PING,
                start(0, tool_block("call_a", "f")),
                delta(0, "input_json_delta", '{"a":1}'),
                stop(0),
                *end("tool_use"),
            ],
        ),
        (
            "edge 6: name after the first argument fragments → start when the name arrives, buffer flushed once",
            [
                chunk(tool_delta(0, "call_a", arguments='{"a"')),
                chunk(tool_delta(0, arguments=":1")),
                chunk(tool_delta(0, name="f", arguments="}")),
                chunk({}, "tool_calls"),
                usage_chunk(),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, tool_block("call_a", "f")),
                delta(0, "input_json_delta", '{"a":1}'),
                stop(0),
                *end("tool_use"),
            ],
        ),
        (
            "edge 7: calls without index but distinct ids are not merged; id-less fragments continue the last call",
            [
                chunk(tool_delta(call_id="c1", name="f", arguments='{"a":')),
                chunk(tool_delta(arguments="1}")),
                chunk(tool_delta(call_id="c2", name="g", arguments="{}")),
                chunk({}, "tool_calls"),
                usage_chunk(),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, tool_block("c1", "f")),
                delta(0, "input_json_delta", '{"a":'),
                delta(0, "input_json_delta", "1}"),
                start(1, tool_block("c2", "g")),
                delta(1, "input_json_delta", "{}"),
                stop(0),
                stop(1),
                *end("tool_use"),
            ],
        ),
        (
            "edge 8: finish_reason stop after tool calls → tool_use",
            [
                chunk({"content": "Let me check."}),
                chunk(tool_delta(0, "call_a", "f", "{}")),
                chunk({}, "stop"),
                usage_chunk(),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, TEXT_BLOCK),
                delta(0, "text_delta", "Let me check."),
                stop(0),
                start(1, tool_block("call_a", "f")),
                delta(1, "input_json_delta", "{}"),
                stop(1),
                *end("tool_use"),
            ],
        ),
        (
            "edge 9: usage on the finish chunk → finalized at once, later chunks ignored",
            [
                chunk({"content": "a"}),
                chunk({}, "stop", usage_chunk()["usage"]),
                usage_chunk(99, 99),
                chunk({"content": "late"}),
                DONE,
                EOF,
            ],
            [MESSAGE_START, PING, start(0, TEXT_BLOCK), delta(0, "text_delta", "a"), stop(0), *end("end_turn")],
        ),
        (
            "tool ids sanitized and generated; names restored; a nameless call starts as unknown_tool",
            [
                chunk(tool_delta(0, "functions.Bash:0", "short_1", "{}")),
                chunk(tool_delta(1, name="g", arguments="{}")),
                chunk(tool_delta(2, arguments='{"z":0}')),
                chunk({}, "tool_calls"),
                usage_chunk(),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, tool_block("functions_Bash_0", "long_original")),
                delta(0, "input_json_delta", "{}"),
                start(1, tool_block("toolu_000000000000000000000001", "g")),
                delta(1, "input_json_delta", "{}"),
                start(2, tool_block("toolu_000000000000000000000002", "unknown_tool")),
                delta(2, "input_json_delta", '{"z":0}'),
                stop(0),
                stop(1),
                stop(2),
                *end("tool_use"),
            ],
        ),
        (
            "a tool phase ends when text follows; a reused index after it is a new call",
            [
                chunk(tool_delta(0, "c1", "f", "{}")),
                chunk({"content": "then"}),
                chunk(tool_delta(0, "c2", "f", "{}")),
                chunk({}, "tool_calls"),
                usage_chunk(),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, tool_block("c1", "f")),
                delta(0, "input_json_delta", "{}"),
                stop(0),
                start(1, TEXT_BLOCK),
                delta(1, "text_delta", "then"),
                stop(1),
                start(2, tool_block("c2", "f")),
                delta(2, "input_json_delta", "{}"),
                stop(2),
                *end("tool_use"),
            ],
        ),
        (
            "reasoning under `reasoning` and `reasoning_details`; vLLM stop string → stop_sequence",
            [
                chunk({"reasoning": "a"}),
                chunk({"reasoning_details": [{"type": "reasoning.text", "text": "b"}]}),
                chunk({"content": "x"}),
                chunk({}, "stop", stop_reason="END"),
                usage_chunk(),
            ],
            [
                MESSAGE_START,
                PING,
                start(0, THINKING_BLOCK),
                delta(0, "thinking_delta", "a"),
                delta(0, "thinking_delta", "b"),
                stop(0),
                start(1, TEXT_BLOCK),
                delta(1, "text_delta", "x"),
                stop(1),
                *end("stop_sequence", stop_sequence="END"),
            ],
        ),
        (
            "refusal delta → text block and stop_reason refusal; content_filter → refusal",
            [chunk({"refusal": "No."}), chunk({}, "stop"), usage_chunk()],
            [MESSAGE_START, PING, start(0, TEXT_BLOCK), delta(0, "text_delta", "No."), stop(0), *end("refusal")],
        ),
        (
            "length → max_tokens; cached tokens leave input_tokens",
            [chunk({"content": "x"}), chunk({}, "length"), usage_chunk(prompt=120, completion=10, cached=100)],
            [
                MESSAGE_START,
                PING,
                start(0, TEXT_BLOCK),
                delta(0, "text_delta", "x"),
                stop(0),
                *end("max_tokens", {**USAGE_20_10, "cache_read_input_tokens": 100}),
            ],
        ),
        (
            "[DONE] without finish_reason still finalizes (end_turn)",
            [chunk({"content": "x"}), usage_chunk(), DONE],
            [MESSAGE_START, PING, start(0, TEXT_BLOCK), delta(0, "text_delta", "x"), stop(0), *end("end_turn")],
        ),
    ],
)
def test_stream(_case, inputs, expected):
    stream, items = run(inputs, tool_names={"short_1": "long_original"})

    assert items == expected
    assert_anthropic_stream_invariants(items)
    assert (stream.done, stream.error) == (True, None)


def test_edge_12_message_start_estimate_then_real_input_in_message_delta():
    stream, items = run([chunk({"content": "x"}), chunk({}, "stop"), usage_chunk(prompt=1234, completion=5), DONE])

    assert items[0][1]["message"]["usage"]["input_tokens"] == 42
    assert items[-2][1]["usage"] == {
        "input_tokens": 1234,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 5,
    }
    assert stream.usage.estimated is False


def test_edge_10_eof_after_finish_reason_without_done_finalizes_with_estimated_usage():
    stream, items = run([chunk({"content": "12345678"}), chunk({}, "stop"), EOF])

    assert items == [
        MESSAGE_START,
        PING,
        start(0, TEXT_BLOCK),
        delta(0, "text_delta", "12345678"),
        stop(0),
        # no usage from the upstream: prompt estimate + 8 bytes of output = 2 tokens
        *end(
            "end_turn",
            {"input_tokens": 42, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 2},
        ),
    ]
    assert stream.usage.estimated is True


def test_edge_11_eof_before_finish_reason_is_an_error_without_message_stop():
    stream, items = run([chunk({"content": "partial"}), EOF])

    assert items == [
        MESSAGE_START,
        PING,
        start(0, TEXT_BLOCK),
        delta(0, "text_delta", "partial"),
        (
            "error",
            {"type": "error", "error": {"type": "api_error", "message": "upstream stream ended before completion"}},
        ),
    ]
    assert (stream.done, stream.error.kind, stream.error.code) == (True, ErrorKind.UPSTREAM_ERROR, "stream_incomplete")
    assert stream.usage.output_tokens == 2  # "partial" still billed (§5.3 step 4)


@pytest.mark.parametrize(
    ("_case", "error", "expected_type"),
    [
        (
            "rate limit code",
            {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
            "rate_limit_error",
        ),
        ("server error", {"message": "The server had an error", "type": "server_error", "code": None}, "api_error"),
        ("unknown", {"message": "weird", "type": "weird"}, "api_error"),
    ],
)
def test_edge_17_error_chunk_mid_stream(_case, error, expected_type):
    stream, items = run([chunk({"content": "a"}), {"error": error}, chunk({"content": "b"}), DONE, EOF])

    assert items == [
        MESSAGE_START,
        PING,
        start(0, TEXT_BLOCK),
        delta(0, "text_delta", "a"),
        ("error", {"type": "error", "error": {"type": expected_type, "message": error["message"]}}),
    ]
    assert stream.error is not None
