"""O client → A upstream requests: PROTOCOLS §2.1, §2.2, §2.5–§2.8 and edge cases 19, 21, 22, 24, 27–30, 37."""

import pytest

from proxy.translate import TargetModel, TranslationError, openai_image_urls, openai_request_to_anthropic

CLAUDE = TargetModel(upstream_model="claude-up", max_output_tokens=64000, default_max_tokens=32000, thinking="budget")


def convert(body: dict, target: TargetModel = CLAUDE, **kwargs) -> dict:
    return openai_request_to_anthropic({"model": "claude", **body}, target, **kwargs).body


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
A_WEATHER_TOOL = {"name": "weather", "input_schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("_case", "messages", "expected_system", "expected_messages"),
    [
        (
            "edge 22: system at 0, developer at 3, system at 5 hoisted in order",
            [
                {"role": "system", "content": "S0"},
                user("u1"),
                {"role": "assistant", "content": "a2"},
                {"role": "developer", "content": [{"type": "text", "text": "D3"}], "name": "dev"},
                user("u4"),
                {"role": "system", "content": "S5"},
                {"role": "assistant", "content": "a6"},
            ],
            "S0\nD3\nS5",
            [user("u1"), {"role": "assistant", "content": "a2"}, user("u4"), {"role": "assistant", "content": "a6"}],
        ),
        (
            "edge 19: results of parallel calls and the next user text in one user turn",
            [
                user("go"),
                {"role": "assistant", "content": None, "tool_calls": [call("c1", "f", "{}"), call("c2", "g", "{}")]},
                {"role": "tool", "tool_call_id": "c1", "content": "r1"},
                {"role": "tool", "tool_call_id": "c2", "content": "r2"},
                user("next"),
            ],
            None,
            [
                user("go"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                        {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                        {"type": "tool_result", "tool_use_id": "c2", "content": "r2"},
                        {"type": "text", "text": "next"},
                    ],
                },
            ],
        ),
        (
            "user text before a tool message: tool_result moved to the front",
            [
                {"role": "assistant", "content": "", "tool_calls": [call("c1", "f", "{}")]},
                user("wait"),
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r1"}]},
            ],
            None,
            [
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "r1"}]},
                        {"type": "text", "text": "wait"},
                    ],
                },
            ],
        ),
        (
            "edge 21: assistant content '' or null plus tool_calls → only tool_use blocks",
            [
                user("go"),
                {"role": "assistant", "content": "", "tool_calls": [call("c1", "f", "{}")]},
                {"role": "tool", "tool_call_id": "c1", "content": "r1"},
                {"role": "assistant", "content": None, "tool_calls": [call("c2", "f", "{}")]},
                {"role": "tool", "tool_call_id": "c2", "content": ""},
            ],
            None,
            [
                user("go"),
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "r1"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c2", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c2"}]},
            ],
        ),
        (
            "edge 28: empty, invalid and non-object arguments never drop the tool_use",
            [
                user("go"),
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "calling"}],
                    "tool_calls": [call("c1", "f", ""), call("c2", "f", '{"a": '), call("c3", "f", "[1, 2]")],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "r1"},
                {"role": "tool", "tool_call_id": "c2", "content": "r2"},
                {"role": "tool", "tool_call_id": "c3", "content": "r3"},
            ],
            None,
            [
                user("go"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                        {"type": "tool_use", "id": "c2", "name": "f", "input": {}},
                        {"type": "tool_use", "id": "c3", "name": "f", "input": {"value": [1, 2]}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                        {"type": "tool_result", "tool_use_id": "c2", "content": "r2"},
                        {"type": "tool_result", "tool_use_id": "c3", "content": "r3"},
                    ],
                },
            ],
        ),
        (
            "edge 37: Kimi-style ids sanitized identically in tool_use and tool_result; collisions kept apart",
            [
                user("go"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call("functions.Bash:0", "Bash", "{}"), call("functions.Bash_0", "Bash", "{}")],
                },
                {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "r1"},
                {"role": "tool", "tool_call_id": "functions.Bash_0", "content": "r2"},
            ],
            None,
            [
                user("go"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "functions_Bash_0", "name": "Bash", "input": {}},
                        {"type": "tool_use", "id": "functions_Bash_0_2", "name": "Bash", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "functions_Bash_0", "content": "r1"},
                        {"type": "tool_result", "tool_use_id": "functions_Bash_0_2", "content": "r2"},
                    ],
                },
            ],
        ),
        (
            "empty and whitespace-only turns are removed, then neighbours merged, no placeholder",
            [
                user("a"),
                {"role": "assistant", "content": "  "},
                user(""),
                {"role": "user", "content": [{"type": "text", "text": " "}, {"type": "text", "text": "b"}]},
            ],
            None,
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        ),
        (
            "reasoning_content on an assistant message is dropped; refusal kept as text; final assistant is a prefill",
            [
                user("q"),
                {"role": "assistant", "content": "no", "reasoning_content": "hmm", "refusal": "I can't"},
                user("please"),
                {"role": "assistant", "content": "Sure:"},
            ],
            None,
            [
                user("q"),
                {"role": "assistant", "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "I can't"}]},
                user("please"),
                {"role": "assistant", "content": "Sure:"},
            ],
        ),
        (
            "legacy function_call and function role become tool_use / tool_result",
            [
                user("go"),
                {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"x":1}'}},
                {"role": "function", "name": "f", "content": "done"},
            ],
            None,
            [
                user("go"),
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "done"}]},
            ],
        ),
        (
            "a generated legacy id never captures a later client id",
            [
                user("go"),
                {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                {"role": "function", "name": "f", "content": "done"},
                {"role": "assistant", "content": None, "tool_calls": [call("call_1", "g", "{}")]},
                {"role": "tool", "tool_call_id": "call_1", "content": "r"},
            ],
            None,
            [
                user("go"),
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "done"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1_2", "name": "g", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1_2", "content": "r"}]},
            ],
        ),
    ],
)
def test_messages(_case, messages, expected_system, expected_messages):
    # given a request with tools, so no tools are reconstructed from history
    body = {"messages": messages, "tools": [WEATHER_TOOL]}

    # when
    out = convert(body)

    # then
    assert out.get("system") == expected_system
    assert out["messages"] == expected_messages


