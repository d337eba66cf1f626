"""A client → O upstream requests: PROTOCOLS §2.3–§2.8 and edge cases 20, 23, 25, 26, 31, 32, 37, 39."""

import hashlib

import pytest

from proxy.translate import TargetModel, TranslationError, anthropic_image_urls, anthropic_request_to_openai

GPT = TargetModel(upstream_model="gpt-up", thinking="budget")
PLAIN_GPT = TargetModel(upstream_model="gpt-up")  # no reasoning support
LONG_NAME = "mcp__" + "x" * 75  # 80 chars: A allows 128, O 64
SHORT_NAME = LONG_NAME[:55] + "_" + hashlib.sha256(LONG_NAME.encode()).hexdigest()[:8]


def convert(body: dict, target: TargetModel = GPT, **kwargs):
    return anthropic_request_to_openai({"model": "claude", "max_tokens": 100, **body}, target, **kwargs)


def user(content) -> dict:
    return {"role": "user", "content": content}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def tool_use(tool_id: str, name: str, tool_input: dict) -> dict:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


A_TOOL = {"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}
O_TOOL = {
    "type": "function",
    "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object"}},
}


@pytest.mark.parametrize(
    ("_case", "messages", "expected_messages"),
    [
        (
            "edge 20: tool results first, then the user text",
            [
                user("go"),
                {"role": "assistant", "content": [tool_use("t1", "weather", {}), tool_use("t2", "weather", {})]},
                user(
                    [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
                        text("go"),
                        {"type": "tool_result", "tool_use_id": "t2", "content": [text("r2a"), text("r2b")]},
                    ]
                ),
            ],
            [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
                        {"id": "t2", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "r1"},
                {"role": "tool", "tool_call_id": "t2", "content": "r2a\nr2b"},
                {"role": "user", "content": "go"},
            ],
        ),
        (
            "edge 26: tool_result with text + image → tool message, then a user message with the image",
            [
                user(
                    [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                text("screenshot taken"),
                                {
                                    "type": "image",
                                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                                },
                            ],
                        }
                    ]
                ),
            ],
            [
                {"role": "tool", "tool_call_id": "t1", "content": "screenshot taken"},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}],
                },
            ],
        ),
        (
            "is_error prefixes the tool text",
            [user([{"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}])],
            [{"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}],
        ),
        (
            "edge 25: base64 image → data URL, URL image → the URL, detail-free",
            [
                user(
                    [
                        text("compare"),
                        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklG"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}},
                    ]
                )
            ],
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "compare"},
                        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
                    ],
                }
            ],
        ),
        (
            "documents: PDF → file part, text source → text part; search_result → text part",
            [
                user(
                    [
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                        },
                        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
                        {"type": "search_result", "title": "T", "source": "https://s.test", "content": [text("found")]},
                    ]
                )
            ],
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                        },
                        {"type": "text", "text": "plain"},
                        {"type": "text", "text": "T\nhttps://s.test\nfound"},
                    ],
                }
            ],
        ),
        (
            "assistant: texts concatenated, thinking and server blocks dropped, arguments compact with non-ASCII kept",
            [
                user("q"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xx"},
                        text("Hello "),
                        text("world"),
                        {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
                        tool_use("toolu_1", "weather", {"city": "Zürich", "days": 2}),
                    ],
                },
            ],
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": "Hello world",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Zürich","days":2}'},
                        }
                    ],
                },
            ],
        ),
        (
            "an assistant turn of only thinking is dropped; a trailing prefill is passed as is",
            [
                user("q"),
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}]},
                user("again"),
                {"role": "assistant", "content": "The answer is"},
            ],
            [
                {"role": "user", "content": "q"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "The answer is"},
            ],
        ),
    ],
)
def test_messages(_case, messages, expected_messages):
    out = convert({"messages": messages, "tools": [A_TOOL]}).body

    assert out["messages"] == expected_messages


