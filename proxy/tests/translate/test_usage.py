"""Usage normalization and local estimates: PROTOCOLS G6, §3.2 and edge cases 13, 38."""

import pytest

from proxy.translate import (
    Usage,
    estimate_anthropic_prompt_tokens,
    estimate_openai_prompt_tokens,
    estimate_text_tokens,
    usage_from_anthropic,
    usage_from_openai,
    usage_merge_anthropic,
    usage_to_anthropic,
    usage_to_openai,
)


@pytest.mark.parametrize(
    ("_case", "usage", "expected"),
    [
        (
            "edge 38: prompt 2006, cached 1920 → input 86",
            {
                "prompt_tokens": 2006,
                "completion_tokens": 50,
                "total_tokens": 2056,
                "prompt_tokens_details": {"cached_tokens": 1920},
            },
            Usage(input_tokens=86, cache_read_tokens=1920, output_tokens=50),
        ),
        (
            "edge 38: cache_write_tokens 400 → cache write",
            {
                "prompt_tokens": 2406,
                "completion_tokens": 50,
                "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 400},
                "completion_tokens_details": {"reasoning_tokens": 20},
            },
            Usage(
                input_tokens=86, cache_read_tokens=1920, cache_write_tokens=400, output_tokens=50, reasoning_tokens=20
            ),
        ),
        (
            "nulls count as 0",
            {"prompt_tokens": 10, "completion_tokens": None, "prompt_tokens_details": None},
            Usage(input_tokens=10),
        ),
        (
            "cache larger than prompt never goes negative",
            {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}},
            Usage(cache_read_tokens=9),
        ),
        ("missing", None, Usage()),
    ],
)
def test_usage_from_openai(_case, usage, expected):
    assert usage_from_openai(usage) == expected


@pytest.mark.parametrize(
    ("_case", "usage", "expected"),
    [
        (
            "edge 38: input 10, cache read 2000, cache creation 400",
            {
                "input_tokens": 10,
                "cache_read_input_tokens": 2000,
                "cache_creation_input_tokens": 400,
                "output_tokens": 7,
            },
            Usage(input_tokens=10, cache_read_tokens=2000, cache_write_tokens=400, output_tokens=7),
        ),
        (
            "thinking tokens and null cache fields",
            {
                "input_tokens": 3,
                "cache_read_input_tokens": None,
                "output_tokens": 9,
                "output_tokens_details": {"thinking_tokens": 4},
            },
            Usage(input_tokens=3, output_tokens=9, reasoning_tokens=4),
        ),
        ("missing", None, Usage()),
    ],
)
def test_usage_from_anthropic(_case, usage, expected):
    assert usage_from_anthropic(usage) == expected


@pytest.mark.parametrize(
    ("_case", "delta_usage", "expected"),
    [
        (
            "edge 13: output overwritten, input kept",
            {"output_tokens": 15},
            Usage(input_tokens=25, cache_read_tokens=100, output_tokens=15),
        ),
        (
            "edge 13: repeated input/cache values overwrite, not add",
            {"input_tokens": 25, "cache_read_input_tokens": 100, "output_tokens": 15},
            Usage(input_tokens=25, cache_read_tokens=100, output_tokens=15),
        ),
        (
            "null input/cache values leave the current ones",
            {
                "input_tokens": None,
                "cache_read_input_tokens": None,
                "cache_creation_input_tokens": None,
                "output_tokens": 15,
            },
            Usage(input_tokens=25, cache_read_tokens=100, output_tokens=15),
        ),
        (
            "non-null values overwrite",
            {
                "input_tokens": 30,
                "cache_creation_input_tokens": 7,
                "output_tokens": 15,
                "output_tokens_details": {"thinking_tokens": 5},
            },
            Usage(input_tokens=30, cache_read_tokens=100, cache_write_tokens=7, output_tokens=15, reasoning_tokens=5),
        ),
    ],
)
def test_usage_merge_anthropic(_case, delta_usage, expected):
    current = Usage(input_tokens=25, cache_read_tokens=100, output_tokens=1)

    assert usage_merge_anthropic(current, delta_usage) == expected
    assert current == Usage(input_tokens=25, cache_read_tokens=100, output_tokens=1)  # not mutated