def test_edge_27_tools_in_history_without_tools_are_reconstructed_with_tool_choice_none():
    body = {
        "messages": [
            user("go"),
            {"role": "assistant", "content": None, "tool_calls": [call("c1", "weather", '{"city":"Oslo"}')]},
            {"role": "tool", "tool_call_id": "c1", "content": "rain"},
            user("thanks"),
        ],
    }

    assert convert(body) == {
        "model": "claude-up",
        "max_tokens": 32000,
        "messages": [
            user("go"),
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Oslo"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "rain"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [A_WEATHER_TOOL],
        "tool_choice": {"type": "none"},
    }


@pytest.mark.parametrize(
    ("_case", "part", "target", "inline_images", "expected_block"),
    [
        (
            "edge 24: data:image/jpg normalized to image/jpeg",
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAAA", "detail": "high"}},
            CLAUDE,
            {},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
        ),
        (
            "edge 24: https URL → url source",
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            CLAUDE,
            {},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        ),
        (
            "edge 24: provider without URL support → the caller's downloaded copy inlined as base64",
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            TargetModel(upstream_model="claude-up", image_urls=False),
            {"https://example.com/cat.png": ("image/png", "iVBO")},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        ),
        (
            "PDF file part → base64 document",
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            CLAUDE,
            {},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
        ),
    ],
)
def test_user_media(_case, part, target, inline_images, expected_block):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, part]}]}

    out = convert(body, target, inline_images=inline_images)

    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "look"}, expected_block]}]


