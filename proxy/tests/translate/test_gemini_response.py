"""Gemini generateContent responses → A messages and O completions; usageMetadata → usage (§3)."""

import pytest

from proxy.translate import Conversion, Usage
from proxy.translate.gemini import gemini_response_to_anthropic, gemini_response_to_openai, usage_from_gemini

CONV = Conversion(body={}, input_estimate=7)


def ids():
    counter = iter(range(1, 100))
    return lambda: f"toolu_gen{next(counter)}"


USAGE = {"promptTokenCount": 120, "candidatesTokenCount": 30, "thoughtsTokenCount": 12,
         "cachedContentTokenCount": 100, "totalTokenCount": 162}  # fmt: skip


def response(parts, finish="STOP", usage=USAGE):
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage, "modelVersion": "gemini-up", "responseId": "r1"}  # fmt: skip


def test_usage_from_gemini_counts_cache_and_thoughts():
    assert usage_from_gemini(USAGE) == Usage(
        input_tokens=20, cache_read_tokens=100, cache_write_tokens=0, output_tokens=42, reasoning_tokens=12
    )
    assert usage_from_gemini({"promptTokenCount": 5, "toolUsePromptTokenCount": 3}) == Usage(input_tokens=8)
    assert usage_from_gemini(None) == Usage()


def test_text_thoughts_and_calls_to_anthropic():
    # given
    resp = response([
        {"text": "Let me ", "thought": True}, {"text": "think.", "thought": True},
        {"text": "Hello "}, {"text": "there"},
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "abc"},
        {"functionCall": {"id": "fc_2", "name": "weather", "args": {"city": "Rome"}}},
    ])  # fmt: skip
    # when
    out = gemini_response_to_anthropic(resp, CONV, model="client-model", message_id="msg_1", new_id=ids())
    # then
    assert out == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "client-model",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": ""},
            {"type": "text", "text": "Hello there"},
            {"type": "tool_use", "id": "toolu_gen1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "fc_2", "name": "weather", "input": {"city": "Rome"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
                  "output_tokens": 42, "output_tokens_details": {"thinking_tokens": 12}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("_case", "finish", "stop_reason", "finish_reason"),
    [
        ("stop", "STOP", "end_turn", "stop"),
        ("length", "MAX_TOKENS", "max_tokens", "length"),
        ("safety", "SAFETY", "refusal", "content_filter"),
        ("recitation", "RECITATION", "refusal", "content_filter"),
        ("malformed call", "MALFORMED_FUNCTION_CALL", "end_turn", "stop"),
        ("unknown", "SOMETHING_NEW", "end_turn", "stop"),
    ],
)
def test_finish_reason_mapping(_case, finish, stop_reason, finish_reason):
    resp = response([{"text": "x"}], finish=finish)
    assert gemini_response_to_anthropic(resp, CONV, model="m", message_id="msg", new_id=ids())["stop_reason"] == stop_reason
    out = gemini_response_to_openai(resp, CONV, model="m", created=1, completion_id="c", new_id=ids())
    assert out["choices"][0]["finish_reason"] == finish_reason


def test_to_openai_whole_payload():
    resp = response([{"text": "Hi", "thought": True}, {"text": "Hello"},
                     {"functionCall": {"name": "f", "args": {}}}])  # fmt: skip
    out = gemini_response_to_openai(resp, CONV, model="client-model", created=5, completion_id="chatcmpl-x", new_id=ids())
    assert out == {
        "id": "chatcmpl-x", "object": "chat.completion", "created": 5, "model": "client-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": "Hello", "refusal": None, "reasoning_content": "Hi",
            "tool_calls": [{"id": "toolu_gen1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 42, "total_tokens": 162,
                  "prompt_tokens_details": {"cached_tokens": 100},
                  "completion_tokens_details": {"reasoning_tokens": 12}},
        "system_fingerprint": None,
    }  # fmt: skip


def test_blocked_prompt_is_a_refusal_in_both_shapes():
    resp = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    out = gemini_response_to_anthropic(resp, CONV, model="m", message_id="msg", new_id=ids())
    assert (out["content"], out["stop_reason"]) == ([], "refusal")
    openai = gemini_response_to_openai(resp, CONV, model="m", created=1, completion_id="c", new_id=ids())
    message = openai["choices"][0]["message"]
    assert (message["content"], message["refusal"]) == (None, "The model declined to answer (SAFETY).")
    assert openai["choices"][0]["finish_reason"] == "content_filter"


def test_empty_answer_has_no_empty_text_block():
    out = gemini_response_to_anthropic(response([{"text": ""}]), CONV, model="m", message_id="msg", new_id=ids())
    assert out["content"] == []


def test_long_tool_name_is_restored():
    conv = Conversion(body={}, tool_names={"short": "a-very-long-original-name"})
    resp = response([{"functionCall": {"name": "short", "args": {"a": 1}}}])
    out = gemini_response_to_anthropic(resp, conv, model="m", message_id="msg", new_id=ids())
    assert out["content"][0]["name"] == "a-very-long-original-name"
