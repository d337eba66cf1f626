"""Client libraries through the gateway, each on its same-protocol route and a converted one: the Responses
clients (the OpenAI Agents SDK's default model API, the Vercel AI SDK's default OpenAI provider, the official openai
SDKs' `responses.create` / `responses.stream` — Python in-process, Node 22 as a program — and pydantic-ai's
OpenAIResponsesModel) on a Responses upstream and a converted one, and the AI SDK's Anthropic provider (Messages).
Each runs a function-tool loop streamed and not (directives: proxy/tests/mock_agent.py)."""

import json

import pytest

from proxy.tests.mock_agent import FINAL_PREFIX

pytestmark = [pytest.mark.clients, pytest.mark.integration]

TIMEOUT = 90


def marker(key: str) -> str:
    """The final answer after the client's get_marker tool ran for `key`."""
    return f"{FINAL_PREFIX}marker-{key}-ok"


def client_env(clients, protocol: str) -> dict[str, str]:
    return {"RUAPI_BASE_URL": f"{clients.url}/v1", "RUAPI_API_KEY": clients.secret,
            "RUAPI_MODEL": clients.model(protocol)}  # fmt: skip


def result_of(run) -> dict:
    lines = run.json_lines()
    assert run.returncode == 0 and lines, run.describe()
    return lines[-1]


def assert_tool_round_trip(clients, protocol: str, key: str) -> None:
    """The upstream saw the question, then the question + the tool's output (the converted history)."""
    seen = [r.body.decode(errors="replace") for r in clients.upstream_requests(protocol)]
    asked = [body for body in seen if f'\\"key\\": \\"{key}\\"' in body or f'"key": "{key}"' in body]
    assert len(asked) >= 2, seen
    assert f"marker-{key}-ok" not in asked[0] and f"marker-{key}-ok" in asked[-1]


@pytest.mark.parametrize("protocol", ["R", "A"])
def test_openai_agents_sdk(clients, protocol):
    result = result_of(clients.python("agents_client.py", timeout=TIMEOUT, **client_env(clients, protocol)))
    assert result["run"]["text"] == marker("run")
    assert result["run"]["items"] == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert result["stream"]["text"] == marker("streamed")
    assert result["stream"]["items"] == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert "raw_response_event" in result["stream"]["events"]
    assert_tool_round_trip(clients, protocol, "run")
    assert_tool_round_trip(clients, protocol, "streamed")
    clients.assert_billed("responses")


@pytest.mark.parametrize("protocol", ["R", "O"])
def test_vercel_ai_sdk(clients, protocol):
    result = result_of(clients.node("ai_sdk.mjs", timeout=TIMEOUT, **client_env(clients, protocol)))
    generated, streamed = result["generate"], result["stream"]
    assert (generated["text"], generated["finish"], generated["steps"]) == (marker("generate"), "stop", 2)
    assert generated["toolCalls"] == ["get_marker"]
    assert generated["usage"]["inputTokens"] > 0 and generated["usage"]["outputTokens"] > 0
    assert (streamed["text"], streamed["finish"], streamed["steps"], streamed["errors"]) == (
        marker("stream"),
        "stop",
        2,
        [],
    )
    assert_tool_round_trip(clients, protocol, "generate")
    assert_tool_round_trip(clients, protocol, "stream")
    clients.assert_billed("responses")


@pytest.mark.parametrize("protocol", ["A", "O"])
def test_vercel_ai_sdk_anthropic_provider(clients, protocol):
    """createAnthropic(...)(model): the AI SDK as a Messages client, same-protocol and converted."""
    env = {**client_env(clients, protocol), "RUAPI_PROVIDER": "anthropic"}
    result = result_of(clients.node("ai_sdk.mjs", timeout=TIMEOUT, **env))
    generated, streamed = result["generate"], result["stream"]
    assert (generated["text"], generated["finish"], generated["steps"]) == (marker("generate"), "stop", 2)
    assert (streamed["text"], streamed["finish"], streamed["steps"], streamed["errors"]) == (
        marker("stream"), "stop", 2, [])  # fmt: skip
    assert_tool_round_trip(clients, protocol, "generate")
    assert_tool_round_trip(clients, protocol, "stream")
    clients.assert_billed("messages")


@pytest.mark.parametrize("protocol", ["R", "A"])
def test_openai_node_sdk(clients, protocol):
    result = result_of(clients.node("openai_responses.mjs", timeout=TIMEOUT, **client_env(clients, protocol)))
    assert (result["create"]["text"], result["create"]["status"]) == ("created-ok", "completed")
    assert result["create"]["id"].startswith("resp_")
    assert result["create"]["usage"]["input_tokens"] > 0
    call = result["tools"]["call"]
    assert (call["name"], json.loads(call["arguments"])) == ("get_marker", {"key": "node"})
    assert (result["tools"]["text"], result["tools"]["status"]) == (marker("node"), "completed")
    assert result["stream"] == {"text": "streamed-ok", "status": "completed", "first": "response.created",
                                "last": "response.completed"}  # fmt: skip
    assert_tool_round_trip(clients, protocol, "node")
    clients.assert_billed("responses")


@pytest.mark.parametrize("protocol", ["R", "G"])
def test_pydantic_ai_responses_model(clients, protocol):
    result = result_of(clients.python("pydantic_ai_client.py", timeout=TIMEOUT, **client_env(clients, protocol)))
    assert result == {"run": marker("sync"), "stream": marker("stream")}
    assert_tool_round_trip(clients, protocol, "sync")
    assert_tool_round_trip(clients, protocol, "stream")
    clients.assert_billed("responses")


@pytest.mark.parametrize("protocol", ["R", "O"])
def test_openai_python_sdk(clients, protocol):
    model = clients.model(protocol)
    client = clients.gateway.openai(timeout=30)
    created = client.responses.create(model=model, input="Answer plainly. [[say created-ok]]")
    assert (created.output_text, created.status, created.model) == ("created-ok", "completed", model)
    tools = [{"type": "function", "name": "get_marker", "strict": True,
              "parameters": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"],
                             "additionalProperties": False}}]  # fmt: skip
    question = {"role": "user", "content": 'Look the marker up. [[call get_marker {"key": "python"}]]'}
    with client.responses.stream(model=model, input=[question], tools=tools) as stream:
        first = stream.get_final_response()
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_marker", {"key": "python"})
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "marker-python-ok"}
    second = client.responses.create(model=model, input=[question, call.model_dump(exclude_none=True), output],
                                     tools=tools)  # fmt: skip
    assert (second.output_text, second.status) == (marker("python"), "completed")
    assert second.usage.input_tokens > 0 and second.usage.output_tokens > 0
    assert_tool_round_trip(clients, protocol, "python")
    clients.assert_billed("responses")
