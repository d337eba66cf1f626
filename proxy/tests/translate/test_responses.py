"""Non-stream responses: PROTOCOLS §3.1, §3.3, §3.4 and edge cases 33, 34, 36, 37."""

import pytest

from proxy.translate import (
    Conversion,
    anthropic_response_to_openai,
    anthropic_stop_reason_to_openai,
    openai_finish_reason_to_anthropic,
    openai_response_to_anthropic,
)

A_USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
O_USAGE_FROM_A = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 0},
}
O_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
A_USAGE_FROM_O = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}


def a_response(content: list, stop_reason: str = "end_turn", usage: dict | None = A_USAGE) -> dict:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def o_completion(message: dict, finish_reason: str = "stop", usage: dict | None = O_USAGE, **choice) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-up",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason, **choice}
        ],
        "usage": usage,
    }


def o_expected(message: dict, finish_reason: str, usage: dict = O_USAGE_FROM_A) -> dict:
    return {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage,
        "system_fingerprint": None,
    }


@pytest.mark.parametrize(
    ("_case", "resp", "conv", "expected"),
    [
        (
            "edge 34: thinking → reasoning_content, never <think> in content; text blocks concatenated",
            a_response(
                [
                    {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xx"},
                    {"type": "text", "text": "The answer", "citations": [{"type": "char_location"}]},
                    {"type": "text", "text": " is 4."},
                ]
            ),
            Conversion(body={}),
            o_expected({"content": "The answer is 4.", "reasoning_content": "Let me think."}, "stop"),
        ),
        (
            "tool calls: content null, arguments compact, O name restored",
            a_response(
                [{"type": "tool_use", "id": "toolu_1", "name": "short_1234abcd", "input": {"city": "Zürich"}}],
                stop_reason="tool_use",
            ),
            Conversion(body={}, tool_names={"short_1234abcd": "a_very_long_name"}),
            o_expected(
                {
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "a_very_long_name", "arguments": '{"city":"Zürich"}'},
                        }
                    ],
                },
                "tool_calls",
            ),
        ),
        (
            "empty message → content ''",
            a_response([], stop_reason="max_tokens"),
            Conversion(body={}),
            o_expected({"content": ""}, "length"),
        ),
        (
            "json tool fallback: its input becomes the content, finish_reason stop",
            a_response(
                [{"type": "tool_use", "id": "toolu_1", "name": "json_tool_call", "input": {"answer": 4}}],
                stop_reason="tool_use",
            ),
            Conversion(body={}, json_tool="json_tool_call"),
            o_expected({"content": '{"answer":4}'}, "stop"),
        ),
        (
            "edge 38: cache read and write folded into prompt_tokens",
            a_response(
                [{"type": "text", "text": "hi"}],
                usage={
                    "input_tokens": 10,
                    "cache_read_input_tokens": 2000,
                    "cache_creation_input_tokens": 400,
                    "output_tokens": 7,
                },
            ),
            Conversion(body={}),
            o_expected(
                {"content": "hi"},
                "stop",
                {
                    "prompt_tokens": 2410,
                    "completion_tokens": 7,
                    "total_tokens": 2417,
                    "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 400},
                },
            ),
        ),
        (
            "no upstream usage → estimate from the conversion and the content",
            a_response([{"type": "text", "text": "12345678"}], usage=None),
            Conversion(body={}, input_estimate=50),
            o_expected(
                {"content": "12345678"},
                "stop",
                {
                    "prompt_tokens": 50,
                    "completion_tokens": 2,
                    "total_tokens": 52,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            ),
        ),
    ],
)
def test_anthropic_response_to_openai(_case, resp, conv, expected):
    assert anthropic_response_to_openai(resp, conv, model="claude", created=1700000000) == expected


def a_expected(
    content: list, stop_reason: str, stop_sequence: str | None = None, usage: dict = A_USAGE_FROM_O, **top
) -> dict:
    return {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
        **top,
    }