@pytest.mark.parametrize(
    ("_case", "usage", "expected_openai", "expected_anthropic"),
    [
        (
            "edge 38: A → O prompt_tokens 2410, cached 2000",
            Usage(input_tokens=10, cache_read_tokens=2000, cache_write_tokens=400, output_tokens=7),
            {
                "prompt_tokens": 2410,
                "completion_tokens": 7,
                "total_tokens": 2417,
                "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 400},
            },
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": 400,
                "cache_read_input_tokens": 2000,
                "output_tokens": 7,
            },
        ),
        (
            "reasoning tokens in both details",
            Usage(input_tokens=5, output_tokens=9, reasoning_tokens=4),
            {
                "prompt_tokens": 5,
                "completion_tokens": 9,
                "total_tokens": 14,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
            {
                "input_tokens": 5,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 9,
                "output_tokens_details": {"thinking_tokens": 4},
            },
        ),
        (
            "zeros: both A cache fields still present",
            Usage(),
            {
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
            {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0},
        ),
    ],
)
def test_usage_rendering(_case, usage, expected_openai, expected_anthropic):
    assert usage_to_openai(usage) == expected_openai
    assert usage_to_anthropic(usage) == expected_anthropic


def test_round_trips_keep_normalized_usage():
    usage = Usage(
        input_tokens=86, cache_read_tokens=1920, cache_write_tokens=400, output_tokens=50, reasoning_tokens=20
    )

    assert usage_from_openai(usage_to_openai(usage)) == usage
    assert usage_from_anthropic(usage_to_anthropic(usage)) == usage
    assert usage.prompt_tokens == 2406


@pytest.mark.parametrize(
    ("_case", "text", "expected"),
    [
        ("empty", "", 0),
        ("one byte", "a", 1),
        ("four bytes", "abcd", 1),
        ("five bytes", "abcde", 2),
        ("cyrillic: 2 bytes each", "привет", 3),
    ],
)
def test_estimate_text_tokens(_case, text, expected):
    assert estimate_text_tokens(text) == expected


def test_estimate_openai_prompt_tokens():
    body = {
        "messages": [
            {"role": "system", "content": "abcd"},  # 4 + 1
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcdefgh"},  # 2
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},  # 1000
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}},  # 3000
                ],
            },  # + 4
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
            },  # 4 + 1 + 1
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],  # 45 bytes → 12
    }

    assert estimate_openai_prompt_tokens(body) == 5 + 4 + 2 + 1000 + 3000 + 6 + 12


def test_estimate_anthropic_prompt_tokens():
    body = {
        "system": [{"type": "text", "text": "abcd"}],  # 1
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},  # 1000
                    {"type": "document", "source": {"type": "text", "data": "abcdefgh"}},  # 2
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "abc"}]},  # 1
                ],
            },  # + 4
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
            },  # 4 + 1 + 2
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],  # 46 bytes → 12
    }

    assert estimate_anthropic_prompt_tokens(body) == 1 + 1000 + 2 + 1 + 4 + 4 + 1 + 2 + 12


def test_estimates_tolerate_malformed_bodies():
    assert estimate_openai_prompt_tokens({"messages": ["junk", {"content": 5, "tool_calls": ["x"]}]}) == 4
    assert estimate_anthropic_prompt_tokens({"messages": "junk"}) == 0


@pytest.mark.parametrize(
    ("_case", "usage", "searches", "fetches", "estimated"),
    [
        ("reported", {"input_tokens": 5, "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1}},
         2, 1, False),
        ("absent", {"input_tokens": 5}, 0, 0, False),
        ("malformed counts 0", {"input_tokens": 5, "server_tool_use": {"web_search_requests": "2"}}, 0, 0, True),
        ("absurd is capped", {"input_tokens": 5, "server_tool_use": {"web_search_requests": 10**9}}, 1000, 0, True),
    ],
)  # fmt: skip
def test_server_tool_use_from_anthropic(_case, usage, searches, fetches, estimated):
    parsed = usage_from_anthropic(usage)
    assert (parsed.web_search_requests, parsed.web_fetch_requests, parsed.estimated) == (searches, fetches, estimated)
    assert parsed.input_tokens == 5


def test_server_tool_use_merged_from_message_delta():
    start = usage_from_anthropic({"input_tokens": 5, "output_tokens": 1})
    merged = usage_merge_anthropic(start, {"output_tokens": 9, "server_tool_use": {"web_search_requests": 3}})
    assert (merged.input_tokens, merged.output_tokens, merged.web_search_requests, merged.web_fetch_requests) == (
        5, 9, 3, 0,
    )  # fmt: skip
