"""The mock upstream's scripted agent directives (proxy/tests/mock_agent.py) on each wire format it speaks, driven
with raw HTTP: a call directive answers with a call to the declared tool, the tool's output comes back in the final
text, `say` answers at once. No client programs needed (not in the `clients` tier)."""

import json
from collections.abc import Iterator

import httpx
import pytest

from proxy.tests import mock_agent
from proxy.tests.mock_upstream import MockUpstream

KEY = "sk-upstream-test"
SHELL_SCHEMA = {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream(api_key=KEY) as server:
        yield server


def post(upstream: MockUpstream, path: str, body: dict, headers: dict) -> dict:
    response = httpx.post(upstream.url + path, json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_openai_chat_loop(upstream):
    headers = {"Authorization": f"Bearer {KEY}"}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "shell", "parameters": SHELL_SCHEMA}}]  # fmt: skip
    question = {"role": "user", "content": 'Go. [[shell echo one]] [[call lookup {"q": 2}]]'}
    body = {"model": "m", "messages": [question], "tools": tools}
    first = post(upstream, "/v1/chat/completions", body, headers)["choices"][0]
    call = first["message"]["tool_calls"][0]
    assert first["finish_reason"] == "tool_calls"
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == (
        "shell", {"command": ["bash", "-lc", "echo one"]})  # fmt: skip
    history = [question, first["message"], {"role": "tool", "tool_call_id": call["id"], "content": "one"}]
    second = post(upstream, "/v1/chat/completions", {**body, "messages": history}, headers)["choices"][0]
    call2 = second["message"]["tool_calls"][0]
    assert (call2["function"]["name"], json.loads(call2["function"]["arguments"])) == ("lookup", {"q": 2})
    history += [second["message"], {"role": "tool", "tool_call_id": call2["id"], "content": "two"}]
    third = post(upstream, "/v1/chat/completions", {**body, "messages": history}, headers)["choices"][0]
    assert (third["message"]["content"], third["finish_reason"]) == (mock_agent.FINAL_PREFIX + "two", "stop")


def test_anthropic_loop_and_say(upstream):
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    tools = [{"name": "Read", "input_schema": {"type": "object"}},
             {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]  # fmt: skip
    question = {"role": "user", "content": [{"type": "text", "text": "<reminder/>"},
                                            {"type": "text", "text": "Run [[shell ls -la]]"}]}  # fmt: skip
    body = {"model": "m", "max_tokens": 100, "messages": [question], "tools": tools}
    first = post(upstream, "/v1/messages", body, headers)
    use = first["content"][-1]
    assert (first["stop_reason"], use["name"], use["input"]) == (
        "tool_use", "Bash", {"command": "ls -la", "description": "Run the requested command"})  # fmt: skip
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "out"},
                                          {"type": "text", "text": "<reminder/>"}]}  # fmt: skip
    final = post(upstream, "/v1/messages", {**body, "messages": [question, {"role": "assistant",
                 "content": first["content"]}, result]}, headers)  # fmt: skip
    assert final["content"] == [{"type": "text", "text": mock_agent.FINAL_PREFIX + "out"}]
    said = post(upstream, "/v1/messages", {**body, "messages": [{"role": "user", "content": "x [[say pong]]"}]},
                headers)  # fmt: skip
    assert (said["content"], said["stop_reason"]) == ([{"type": "text", "text": "pong"}], "end_turn")


def test_gemini_loop_and_missing_tool(upstream):
    headers = {"x-goog-api-key": KEY}
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    tools = [{"functionDeclarations": [{"name": "run_shell_command",
                                        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}]}]  # fmt: skip
    question = {"role": "user", "parts": [{"text": "Do it [[shell pwd]]"}]}
    first = post(upstream, path, {"contents": [question], "tools": tools}, headers)["candidates"][0]["content"]
    call = first["parts"][-1]["functionCall"]
    assert (call["name"], call["args"]) == ("run_shell_command", {"command": "pwd"})
    answer = {"role": "user", "parts": [{"functionResponse": {"name": call["name"], "response": {"output": "/w"}}}]}
    final = post(upstream, path, {"contents": [question, first, answer], "tools": tools}, headers)
    assert final["candidates"][0]["content"]["parts"] == [{"text": mock_agent.FINAL_PREFIX + "/w"}]
    missing = {"role": "user", "parts": [{"text": "[[call nope {}]]"}]}
    refused = post(upstream, path, {"contents": [missing], "tools": tools}, headers)
    assert refused["candidates"][0]["content"]["parts"] == [{"text": mock_agent.MISSING_TOOL_PREFIX + "nope"}]


def test_no_directive_keeps_the_default_plan():
    conversation = mock_agent.openai_view({"messages": [{"role": "user", "content": "hello"}],
                                           "tools": [{"type": "function", "function": {"name": "f"}}]})  # fmt: skip
    assert mock_agent.plan(conversation) is None


def test_responses_view():
    body = {
        "tools": [{"type": "function", "name": "exec_command", "parameters": {"properties": {"cmd": {}}}},
                  {"type": "custom", "name": "apply_patch"}],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {"role": "user", "content": "Go [[shell date]] [[call apply_patch {\"input\": \"*** Begin Patch\"}]]"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "Mon"},
        ],
    }  # fmt: skip
    assert mock_agent.plan(mock_agent.responses_view(body)) == mock_agent.Plan(
        tool="apply_patch", arguments=json.dumps({"input": "*** Begin Patch"}))  # fmt: skip
    first_turn = {**body, "input": body["input"][:2]}
    assert mock_agent.plan(mock_agent.responses_view(first_turn)) == mock_agent.Plan(
        tool="exec_command", arguments=json.dumps({"cmd": "date"}))  # fmt: skip
