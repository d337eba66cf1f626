"""Gemini streamGenerateContent chunks → A events and O chunks (§4 rules applied to Gemini)."""

import json

import pytest

from proxy.translate import Conversion, ErrorKind, GatewayError, Usage
from proxy.translate.gemini_stream import GeminiToAnthropicStream, GeminiToOpenAIStream

from .stream_checks import assert_anthropic_stream_invariants

CONV = Conversion(body={}, input_estimate=9)
FINAL_USAGE = {"promptTokenCount": 50, "candidatesTokenCount": 6, "thoughtsTokenCount": 3,
               "cachedContentTokenCount": 20, "totalTokenCount": 59}  # fmt: skip


def chunk(*parts, finish=None, usage=None):
    candidate = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    data = {"candidates": [candidate], "modelVersion": "gemini-up", "responseId": "r"}
    if usage is not None:
        data["usageMetadata"] = usage
    return data


def new_ids():
    counter = iter(range(1, 100))
    return lambda: f"toolu_gen{next(counter)}"


def to_anthropic(chunks, *, eof=True):
    machine = GeminiToAnthropicStream(CONV, model="client-model", message_id="msg_1", new_id=new_ids())
    items = [item for c in chunks for item in machine.feed(c)]
    if eof:
        items += machine.finish()
    return machine, items


def to_openai(chunks, *, include_usage=True, eof=True):
    machine = GeminiToOpenAIStream(CONV, model="client-model", created=7, chunk_id="chatcmpl-1",
                                   include_usage=include_usage, new_id=new_ids())  # fmt: skip
    items = [item for c in chunks for item in machine.feed(c)]
    if eof:
        items += machine.finish()
    return machine, items


RUNNING = {"promptTokenCount": 50, "candidatesTokenCount": 1, "totalTokenCount": 51}
TEXT_STREAM = [
    chunk({"text": "Hmm.", "thought": True}, usage=RUNNING),
    chunk({"text": "Hello "}, usage=RUNNING),
    chunk({"text": "world"}, finish="STOP", usage=FINAL_USAGE),
]


def test_text_and_thought_to_anthropic_whole_sequence():
    machine, items = to_anthropic(TEXT_STREAM)
    assert_anthropic_stream_invariants(items)
    assert items == [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "client-model", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "Hello "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "world"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": 30, "cache_creation_input_tokens": 0,
                                     "cache_read_input_tokens": 20, "output_tokens": 9,
                                     "output_tokens_details": {"thinking_tokens": 3}}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    assert machine.done and machine.error is None
    assert machine.usage == Usage(input_tokens=30, cache_read_tokens=20, output_tokens=9, reasoning_tokens=3)


def test_function_calls_are_complete_blocks_with_dense_indices():
    chunks = [
        chunk({"text": "Checking."}, usage=RUNNING),
        chunk({"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "s"},
              {"functionCall": {"id": "fc_9", "name": "noargs", "args": {}}}, finish="STOP", usage=FINAL_USAGE),
    ]  # fmt: skip
    _, items = to_anthropic(chunks)
    assert_anthropic_stream_invariants(items)
    starts = [data["content_block"] for name, data in items if name == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "toolu_gen1", "name": "weather", "input": {}},
        {"type": "tool_use", "id": "fc_9", "name": "noargs", "input": {}},
    ]
    deltas = [data["delta"] for name, data in items if name == "content_block_delta" and data["index"] > 0]
    assert deltas == [{"type": "input_json_delta", "partial_json": '{"city":"Paris"}'}]  # none empty
    assert items[-2][1]["delta"]["stop_reason"] == "tool_use"  # Gemini ends tool turns with STOP


def test_chunks_after_the_final_one_are_ignored():
    _machine, items = to_anthropic([*TEXT_STREAM, chunk({"text": "late"}, usage=RUNNING)])
    assert items[-1][0] == "message_stop"
    assert sum(1 for name, _ in items if name == "message_delta") == 1