@pytest.mark.parametrize(
    ("_case", "body", "target", "expected_param", "expected_code"),
    [
        ("edge 30: n=2", {"n": 2}, CLAUDE, "n", "unsupported_value"),
        (
            "edge 24: svg image",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2"}}],
                    }
                ]
            },
            CLAUDE,
            "messages[0].content[0].image_url.url",
            "unsupported_value",
        ),
        (
            "edge 24: URL image for a provider without URL support and no downloaded copy",
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}
                ]
            },
            TargetModel(upstream_model="claude-up", image_urls=False),
            "messages[0].content[0]",
            "unsupported_value",
        ),
        (
            "input_audio part",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
                    }
                ]
            },
            CLAUDE,
            "messages[0].content[0]",
            "unsupported_parameter",
        ),
        (
            "file_id",
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
            CLAUDE,
            "messages[0].content[0].file.file_id",
            "unsupported_parameter",
        ),
        ("audio output", {"modalities": ["text", "audio"]}, CLAUDE, "modalities", "unsupported_parameter"),
        (
            "custom tools",
            {"tools": [{"type": "custom", "custom": {"name": "grammar"}}]},
            CLAUDE,
            "tools[0].type",
            "unsupported_parameter",
        ),
        (
            "function role without a resolvable call",
            {"messages": [user("a"), {"role": "function", "name": "f", "content": "x"}]},
            CLAUDE,
            "messages[1].name",
            None,
        ),
        ("no messages", {"messages": []}, CLAUDE, "messages", None),
        ("only empty messages", {"messages": [user(" ")]}, CLAUDE, "messages", None),
        ("unknown role", {"messages": [{"role": "robot", "content": "x"}]}, CLAUDE, "messages[0].role", None),
        ("max_tokens 0", {"max_tokens": 0}, CLAUDE, "max_tokens", "invalid_value"),
        ("unknown reasoning_effort", {"reasoning_effort": "extreme"}, CLAUDE, "reasoning_effort", "invalid_value"),
    ],
)
def test_rejected_before_upstream(_case, body, target, expected_param, expected_code):
    with pytest.raises(TranslationError) as caught:
        convert({"messages": [user("hi")], **body}, target)

    assert (caught.value.param, caught.value.code, caught.value.status_for("openai")) == (
        expected_param,
        expected_code,
        400,
    )


