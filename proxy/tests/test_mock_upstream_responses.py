"""The mock upstream's strict /v1/responses, driven by the official openai SDK straight at it: it must accept
what the API accepts, refuse what it refuses (PROTOCOLS-RESPONSES §1, §3), and stream the §2 grammar."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from proxy.tests.mock_upstream import RESPONSES_ENCRYPTED_PREFIX, MockUpstream, Script

API_KEY = "sk-upstream-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
def server() -> Iterator[MockUpstream]:
    with MockUpstream(api_key=API_KEY) as started:
        yield started


@pytest.fixture
def upstream(server: MockUpstream) -> MockUpstream:
    server.reset()
    return server


@pytest.fixture
def client(upstream: MockUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=upstream.openai_base_url, max_retries=0) as sdk:
        yield sdk


def test_create_and_usage(client, upstream):
    response = client.responses.create(model="gpt-x", input="hello there", prompt_cache_key="k")
    assert response.output_text == "Echo: hello there"
    assert response.usage.input_tokens == 12
    assert response.usage.input_tokens_details.cached_tokens == 6
    assert upstream.requests[-1].response_usage["output_tokens"] == 3


def test_stream_grammar(client):
    with client.responses.stream(model="gpt-x", input="a b", tools=[WEATHER], reasoning={"effort": "low",
                                 "summary": "auto"}, include=["reasoning.encrypted_content"]) as stream:  # fmt: skip
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [item.type for item in final.output] == ["reasoning", "function_call"]
    assert final.output[0].encrypted_content.startswith(RESPONSES_ENCRYPTED_PREFIX)


@pytest.mark.parametrize(
    ("_case", "body", "status", "code", "param"),
    [
        ("moved", {"max_tokens": 5}, 400, "unsupported_parameter", "max_tokens"),
        ("unknown", {"frobnicate": 1}, 400, "unknown_parameter", "frobnicate"),
        ("below min", {"max_output_tokens": 15}, 400, "integer_below_min_value", "max_output_tokens"),
        ("orphan output", {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, 400, None,
         "input"),
        ("assistant input_text", {"input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]},
         400, "invalid_value", "input[0].content"),
        ("id-only reasoning", {"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, 404, None, "input"),
        ("foreign ciphertext", {"input": [{"type": "reasoning", "id": "rs_1", "summary": [],
                                           "encrypted_content": "rg1.x"}]}, 400, "invalid_encrypted_content", "input"),
        ("previous id", {"previous_response_id": "resp_1"}, 400, "previous_response_not_found", "previous_response_id"),
        ("A tool shape", {"tools": [{"type": "function", "name": "f", "input_schema": {}}]}, 400, "unknown_parameter",
         "tools[0].input_schema"),
    ],
)  # fmt: skip
def test_refuses_like_the_api(upstream, _case, body, status, code, param):
    response = httpx.post(f"{upstream.openai_base_url}/responses", headers=AUTH,
                          json={"model": "gpt-x", "input": "hi", **body})  # fmt: skip
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


def test_fault_injection_and_recording(upstream, client):
    upstream.enqueue("/v1/responses", Script.error(429, retry_after=2))
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="gpt-x", input="hi")
    assert upstream.requests[-1].json == {"model": "gpt-x", "input": "hi"}