def test_eof_after_finish_without_usage_finalizes_with_estimate():
    machine, items = to_anthropic([chunk({"text": "Hi there"}, finish="MAX_TOKENS")])
    assert [name for name, _ in items][-2:] == ["message_delta", "message_stop"]
    assert items[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert machine.usage.estimated


def test_eof_before_finish_is_an_error_not_a_fake_stop():
    machine, items = to_anthropic([chunk({"text": "Hel"}, usage=RUNNING)])
    assert items[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": "upstream stream ended before completion"}})  # fmt: skip
    assert "message_stop" not in [name for name, _ in items]
    assert machine.error.kind is ErrorKind.UPSTREAM_ERROR
    assert machine.usage.output_tokens >= 1  # what was streamed is still billed


@pytest.mark.parametrize(
    ("_case", "error", "a_type", "o_type", "o_code"),
    [
        ("rate limit", {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"},
         "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
        ("overloaded", {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"},
         "overloaded_error", "server_error", "overloaded"),
        ("internal", {"code": 500, "message": "Internal error", "status": "INTERNAL"}, "api_error", "server_error", None),
    ],
)  # fmt: skip
def test_mid_stream_error_in_both_shapes(_case, error, a_type, o_type, o_code):
    chunks = [chunk({"text": "Hello"}, usage=RUNNING), {"error": error}, chunk({"text": "more"})]
    _machine, items = to_anthropic(chunks)
    assert items[-1] == ("error", {"type": "error", "error": {"type": a_type, "message": error["message"]}})
    assert "message_stop" not in [name for name, _ in items]
    o_machine, o_items = to_openai(chunks)
    assert o_items[-1] == (None, {"error": {"message": error["message"], "type": o_type, "param": None,
                                            "code": o_code}})  # fmt: skip
    assert (None, "[DONE]") not in o_items
    assert o_machine.done and o_machine.error is not None


def test_to_openai_with_usage_chunk():
    machine, items = to_openai(TEXT_STREAM)
    chunks = [data for _, data in items]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-3]]
    assert deltas == [{"reasoning_content": "Hmm."}, {"content": "Hello "}, {"content": "world"}]
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2] == {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "client-model",
                          "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59,
                                                   "prompt_tokens_details": {"cached_tokens": 20},
                                                   "completion_tokens_details": {"reasoning_tokens": 3}}}  # fmt: skip
    assert chunks[-1] == "[DONE]"
    assert all(c["usage"] is None for c in chunks[:-2])
    assert machine.usage.output_tokens == 9


def test_to_openai_without_usage_and_with_tools():
    chunks = [chunk({"functionCall": {"name": "a", "args": {"x": 1}}}, {"functionCall": {"name": "b", "args": {}}},
                    finish="STOP", usage=FINAL_USAGE)]  # fmt: skip
    _, items = to_openai(chunks, include_usage=False)
    data = [d for _, d in items]
    calls = [d["choices"][0]["delta"]["tool_calls"][0] for d in data if isinstance(d, dict) and d["choices"]
             and "tool_calls" in d["choices"][0]["delta"]]  # fmt: skip
    assert [(c["index"], c.get("id"), c["function"]) for c in calls] == [
        (0, "toolu_gen1", {"name": "a", "arguments": ""}),
        (0, None, {"arguments": '{"x":1}'}),
        (1, "toolu_gen2", {"name": "b", "arguments": ""}),
    ]
    assert data[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert data[-1] == "[DONE]"
    assert not any(isinstance(d, dict) and d.get("choices") == [] for d in data)
    assert all("usage" not in d for d in data if isinstance(d, dict))


def test_fail_after_bytes_went_out():
    machine = GeminiToAnthropicStream(CONV, model="m", message_id="msg", new_id=new_ids())
    machine.feed(chunk({"text": "Hi"}, usage=RUNNING))
    items = machine.fail(GatewayError(ErrorKind.TIMEOUT, "The upstream provider timed out."))
    assert items == [("error", {"type": "error", "error": {"type": "timeout_error",
                                                           "message": "The upstream provider timed out."}})]
    assert machine.fail(GatewayError(ErrorKind.TIMEOUT, "again")) == []
    o_machine = GeminiToOpenAIStream(CONV, model="m", created=1, chunk_id="c", include_usage=False, new_id=new_ids())
    o_machine.feed(chunk({"text": "Hi"}, usage=RUNNING))
    (item,) = o_machine.fail(GatewayError(ErrorKind.TIMEOUT, "The upstream provider timed out."))
    assert json.loads(json.dumps(item[1]))["error"]["code"] == "timeout"
    assert o_machine.done


def test_blocked_prompt_stream_is_a_refusal():
    _, items = to_anthropic([{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}])
    assert_anthropic_stream_invariants(items)
    assert items[-2][1]["delta"]["stop_reason"] == "refusal"