@pytest.mark.parametrize(
    ("_case", "fields", "target", "expected"),
    [
        (
            "edge 23: system blocks joined with a blank line, cache_control dropped",
            {
                "system": [
                    {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
                ]
            },
            GPT,
            {"messages": [{"role": "system", "content": "You are terse.\n\nAnswer in French."}, user("hi")]},
        ),
        (
            "system string",
            {"system": "Be nice."},
            GPT,
            {"messages": [{"role": "system", "content": "Be nice."}, user("hi")]},
        ),
        (
            "max_completion_tokens for providers that need it; clamped to the model max",
            {"max_tokens": 9000},
            TargetModel(upstream_model="gpt-up", max_tokens_field="max_completion_tokens", max_output_tokens=4096),
            {"max_completion_tokens": 4096, "max_tokens": None},
        ),
        ("edge 31: stop_sequences → stop array", {"stop_sequences": ["END"]}, GPT, {"stop": ["END"]}),
        ("stop keeps the first 4", {"stop_sequences": ["a", "b", "c", "d", "e"]}, GPT, {"stop": ["a", "b", "c", "d"]}),
        (
            "temperature and top_p passed, top_k dropped",
            {"temperature": 0.2, "top_p": 0.9, "top_k": 5},
            GPT,
            {"temperature": 0.2, "top_p": 0.9},
        ),
        (
            "stream asks for usage (G5)",
            {"stream": True},
            GPT,
            {"stream": True, "stream_options": {"include_usage": True}},
        ),
        (
            "stream without usage for providers that reject stream_options",
            {"stream": True},
            TargetModel(upstream_model="gpt-up", stream_usage=False),
            {"stream": True},
        ),
        ("metadata.user_id → user as its sha256 hex (M10)", {"metadata": {"user_id": "u-1"}}, GPT,
         {"user": "a24a7f55f278dd49fb1f99c5507800cb198a5bfe10fe2126cd0b25672152b0da"}),
        (
            "§2.8 drops",
            {
                "service_tier": "auto",
                "container": "c",
                "inference_geo": "eu",
                "cache_control": {"type": "ephemeral"},
                "top_k": 3,
            },
            GPT,
            {},
        ),
        ("edge 32: thinking disabled → no reasoning_effort", {"thinking": {"type": "disabled"}}, GPT, {}),
        (
            "edge 32: thinking disabled → none for reason-by-default providers",
            {"thinking": {"type": "disabled"}},
            TargetModel(upstream_model="gpt-up", thinking="budget", reasons_by_default=True),
            {"reasoning_effort": "none"},
        ),
        (
            "edge 32: budget 31999 → high",
            {"thinking": {"type": "enabled", "budget_tokens": 31999}},
            GPT,
            {"reasoning_effort": "high"},
        ),
        (
            "budget 1024 → low",
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
            GPT,
            {"reasoning_effort": "low"},
        ),
        (
            "budget 2048 → medium",
            {"thinking": {"type": "enabled", "budget_tokens": 2048}},
            GPT,
            {"reasoning_effort": "medium"},
        ),
        (
            "budget 4096 → high",
            {"thinking": {"type": "enabled", "budget_tokens": 4096}},
            GPT,
            {"reasoning_effort": "high"},
        ),
        (
            "adaptive + effort → the effort word",
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}},
            GPT,
            {"reasoning_effort": "max"},
        ),
        ("adaptive without effort → medium", {"thinking": {"type": "adaptive"}}, GPT, {"reasoning_effort": "medium"}),
        (
            "adaptive effort clamped to the provider's set",
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}},
            TargetModel(upstream_model="gpt-up", thinking="budget", reasoning_efforts=("low", "medium", "high")),
            {"reasoning_effort": "high"},
        ),
        (
            "a model without reasoning never receives reasoning_effort",
            {"thinking": {"type": "enabled", "budget_tokens": 4096}},
            PLAIN_GPT,
            {},
        ),
        (
            "output_config.format strict-compatible schema → strict true",
            {
                "output_config": {
                    "format": {
                        "type": "json_schema",
                        "schema": {
                            "type": "object",
                            "properties": {
                                "a": {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
                            },
                            "required": ["a"],
                            "additionalProperties": False,
                        },
                    }
                }
            },
            GPT,
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "structured_output",
                        "schema": {
                            "type": "object",
                            "properties": {
                                "a": {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
                            },
                            "required": ["a"],
                            "additionalProperties": False,
                        },
                        "strict": True,
                    },
                }
            },
        ),
        (
            "output_config.format with an open nested object → strict false",
            {
                "output_config": {
                    "format": {
                        "type": "json_schema",
                        "schema": {
                            "type": "object",
                            "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
                            "required": ["a"],
                            "additionalProperties": False,
                        },
                    }
                }
            },
            GPT,
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "structured_output",
                        "schema": {
                            "type": "object",
                            "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
                            "required": ["a"],
                            "additionalProperties": False,
                        },
                        "strict": False,
                    },
                }
            },
        ),
    ],
)
def test_top_level_fields(_case, fields, target, expected):
    out = convert({"messages": [user("hi")], **fields}, target).body

    base = {"model": "gpt-up", "messages": [user("hi")], target.max_tokens_field: 100}
    assert out == {key: value for key, value in {**base, **expected}.items() if value is not None}


