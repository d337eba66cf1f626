"""A client that goes away mid-stream: the upstream request is cancelled and what was produced is billed."""

import time

import httpx
import pytest

from billing.models import LedgerEntry, UsageEvent
from proxy.tests.mock_upstream import Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def slow_openai_stream(words: int) -> Script:
    chunks = [
        (None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-1",
                "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]})
        for i in range(words)
    ]  # fmt: skip
    return Script(sse=chunks, chunk_delay=0.1)


@pytest.mark.parametrize(
    ("_case", "path", "headers", "body"),
    [
        ("openai client", "/v1/chat/completions", {}, {"model": "gpt-test", "stream": True}),
        ("anthropic client", "/v1/messages", {"anthropic-version": "2023-06-01"},
         {"model": "gpt-test", "stream": True, "max_tokens": 500}),
    ],
)
def test_client_disconnect_cancels_upstream_and_bills_what_was_produced(gateway, _case, path, headers, body):
    # given: an upstream that would stream for 10 seconds
    gateway.mock.enqueue("/v1/chat/completions", slow_openai_stream(100))
    body["messages"] = [{"role": "user", "content": "talk slowly"}]
    # when: the client reads a few events and hangs up
    with httpx.Client(base_url=gateway.server.url, timeout=10) as client:
        headers = {"authorization": f"Bearer {gateway.tenant.secret}", **headers}
        with client.stream("POST", path, json=body, headers=headers) as response:
            assert response.status_code == 200
            received = 0
            for line in response.iter_lines():
                if "word" in line:
                    received += 1
                if received == 3:
                    break
    hung_up = time.monotonic()
    # then: the upstream connection closes promptly
    assert gateway.mock.wait_for_disconnect(timeout=5)
    assert time.monotonic() - hung_up < 1.5
    deadline = time.monotonic() + 5
    while not UsageEvent.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    event = UsageEvent.objects.get()
    assert event.is_estimated
    assert event.error_type == "client_disconnected"
    assert 3 <= event.output_tokens < 100
    assert LedgerEntry.objects.get(kind="usage").amount_nanos == -event.cost_nanos