@pytest.mark.parametrize(
    ("_case", "resp", "conv", "expected"),
    [
        (
            "edge 33: reasoning_content → unsigned thinking block before the text",
            o_completion({"content": "4", "reasoning_content": "2+2"}),
            Conversion(body={}),
            a_expected(
                [{"type": "thinking", "thinking": "2+2", "signature": ""}, {"type": "text", "text": "4"}],
                "end_turn",
            ),
        ),
        (
            "edge 33: reasoning under `reasoning`",
            o_completion({"content": "4", "reasoning": "2+2"}),
            Conversion(body={}),
            a_expected(
                [{"type": "thinking", "thinking": "2+2", "signature": ""}, {"type": "text", "text": "4"}],
                "end_turn",
            ),
        ),
        (
            "edge 33: reasoning under `reasoning_details`",
            o_completion(
                {
                    "content": "4",
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "2+"},
                        {"type": "reasoning.text", "text": "2"},
                    ],
                }
            ),
            Conversion(body={}),
            a_expected(
                [{"type": "thinking", "thinking": "2+2", "signature": ""}, {"type": "text", "text": "4"}],
                "end_turn",
            ),
        ),
        (
            "edge 37/§3.1: tool calls with finish_reason stop → tool_use; ids sanitized; names restored",
            o_completion(
                {
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "functions.Bash:0",
                            "type": "function",
                            "function": {"name": "Bash", "arguments": '{"cmd":"ls"}'},
                        },
                        {"type": "function", "function": {"name": "short_1", "arguments": ""}},
                    ],
                }
            ),
            Conversion(body={}, tool_names={"short_1": "long_original"}),
            a_expected(
                [
                    {"type": "tool_use", "id": "functions_Bash_0", "name": "Bash", "input": {"cmd": "ls"}},
                    {"type": "tool_use", "id": "toolu_0123456789abcdef01234567", "name": "long_original", "input": {}},
                ],
                "tool_use",
            ),
        ),
        (
            "empty completion → content []",
            o_completion({"content": ""}, "length"),
            Conversion(body={}),
            a_expected([], "max_tokens"),
        ),
        (
            "refusal string → text block and stop_reason refusal",
            o_completion({"content": None, "refusal": "I can't help with that."}),
            Conversion(body={}),
            a_expected([{"type": "text", "text": "I can't help with that."}], "refusal"),
        ),
        (
            "vLLM reveals the matched stop string",
            o_completion({"content": "a"}, stop_reason="END"),
            Conversion(body={}),
            a_expected([{"type": "text", "text": "a"}], "stop_sequence", "END"),
        ),
        (
            "edge 38: cached and cache-written tokens leave input_tokens",
            o_completion(
                {"content": "a"},
                usage={
                    "prompt_tokens": 2006,
                    "completion_tokens": 9,
                    "total_tokens": 2015,
                    "prompt_tokens_details": {"cached_tokens": 1920},
                    "completion_tokens_details": {"reasoning_tokens": 3},
                },
            ),
            Conversion(body={}),
            a_expected(
                [{"type": "text", "text": "a"}],
                "end_turn",
                usage={
                    "input_tokens": 86,
                    "cache_read_input_tokens": 1920,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 9,
                    "output_tokens_details": {"thinking_tokens": 3},
                },
            ),
        ),
    ],
)
def test_openai_response_to_anthropic(_case, resp, conv, expected):
    assert (
        openai_response_to_anthropic(resp, conv, model="claude", new_id=lambda: "toolu_0123456789abcdef01234567")
        == expected
    )


@pytest.mark.parametrize(
    ("_case", "upstream_id", "expected_id"),
    [
        ("prefixed", "chatcmpl-1", "msg_chatcmpl-1"),
        ("already msg_", "msg_abc", "msg_abc"),
        ("missing → fresh", None, "msg_0123456789abcdef01234567"),
    ],
)
def test_message_id(_case, upstream_id, expected_id):
    resp = {**o_completion({"content": "a"}), "id": upstream_id}

    out = openai_response_to_anthropic(
        resp, Conversion(body={}), model="claude", new_id=lambda: "toolu_0123456789abcdef01234567"
    )

    assert out["id"] == expected_id


@pytest.mark.parametrize(
    ("_case", "stop_reason", "expected"),
    [
        ("end_turn", "end_turn", "stop"),
        ("stop_sequence", "stop_sequence", "stop"),
        ("max_tokens", "max_tokens", "length"),
        ("edge 36: model_context_window_exceeded → length", "model_context_window_exceeded", "length"),
        ("tool_use", "tool_use", "tool_calls"),
        ("edge 36: refusal → content_filter", "refusal", "content_filter"),
        ("pause_turn", "pause_turn", "stop"),
        ("null", None, "stop"),
        ("unknown", "something_new", "stop"),
    ],
)
def test_anthropic_stop_reason_to_openai(_case, stop_reason, expected):
    assert anthropic_stop_reason_to_openai(stop_reason) == expected


@pytest.mark.parametrize(
    ("_case", "finish_reason", "expected"),
    [
        ("stop", "stop", "end_turn"),
        ("length", "length", "max_tokens"),
        ("tool_calls", "tool_calls", "tool_use"),
        ("function_call", "function_call", "tool_use"),
        ("edge 36: content_filter → refusal", "content_filter", "refusal"),
        ("null", None, "end_turn"),
        ("unknown", "eos", "end_turn"),
    ],
)
def test_openai_finish_reason_to_anthropic(_case, finish_reason, expected):
    assert openai_finish_reason_to_anthropic(finish_reason) == expected


def test_every_known_responses_field_is_forwarded_or_deliberately_kept_back():
    """The R fast path's allowlist (responses_pipeline.RESPONSES_FIELDS) and the fields the checker knows
    (KNOWN_FIELDS) cannot drift apart: a field added to one is forwarded or named here as kept back."""
    from proxy.responses_pipeline import RESPONSES_FIELDS
    from proxy.tests.mock_upstream import _RESPONSES_FIELDS as UPSTREAM_ACCEPTS
    from proxy.translate.responses_request import KNOWN_FIELDS

    kept_back = {
        "model",  # the route's upstream model replaces it
        "store", "previous_response_id",  # the gateway's own response store (R3)
        "stream_options",  # the gateway frames the client's stream itself
        # sent by current Codex CLI / Agents SDK versions: accepted, not forwarded
        "prompt_cache_options", "context_management", "moderation", "personality", "client_metadata",
    }  # fmt: skip
    assert RESPONSES_FIELDS <= KNOWN_FIELDS
    assert set(KNOWN_FIELDS - RESPONSES_FIELDS) == kept_back
    assert RESPONSES_FIELDS <= UPSTREAM_ACCEPTS  # the strict fake upstream (the API's own list) takes all of them