@pytest.mark.parametrize(
    ("_case", "fields", "expected"),
    [
        (
            "edge 39: disable_parallel_tool_use without tools → parallel_tool_calls not sent",
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
            {},
        ),
        (
            "edge 39: disable_parallel_tool_use with tools → parallel_tool_calls false",
            {"tools": [A_TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
            {"tools": [O_TOOL], "tool_choice": "auto", "parallel_tool_calls": False},
        ),
        (
            "any → required",
            {"tools": [A_TOOL], "tool_choice": {"type": "any"}},
            {"tools": [O_TOOL], "tool_choice": "required"},
        ),
        ("none", {"tools": [A_TOOL], "tool_choice": {"type": "none"}}, {"tools": [O_TOOL], "tool_choice": "none"}),
        (
            "tool → function",
            {"tools": [A_TOOL], "tool_choice": {"type": "tool", "name": "weather"}},
            {"tools": [O_TOOL], "tool_choice": {"type": "function", "function": {"name": "weather"}}},
        ),
        (
            "only the schema is copied, never A-only keys",
            {
                "tools": [
                    {
                        "type": "custom",
                        "name": "weather",
                        "description": "Weather",
                        "input_schema": {"type": "object"},
                        "cache_control": {"type": "ephemeral"},
                        "defer_loading": True,
                        "input_examples": [{}],
                        "strict": True,
                    }
                ]
            },
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "weather",
                            "description": "Weather",
                            "parameters": {"type": "object"},
                            "strict": True,
                        },
                    }
                ]
            },
        ),
        (
            "web search server tool → web_search_options where supported",
            {"tools": [A_TOOL, {"type": "web_search_20250305", "name": "web_search"}]},
            {"tools": [O_TOOL], "web_search_options": {}},
        ),
    ],
)
def test_tools(_case, fields, expected):
    target = TargetModel(upstream_model="gpt-up", web_search=True)

    out = convert({"messages": [user("hi")], **fields}, target).body

    assert out == {"model": "gpt-up", "messages": [user("hi")], "max_tokens": 100, **expected}


def test_edge_37_long_tool_name_aliased_everywhere_and_mapped_back():
    body = {
        "messages": [
            user("go"),
            {"role": "assistant", "content": [tool_use("toolu_1", LONG_NAME, {})]},
            user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]),
        ],
        "tools": [{"name": LONG_NAME, "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": LONG_NAME},
    }

    conv = convert(body)

    assert len(SHORT_NAME) == 64
    assert conv.body["tools"] == [
        {"type": "function", "function": {"name": SHORT_NAME, "parameters": {"type": "object"}}}
    ]
    assert conv.body["tool_choice"] == {"type": "function", "function": {"name": SHORT_NAME}}
    assert conv.body["messages"][1]["tool_calls"][0]["function"]["name"] == SHORT_NAME
    assert conv.tool_names == {SHORT_NAME: LONG_NAME}


def test_url_image_inlined_for_providers_without_url_support():
    target = TargetModel(upstream_model="gpt-up", image_urls=False)
    body = {"messages": [user([{"type": "image", "source": {"type": "url", "url": "https://x.test/a.gif"}}])]}

    out = convert(body, target, inline_images={"https://x.test/a.gif": ("image/gif", "R0lG")}).body

    assert out["messages"] == [user([{"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}}])]


@pytest.mark.parametrize(
    ("_case", "fields", "target", "expected_param"),
    [
        ("max_tokens missing", {"max_tokens": None}, GPT, "max_tokens"),
        ("max_tokens 0 (cache pre-warm)", {"max_tokens": 0}, GPT, "max_tokens"),
        ("mcp_servers", {"mcp_servers": [{"type": "url", "url": "https://m.test", "name": "m"}]}, GPT, "mcp_servers"),
        (
            "server tool other than web search",
            {"tools": [{"type": "code_execution_20250522", "name": "code"}]},
            GPT,
            "tools[0].type",
        ),
        (
            "web search on a provider without it",
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            GPT,
            "tools[0].type",
        ),
        (
            "PDF on a provider without file support",
            {
                "messages": [
                    user(
                        [
                            {
                                "type": "document",
                                "source": {"type": "base64", "media_type": "application/pdf", "data": "J"},
                            }
                        ]
                    )
                ]
            },
            TargetModel(upstream_model="gpt-up", documents=False),
            "messages[0].content[0].source",
        ),
        (
            "URL image on a provider without URL support and no downloaded copy",
            {"messages": [user([{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}])]},
            TargetModel(upstream_model="gpt-up", image_urls=False),
            "messages[0].content[0].source.url",
        ),
        ("unknown role inside messages", {"messages": [{"role": "tool", "content": "x"}]}, GPT, "messages[0].role"),
        ("stop_sequences as a string", {"stop_sequences": "END"}, GPT, "stop_sequences"),
        ("tools not an array of objects", {"tools": {"name": "f"}}, GPT, "tools"),
        ("tool_use in a user turn", {"messages": [user([tool_use("t", "f", {})])]}, GPT, "messages[0].content[0].type"),
    ],
)
def test_rejected_before_upstream(_case, fields, target, expected_param):
    with pytest.raises(TranslationError) as caught:
        convert({"messages": [user("hi")], **fields}, target)

    assert caught.value.param == expected_param


def test_n_is_never_sent_and_input_is_estimated():
    conv = convert({"messages": [user("hello there")]})

    # "hello there" = 11 bytes → 3 tokens, + 4 per message
    assert (conv.body, conv.input_estimate) == (
        {"model": "gpt-up", "messages": [user("hello there")], "max_tokens": 100},
        7,
    )


def test_anthropic_image_urls_lists_urls_to_download_once():
    image = {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
    body = {
        "messages": [
            user(
                [
                    text("a"),
                    image,
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "i"}},
                ]
            ),
            user(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [image, {**image, "source": {"type": "url", "url": "https://x.test/b.png"}}],
                    }
                ]
            ),
        ]
    }

    assert anthropic_image_urls(body) == ["https://x.test/a.png", "https://x.test/b.png"]
