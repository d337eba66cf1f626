"""A / O requests → Gemini generateContent bodies (the PROTOCOLS §2 rules, applied to Gemini)."""

import pytest

from proxy.translate import TargetModel, TranslationError
from proxy.translate.gemini import HISTORY_THOUGHT_SIGNATURE, anthropic_request_to_gemini, openai_request_to_gemini

TARGET = TargetModel(upstream_model="gemini-up", max_output_tokens=8192, thinking="budget")
PLAIN = TargetModel(upstream_model="gemini-up")
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_anthropic_text_system_and_sampling():
    # given
    body = {
        "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief.", "cache_control": {}}],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                     {"role": "user", "content": [{"type": "text", "text": "Again"}]}],
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END", " "], "metadata": {"user_id": "u"},
    }  # fmt: skip
    # when
    conversion = anthropic_request_to_gemini(body, TARGET)
    # then
    assert conversion.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello"}]},
            {"role": "user", "parts": [{"text": "Again"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "topK": 40,
                             "stopSequences": ["END"]},
    }  # fmt: skip
    assert conversion.input_estimate > 0


def test_anthropic_max_tokens_is_clamped_to_the_catalog_max_output():
    body = {"max_tokens": 100_000, "messages": [{"role": "user", "content": "Hi"}]}
    assert anthropic_request_to_gemini(body, TARGET).body["generationConfig"] == {"maxOutputTokens": 8192}


def test_anthropic_tools_tool_use_and_tool_results():
    # given: a tool loop with two parallel calls, results answered in one user turn before text
    body = {
        "max_tokens": 50,
        "tools": [{"name": "weather", "description": "Weather", "input_schema": WEATHER_SCHEMA,
                   "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "tool", "name": "weather"},
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "and?"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}],
                 "is_error": True}]},
        ],
    }  # fmt: skip
    # when
    out = anthropic_request_to_gemini(body, TARGET).body
    # then
    assert out["tools"] == [
        {"functionDeclarations": [{"name": "weather", "description": "Weather", "parametersJsonSchema": WEATHER_SCHEMA}]}
    ]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
    assert out["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "toolu_1"},
             "thoughtSignature": HISTORY_THOUGHT_SIGNATURE},
            {"functionCall": {"name": "weather", "args": {"city": "Rome"}, "id": "toolu_2"}},
        ],
    }  # fmt: skip
    assert out["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": "toolu_1", "name": "weather", "response": {"output": "sunny"}}},
            {"functionResponse": {"id": "toolu_2", "name": "weather", "response": {"error": "rain"}}},
            {"text": "and?"},
        ],
    }


@pytest.mark.parametrize(
    ("_case", "tool_choice", "config"),
    [
        ("auto", {"type": "auto"}, {"mode": "AUTO"}),
        ("any", {"type": "any"}, {"mode": "ANY"}),
        ("none", {"type": "none"}, {"mode": "NONE"}),
        ("auto without parallel", {"type": "auto", "disable_parallel_tool_use": True}, {"mode": "AUTO"}),
    ],
)
def test_anthropic_tool_choice(_case, tool_choice, config):
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": tool_choice,
            "tools": [{"name": "t", "input_schema": {"type": "object"}}]}  # fmt: skip
    assert anthropic_request_to_gemini(body, TARGET).body["toolConfig"] == {"functionCallingConfig": config}


def test_anthropic_tool_choice_without_tools_is_not_sent():
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "any"}}
    assert "toolConfig" not in anthropic_request_to_gemini(body, TARGET).body


def test_anthropic_images_inline_and_url():
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.webp"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
        {"type": "text", "text": "What is this?"}]}]}  # fmt: skip
    assert anthropic_request_to_gemini(body, TARGET).body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.test/cat.webp"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        {"text": "What is this?"},
    ]


@pytest.mark.parametrize(
    ("_case", "target", "thinking", "expected"),
    [
        ("budget", TARGET, {"type": "enabled", "budget_tokens": 2048}, {"thinkingBudget": 2048, "includeThoughts": True}),
        ("disabled", TARGET, {"type": "disabled"}, {"thinkingBudget": 0}),
        ("model without thinking", PLAIN, {"type": "enabled", "budget_tokens": 2048}, None),
    ],
)
def test_anthropic_thinking(_case, target, thinking, expected):
    body = {"max_tokens": 4096, "messages": [{"role": "user", "content": "x"}], "thinking": thinking}
    config = anthropic_request_to_gemini(body, target).body["generationConfig"]
    assert config.get("thinkingConfig") == expected


def test_anthropic_structured_output():
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}}}  # fmt: skip
    config = anthropic_request_to_gemini(body, TARGET).body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == WEATHER_SCHEMA


def test_anthropic_long_tool_name_is_shortened_and_mapped_back():
    name = "t" * 100
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": name, "input_schema": {"type": "object"}}]}  # fmt: skip
    conversion = anthropic_request_to_gemini(body, TARGET)
    short = conversion.body["tools"][0]["functionDeclarations"][0]["name"]
    assert len(short) == 64
    assert conversion.client_tool_name(short) == name


@pytest.mark.parametrize(
    ("_case", "messages", "param"),
    [
        ("orphan tool_result", [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}], "messages.0"),
        ("only empty text", [{"role": "user", "content": [{"type": "text", "text": " "}]}], "messages"),
        ("bad role", [{"role": "tool", "content": "x"}], "messages.0.role"),
    ],
)
def test_anthropic_invalid_requests(_case, messages, param):
    with pytest.raises(TranslationError) as info:
        anthropic_request_to_gemini({"max_tokens": 5, "messages": messages}, TARGET)
    assert info.value.param == param


def test_anthropic_server_tools_are_refused():
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}  # fmt: skip
    with pytest.raises(TranslationError):
        anthropic_request_to_gemini(body, TARGET)


def test_openai_request_through_the_neutral_view():
    # given: system + developer hoisted, a tool loop, temperature above A's range, no max tokens
    body = {
        "model": "m", "temperature": 1.6, "stop": "END", "seed": 1,
        "messages": [
            {"role": "system", "content": "S1"},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "developer", "content": "S2"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER_SCHEMA}}],
        "tool_choice": "required",
    }  # fmt: skip
    # when
    out = openai_request_to_gemini(body, PLAIN).body
    # then
    assert out == {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "call_1"},
                                         "thoughtSignature": HISTORY_THOUGHT_SIGNATURE}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_1", "name": "weather",
                                                             "response": {"output": "sunny"}}}]},
        ],
        "systemInstruction": {"parts": [{"text": "S1\nS2"}]},
        "tools": [{"functionDeclarations": [{"name": "weather", "parametersJsonSchema": WEATHER_SCHEMA}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        "generationConfig": {"stopSequences": ["END"], "temperature": 1.6},
    }  # fmt: skip


def test_openai_max_tokens_reasoning_and_json_modes():
    body = {"model": "m", "max_completion_tokens": 500, "reasoning_effort": "low",
            "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}  # fmt: skip
    config = openai_request_to_gemini(body, TARGET).body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    assert config["maxOutputTokens"] > 1024  # raised above the thinking budget (§2.6)


def test_openai_json_schema_is_native_not_a_forced_tool():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER_SCHEMA}}}
    out = openai_request_to_gemini(body, PLAIN).body
    assert "tools" not in out
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": WEATHER_SCHEMA}


def test_openai_n_above_one_is_refused():
    with pytest.raises(TranslationError) as info:
        openai_request_to_gemini({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}, PLAIN)
    assert info.value.param == "n"
