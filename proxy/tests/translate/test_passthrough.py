"""Same-protocol routes and the thinking provenance rule: PROTOCOLS G5, §3.5, §4.3 and edge cases 15, 35."""

import pytest

from proxy.translate import (
    TargetModel,
    anthropic_request_to_anthropic,
    anthropic_thinking_filter,
    openai_chunk_for_client,
    openai_request_to_openai,
)

SIGNED = {"type": "thinking", "thinking": "real", "signature": "EqQBCkYIBxgCKkA"}
UNSIGNED = {"type": "thinking", "thinking": "synthesized from reasoning_content", "signature": ""}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgB"}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}


def history(*assistant_turns: list) -> dict:
    messages: list = [{"role": "user", "content": "q"}]
    for content in assistant_turns:
        messages += [{"role": "assistant", "content": content}, {"role": "user", "content": "more"}]
    return {"model": "claude", "max_tokens": 100, "messages": messages}


def test_edge_35_unsigned_thinking_dropped_signed_forwarded_untouched():
    # given one turn replaying a gateway-synthesized block and one with a real signed block
    body = history([UNSIGNED, {"type": "text", "text": "a"}], [SIGNED, REDACTED, TOOL_USE])

    # when
    out = anthropic_thinking_filter(body)

    # then
    assert out["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": [SIGNED, REDACTED, TOOL_USE]},
        {"role": "user", "content": "more"},
    ]
    assert out["messages"][3] is body["messages"][3]  # byte-identical: the very same object
    assert body["messages"][1]["content"][0] is UNSIGNED  # input not mutated


@pytest.mark.parametrize(
    ("_case", "body", "accept_signature", "expected_messages"),
    [
        ("nothing to drop → the same body object", history([SIGNED]), None, None),
        (
            "a turn of only unsigned thinking disappears",
            history([UNSIGNED]),
            None,
            [{"role": "user", "content": "q"}, {"role": "user", "content": "more"}],
        ),
        (
            "signature from another model rejected by the caller",
            history([SIGNED, {"type": "text", "text": "a"}]),
            lambda block: False,
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
                {"role": "user", "content": "more"},
            ],
        ),
    ],
)
def test_thinking_filter_variants(_case, body, accept_signature, expected_messages):
    out = anthropic_thinking_filter(body, accept_signature=accept_signature)

    if expected_messages is None:
        assert out is body
    else:
        assert out == {**body, "messages": expected_messages}


def test_anthropic_request_to_anthropic_renames_model_and_filters():
    conv = anthropic_request_to_anthropic(
        {**history([UNSIGNED, {"type": "text", "text": "a"}]), "anthropic_beta_field": 1},
        TargetModel(upstream_model="claude-up"),
    )

    assert conv.body == {
        "model": "claude-up",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
            {"role": "user", "content": "more"},
        ],
        "anthropic_beta_field": 1,  # same-protocol pass-through MAY forward unknown fields (G1)
    }
    assert conv.input_estimate == 4 + 1 + 4 + 1 + 4 + 1


@pytest.mark.parametrize(
    ("_case", "body", "target", "expected"),
    [
        (
            "edge 15: client without include_usage → upstream still asked for usage",
            {"model": "gpt", "messages": [], "stream": True},
            TargetModel(upstream_model="gpt-up"),
            {"model": "gpt-up", "messages": [], "stream": True, "stream_options": {"include_usage": True}},
        ),
        (
            "other stream_options kept",
            {"model": "gpt", "messages": [], "stream": True, "stream_options": {"include_obfuscation": False}},
            TargetModel(upstream_model="gpt-up"),
            {
                "model": "gpt-up",
                "messages": [],
                "stream": True,
                "stream_options": {"include_obfuscation": False, "include_usage": True},
            },
        ),
        (
            "provider that rejects stream_options",
            {"model": "gpt", "messages": [], "stream": True},
            TargetModel(upstream_model="gpt-up", stream_usage=False),
            {"model": "gpt-up", "messages": [], "stream": True},
        ),
        (
            "max_tokens renamed for providers that need max_completion_tokens",
            {"model": "gpt", "messages": [], "max_tokens": 10, "seed": 1},
            TargetModel(upstream_model="gpt-up", max_tokens_field="max_completion_tokens"),
            {"model": "gpt-up", "messages": [], "max_completion_tokens": 10, "seed": 1},
        ),
        (
            "max_completion_tokens renamed for providers that only know max_tokens",
            {"model": "gpt", "messages": [], "max_completion_tokens": 10},
            TargetModel(upstream_model="gpt-up"),
            {"model": "gpt-up", "messages": [], "max_tokens": 10},
        ),
    ],
)
def test_openai_request_to_openai(_case, body, target, expected):
    assert openai_request_to_openai(body, target).body == expected


CONTENT_CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"content": "a"}}],
    "usage": None,
}
USAGE_CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@pytest.mark.parametrize(
    ("_case", "chunk", "include_usage", "expected"),
    [
        ("edge 15: the usage-only chunk is withheld", USAGE_CHUNK, False, None),
        (
            "edge 15: usage:null keys stripped",
            CONTENT_CHUNK,
            False,
            {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "a"}}]},
        ),
        ("client asked: usage chunk relayed", USAGE_CHUNK, True, USAGE_CHUNK),
        ("client asked: content chunk untouched", CONTENT_CHUNK, True, CONTENT_CHUNK),
        ("error chunks always relayed", {"error": {"message": "x"}}, False, {"error": {"message": "x"}}),
    ],
)
def test_openai_chunk_for_client(_case, chunk, include_usage, expected):
    assert openai_chunk_for_client(chunk, include_usage=include_usage) == expected