@pytest.mark.parametrize(
    ("_case", "fields", "target", "expected"),
    [
        ("edge 29: no max_tokens → catalog default", {}, CLAUDE, {"max_tokens": 32000}),
        (
            "no catalog default → model max output",
            {},
            TargetModel(upstream_model="claude-up", max_output_tokens=8192),
            {"max_tokens": 8192},
        ),
        ("nothing known → 4096", {}, TargetModel(upstream_model="claude-up"), {"max_tokens": 4096}),
        ("clamped to the model max", {"max_completion_tokens": 100000}, CLAUDE, {"max_tokens": 64000}),
        (
            "max_completion_tokens preferred over max_tokens",
            {"max_completion_tokens": 300, "max_tokens": 200},
            CLAUDE,
            {"max_tokens": 300},
        ),
        (
            "edge 29: high effort with max_tokens 1000 → max_tokens raised above the budget, temperature removed",
            {"reasoning_effort": "high", "max_tokens": 1000, "temperature": 0.5, "top_p": 0.5},
            CLAUDE,
            {"max_tokens": 8192, "thinking": {"type": "enabled", "budget_tokens": 4096}, "top_p": 0.95},
        ),
        (
            "budget fits: max_tokens kept",
            {"reasoning_effort": "low", "max_tokens": 5000},
            CLAUDE,
            {"max_tokens": 5000, "thinking": {"type": "enabled", "budget_tokens": 1024}},
        ),
        (
            "model max below the budget: budget lowered",
            {"reasoning_effort": "max", "max_tokens": 1000},
            TargetModel(upstream_model="claude-up", max_output_tokens=8192, thinking="budget"),
            {"max_tokens": 8192, "thinking": {"type": "enabled", "budget_tokens": 4096}},
        ),
        (
            "model max too small for any budget: thinking dropped",
            {"reasoning_effort": "low", "max_tokens": 1000},
            TargetModel(upstream_model="claude-up", max_output_tokens=1024, thinking="budget"),
            {"max_tokens": 1000},
        ),
        ("effort none → no thinking", {"reasoning_effort": "none"}, CLAUDE, {"max_tokens": 32000}),
        (
            "model without thinking ignores the effort",
            {"reasoning_effort": "high", "max_tokens": 100},
            TargetModel(upstream_model="claude-up"),
            {"max_tokens": 100},
        ),
        (
            "adaptive model: thinking adaptive + output_config.effort",
            {"reasoning_effort": "xhigh", "max_tokens": 100},
            TargetModel(upstream_model="claude-up", thinking="adaptive"),
            {"max_tokens": 100, "thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}},
        ),
        (
            "non-standard thinking object accepted verbatim",
            {"thinking": {"type": "enabled", "budget_tokens": 2000}, "max_tokens": 3000},
            CLAUDE,
            {"max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2000}},
        ),
        (
            "edge 30: temperature 1.7 → 1.0",
            {"temperature": 1.7, "max_tokens": 10},
            CLAUDE,
            {"max_tokens": 10, "temperature": 1.0},
        ),
        ("top_p passed", {"top_p": 0.3, "max_tokens": 10}, CLAUDE, {"max_tokens": 10, "top_p": 0.3}),
        ("edge 30: stop ' ' → no stop_sequences", {"stop": " ", "max_tokens": 10}, CLAUDE, {"max_tokens": 10}),
        (
            "stop string → one-element array; whitespace entries dropped",
            {"stop": ["END", "\n", "##"], "max_tokens": 10},
            CLAUDE,
            {"max_tokens": 10, "stop_sequences": ["END", "##"]},
        ),
        ("stop string", {"stop": "END", "max_tokens": 10}, CLAUDE, {"max_tokens": 10, "stop_sequences": ["END"]}),
        (
            "user → metadata.user_id",
            {"user": "u-42", "max_tokens": 10},
            CLAUDE,
            {"max_tokens": 10, "metadata": {"user_id": "u-42"}},
        ),
        (
            "safety_identifier used when user is absent",
            {"safety_identifier": "hash-1", "max_tokens": 10},
            CLAUDE,
            {"max_tokens": 10, "metadata": {"user_id": "hash-1"}},
        ),
        ("e-mail-looking user skipped", {"user": "ann@example.com", "max_tokens": 10}, CLAUDE, {"max_tokens": 10}),
        ("phone-looking user skipped", {"user": "+1 (555) 123-4567", "max_tokens": 10}, CLAUDE, {"max_tokens": 10}),
        (
            "stream kept",
            {"stream": True, "stream_options": {"include_usage": True}, "max_tokens": 10},
            CLAUDE,
            {"max_tokens": 10, "stream": True},
        ),
        (
            "§2.8 parameters without a counterpart dropped",
            {
                "max_tokens": 10,
                "seed": 1,
                "frequency_penalty": 0.5,
                "presence_penalty": 0.5,
                "logit_bias": {"1": 2},
                "logprobs": True,
                "top_logprobs": 2,
                "service_tier": "auto",
                "store": True,
                "metadata": {"k": "v"},
                "prediction": {"type": "content", "content": "x"},
                "verbosity": "low",
                "prompt_cache_key": "k",
                "n": 1,
                "response_format": {"type": "text"},
                "made_up_field": 1,
            },
            CLAUDE,
            {"max_tokens": 10},
        ),
        (
            "json_object → system instruction",
            {"response_format": {"type": "json_object"}, "max_tokens": 10},
            CLAUDE,
            {"max_tokens": 10, "system": "Respond with a single JSON object and nothing else."},
        ),
        (
            "json_schema on a structured-output model → output_config.format",
            {
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
                "max_tokens": 10,
            },
            TargetModel(upstream_model="claude-up", structured_output=True),
            {"max_tokens": 10, "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        ),
        (
            "json_schema fallback: forced json tool",
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "description": "d", "schema": {"type": "object"}},
                },
                "max_tokens": 10,
            },
            CLAUDE,
            {
                "max_tokens": 10,
                "tools": [{"name": "json_tool_call", "input_schema": {"type": "object"}, "description": "d"}],
                "tool_choice": {"type": "tool", "name": "json_tool_call"},
            },
        ),
        (
            "json_schema fallback with thinking on: tool offered, choice not forced",
            {
                "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
                "reasoning_effort": "low",
                "max_tokens": 5000,
            },
            CLAUDE,
            {
                "max_tokens": 5000,
                "tools": [{"name": "json_tool_call", "input_schema": {"type": "object"}}],
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
        ),
    ],
)
def test_top_level_fields(_case, fields, target, expected):
    out = convert({"messages": [user("hi")], **fields}, target)

    assert out == {"model": "claude-up", "messages": [user("hi")], **expected}


@pytest.mark.parametrize(
    ("_case", "fields", "expected"),
    [
        ("auto", {"tool_choice": "auto"}, {"tool_choice": {"type": "auto"}}),
        ("none", {"tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
        ("required → any", {"tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
        (
            "named function → tool",
            {"tool_choice": {"type": "function", "function": {"name": "weather"}}},
            {"tool_choice": {"type": "tool", "name": "weather"}},
        ),
        ("no tool_choice", {}, {}),
        (
            "parallel_tool_calls false creates an auto choice",
            {"parallel_tool_calls": False},
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        ),
        (
            "parallel_tool_calls false on required",
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
        ),
        (
            "parallel_tool_calls false not with none",
            {"tool_choice": "none", "parallel_tool_calls": False},
            {"tool_choice": {"type": "none"}},
        ),
        ("parallel_tool_calls true changes nothing", {"parallel_tool_calls": True}, {}),
        (
            "forced tool with thinking: the forced choice wins, thinking dropped",
            {"tool_choice": "required", "reasoning_effort": "high", "max_tokens": 100},
            {"tool_choice": {"type": "any"}},
        ),
    ],
)
def test_tool_choice(_case, fields, expected):
    out = convert({"messages": [user("hi")], "max_tokens": 100, "tools": [WEATHER_TOOL], **fields})

    assert out == {
        "model": "claude-up",
        "max_tokens": 100,
        "messages": [user("hi")],
        "tools": [A_WEATHER_TOOL],
        **expected,
    }


def test_tools_definitions_and_allowed_tools():
    body = {
        "messages": [user("hi")],
        "max_tokens": 100,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "a",
                    "description": "A tool",
                    "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "b"}},
            {"type": "function", "function": {"name": "c"}},
        ],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [
                    {"type": "function", "function": {"name": "a"}},
                    {"type": "function", "function": {"name": "b"}},
                ],
            },
        },
    }

    out = convert(body)

    assert out["tools"] == [
        {
            "name": "a",
            "description": "A tool",
            "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
            "strict": True,
        },
        {"name": "b", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out["tool_choice"] == {"type": "any"}


def test_legacy_functions_become_tools():
    body = {
        "messages": [user("hi")],
        "max_tokens": 100,
        "functions": [{"name": "f", "parameters": {"type": "object"}}],
        "function_call": {"name": "f"},
    }

    out = convert(body)

    assert (out["tools"], out["tool_choice"]) == (
        [{"name": "f", "input_schema": {"type": "object"}}],
        {"type": "tool", "name": "f"},
    )


def test_requires_user_first_prepends_a_minimal_user_turn():
    target = TargetModel(upstream_model="claude-up", requires_user_first=True)

    out = convert(
        {"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "Hello"}], "max_tokens": 10},
        target,
    )

    assert out["messages"] == [user("."), {"role": "assistant", "content": "Hello"}]


def test_conversion_state():
    conv = openai_request_to_anthropic(
        {
            "model": "claude",
            "messages": [user("hello there")],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
        },
        CLAUDE,
    )

    # "hello there" = 11 bytes → 3 tokens, + 4 per message, + the json tool definition (60 bytes → 15 tokens)
    assert (conv.tool_names, conv.json_tool, conv.input_estimate) == ({}, "json_tool_call", 3 + 4 + 15)


def test_openai_image_urls_lists_urls_to_download_once():
    def image(url: str) -> dict:
        return {"type": "image_url", "image_url": {"url": url}}

    body = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [image("https://x.test/a.png"), image("data:image/png;base64,AA")]},
            {"role": "user", "content": [image("https://x.test/a.png"), image("http://x.test/b.png")]},
        ]
    }

    assert openai_image_urls(body) == ["https://x.test/a.png", "http://x.test/b.png"]
