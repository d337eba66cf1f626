"""Automatic prompt-cache breakpoints for O clients on A upstreams (issue 14 item 5): proxy/translate/caching.py."""

import pytest

from proxy.translate import TargetModel, openai_request_to_anthropic
from proxy.translate.caching import anthropic_auto_cache

CC = {"type": "ephemeral"}


def text(value: str, **extra) -> dict:
    return {"type": "text", "text": value, **extra}


@pytest.mark.parametrize(
    ("_case", "body", "expected"),
    [
        (
            "first turn: tools, system, the prompt",
            {"tools": [{"name": "a"}, {"name": "b"}], "system": "sys", "messages": [{"role": "user", "content": "q"}]},
            {"tools": [{"name": "a"}, {"name": "b", "cache_control": CC}], "system": [text("sys", cache_control=CC)],
             "messages": [{"role": "user", "content": [text("q", cache_control=CC)]}]},
        ),
        (
            "second turn: the previous prompt is read back, the new one written",
            {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                          {"role": "user", "content": [text("q2"), text("q3")]}]},
            {"messages": [{"role": "user", "content": [text("q1", cache_control=CC)]},
                          {"role": "assistant", "content": "a1"},
                          {"role": "user", "content": [text("q2"), text("q3", cache_control=CC)]}]},
        ),
        (
            "a tool result turn: its last block",
            {"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}]},
            {"messages": [{"role": "user", "content": [text("q", cache_control=CC)]},
                          {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r",
                                                        "cache_control": CC}]}]},
        ),
        (
            "existing breakpoints count: at most four in all",
            {"system": [text("s1", cache_control=CC), text("s2", cache_control=CC), text("s3", cache_control=CC)],
             "tools": [{"name": "a"}],
             "messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                          {"role": "user", "content": "q2"}]},
            {"system": [text("s1", cache_control=CC), text("s2", cache_control=CC), text("s3", cache_control=CC)],
             "tools": [{"name": "a"}],
             "messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                          {"role": "user", "content": [text("q2", cache_control=CC)]}]},
        ),
        (
            "a thinking block is skipped for an earlier one",
            {"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": [text("pre"), {"type": "thinking", "thinking": "t",
                                                                          "signature": "s"}]}]},
            {"messages": [{"role": "user", "content": [text("q", cache_control=CC)]},
                          {"role": "assistant", "content": [text("pre", cache_control=CC),
                                                            {"type": "thinking", "thinking": "t", "signature": "s"}]}]},
        ),
    ],
)  # fmt: skip
def test_auto_cache(_case, body, expected):
    assert anthropic_auto_cache(body) == expected


def test_openai_request_gets_breakpoints_only_with_the_flag():
    body = {"model": "m", "max_tokens": 10, "prompt_cache_key": "conv-1",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]}  # fmt: skip
    plain = openai_request_to_anthropic(body, TargetModel(upstream_model="c")).body
    cached = openai_request_to_anthropic(body, TargetModel(upstream_model="c", auto_cache=True)).body
    assert plain == {"model": "c", "max_tokens": 10, "system": "sys", "messages": [{"role": "user", "content": "q"}]}
    assert cached == {
        "model": "c",
        "max_tokens": 10,
        "system": [text("sys", cache_control=CC)],
        "messages": [{"role": "user", "content": [text("q", cache_control=CC)]}],
    }  # prompt_cache_key has no A field: not sent
