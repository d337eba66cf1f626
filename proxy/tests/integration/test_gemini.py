"""A native Gemini provider behind both client protocols, official SDKs on the client side."""

import json

import pytest

from billing.models import UsageEvent
from proxy.tests.mock_upstream import REASONING_TEXT, Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI_STREAM_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip


@pytest.fixture
def gemini(gateway):
    from catalog.services import catalog_load

    catalog_load({
        "providers": [{"name": "mock-gemini", "kind": "gemini", "base_url": f"{gateway.mock.url}/v1beta",
                       "api_key": gateway.mock.api_key}],
        "models": [{"name": "gemini-test", "provider": "mock-gemini", "upstream_model": "gemini-2.5-flash",
                    "input": "0.30", "output": "2.50", "cache_read": "0.075", "thinking": "budget",
                    "max_output_tokens": 65536}],
    })  # fmt: skip
    return gateway


def usage_tokens(meta: dict) -> tuple[int, int, int]:
    """(prompt incl. cache, cached, output incl. thoughts) as the gateway must report them."""
    return (meta["promptTokenCount"], meta.get("cachedContentTokenCount", 0),
            meta["candidatesTokenCount"] + meta.get("thoughtsTokenCount", 0))  # fmt: skip


def test_openai_client_text(gemini):
    completion = gemini.openai().chat.completions.create(
        model="gemini-test", messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi there"}]
    )
    upstream = gemini.mock.requests[-1]
    assert upstream.path == GEMINI_PATH
    assert upstream.headers["x-goog-api-key"] == gemini.mock.api_key
    assert "authorization" not in upstream.headers
    assert upstream.json["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    assert completion.model == "gemini-test"
    assert completion.choices[0].message.content == "Echo: hi there"
    assert completion.choices[0].finish_reason == "stop"
    prompt, _, output = usage_tokens(upstream.response_usage)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, output)
    event = UsageEvent.objects.get()
    assert (event.provider, event.upstream_model, event.upstream_protocol) == ("mock-gemini", "gemini-2.5-flash", "gemini")
    assert (event.input_tokens + event.cache_read_tokens, event.output_tokens) == (prompt, output)


def test_anthropic_client_text_with_thinking(gemini):
    message = gemini.anthropic().messages.create(
        model="gemini-test", max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hello gemini"}],
    )  # fmt: skip
    upstream = gemini.mock.requests[-1]
    assert upstream.json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == REASONING_TEXT
    assert message.content[1].text == "Echo: hello gemini"
    assert message.stop_reason == "end_turn"
    prompt, _, output = usage_tokens(upstream.response_usage)
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == prompt
    assert message.usage.output_tokens == output


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_streaming_text_and_usage(gemini, protocol):
    if protocol == "openai":
        stream = gemini.openai().chat.completions.create(
            model="gemini-test", messages=[{"role": "user", "content": "stream this please"}], stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        reported = (usage.prompt_tokens, usage.completion_tokens)
    else:
        with gemini.anthropic().messages.stream(
            model="gemini-test", max_tokens=100, messages=[{"role": "user", "content": "stream this please"}]
        ) as stream:
            final = stream.get_final_message()
        text = final.content[0].text
        reported = (final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0), final.usage.output_tokens)
    upstream = gemini.mock.requests[-1]
    assert upstream.path == GEMINI_STREAM_PATH
    assert upstream.query == {"alt": "sse"}
    assert text == "Echo: stream this please"
    prompt, _, output = usage_tokens(upstream.response_usage)
    assert reported == (prompt, output)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_loop(gemini, stream):
    client = gemini.openai()
    messages = [{"role": "user", "content": "weather in Paris?"}]
    # when: the model calls the tool
    if stream:
        chunks = list(client.chat.completions.create(model="gemini-test", messages=messages, tools=[WEATHER],
                                                     stream=True))  # fmt: skip
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(tc.function.arguments or "" for tc in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        completion = client.chat.completions.create(model="gemini-test", messages=messages, tools=[WEATHER])
        call = completion.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert completion.choices[0].finish_reason == "tool_calls"
    assert (call_id, name, json.loads(arguments)) == ("fc_mock1", "weather", {"city": "Paris"})
    # then: the result goes back as a functionResponse and the model answers in text
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]  # fmt: skip
    answer = client.chat.completions.create(model="gemini-test", messages=messages, tools=[WEATHER])
    sent = gemini.mock.requests[-1].json["contents"]
    assert sent[-1] == {"role": "user", "parts": [
        {"functionResponse": {"id": call_id, "name": "weather", "response": {"output": "sunny"}}}]}  # fmt: skip
    assert sent[-2]["parts"][0]["functionCall"] == {"name": "weather", "args": {"city": "Paris"}, "id": call_id}
    assert answer.choices[0].message.content == "Echo: weather in Paris?"


def test_anthropic_tool_use(gemini):
    tools = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    message = gemini.anthropic().messages.create(
        model="gemini-test", max_tokens=100, tools=tools, tool_choice={"type": "tool", "name": "weather"},
        messages=[{"role": "user", "content": "weather?"}],
    )  # fmt: skip
    upstream = gemini.mock.requests[-1].json
    assert upstream["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert (block.type, block.id, block.name, block.input) == ("tool_use", "fc_mock1", "weather", {"city": "Paris"})


@pytest.mark.parametrize(("protocol", "status"), [("openai", 400), ("anthropic", 400)])
def test_upstream_error_before_bytes_in_client_shape(gemini, protocol, status):
    gemini.mock.enqueue(GEMINI_PATH, Script.error(400, provider="gemini", message="Invalid value at 'contents'"))
    if protocol == "openai":
        import openai

        with pytest.raises(openai.BadRequestError) as info:
            gemini.openai().chat.completions.create(model="gemini-test", messages=[{"role": "user", "content": "x"}])
        assert info.value.body["type"] == "invalid_request_error"
    else:
        import anthropic

        with pytest.raises(anthropic.BadRequestError) as info:
            gemini.anthropic().messages.create(model="gemini-test", max_tokens=5,
                                               messages=[{"role": "user", "content": "x"}])  # fmt: skip
        assert info.value.body["error"]["type"] == "invalid_request_error"
    assert info.value.status_code == status
    assert "Invalid value" in info.value.message
