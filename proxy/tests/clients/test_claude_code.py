"""Claude Code (`claude -p`, the npm release) through the gateway on every upstream protocol: a plain prompt and a
tool loop (Bash), and the shape its requests have when they reach the upstream (PROTOCOLS-RESPONSES.md §6)."""

import json

import pytest

from proxy.tests.clients.conftest import JS_BIN
from proxy.tests.mock_agent import FINAL_PREFIX

pytestmark = [pytest.mark.clients, pytest.mark.integration]

TIMEOUT = 120
ROUTES = ["A", "O", "G", "R"]
# Text of the mid-conversation system message Claude Code sends right after the first user message (§6).
MID_SYSTEM_TEXT = "You have been invoked in the following environment"


def claude(clients, protocol: str, prompt: str):
    home = clients.new_home()
    model = clients.model(protocol)
    env = clients.env(
        home, ANTHROPIC_BASE_URL=clients.url, ANTHROPIC_API_KEY=clients.secret, ANTHROPIC_MODEL=model,
        ANTHROPIC_DEFAULT_HAIKU_MODEL=model, ANTHROPIC_SMALL_FAST_MODEL=model, CLAUDE_CODE_MAX_RETRIES="1",
    )  # fmt: skip
    args = [str(JS_BIN / "claude"), "-p", prompt, "--output-format", "json", "--max-turns", "4",
            "--allowedTools", "Bash", "--model", model]  # fmt: skip
    run = clients.run(args, home=home, env=env, timeout=TIMEOUT)
    results = [line for line in run.json_lines() if line.get("type") == "result"]
    assert run.returncode == 0 and results and not results[-1]["is_error"], run.describe()
    return results[-1]


def body_text(record) -> str:
    return record.body.decode(errors="replace")


def upstream_messages(protocol: str, body: dict) -> list[dict]:
    """(role, text) of each conversation entry of an upstream request, in the upstream's own terms."""
    if protocol in ("A", "O"):
        return body["messages"]
    if protocol == "G":
        return body["contents"]
    return [item for item in body["input"] if item.get("type", "message") == "message"]


def assert_no_anthropic_leak(record) -> None:
    """Betas, cache_control and context_management never reach a non-Anthropic upstream (§6 M9, R7)."""
    assert not [name for name in record.headers if name.startswith("anthropic-")], record.headers
    text = body_text(record)
    assert "cache_control" not in text
    assert "context_management" not in text


def assert_mid_system_placed(protocol: str, record) -> None:
    """Claude Code's system message after the first user message is kept in place (§6 M3/M4) on O and R; on A
    (a model without the mid_conv_system flag) it is folded into the top-level system (M5)."""
    entries = upstream_messages(protocol, record.json)
    if protocol == "A":
        assert [m["role"] for m in entries if m["role"] not in ("user", "assistant")] == []
        assert MID_SYSTEM_TEXT in json.dumps(record.json["system"])
        assert "mid-conversation" not in record.headers.get("anthropic-beta", "")
        return
    if protocol == "G":
        assert MID_SYSTEM_TEXT in body_text(record)
        return
    roles = [m.get("role") for m in entries]
    first_user = roles.index("user")
    placed = [i for i, m in enumerate(entries) if i > first_user and MID_SYSTEM_TEXT in json.dumps(m.get("content"))]
    assert placed, roles
    assert roles[placed[0]] in ("system", "developer"), roles


@pytest.mark.parametrize("protocol", ROUTES)
def test_plain_prompt(clients, protocol):
    result = claude(clients, protocol, f"Answer in one word. [[say pong-{protocol}]]")
    assert result["result"] == f"pong-{protocol}"
    assert result["num_turns"] == 1
    requests = clients.upstream_requests(protocol)
    assert requests, "no request reached the upstream"
    for record in requests:
        if protocol == "A":
            assert "claude-code-20250219" in record.headers.get("anthropic-beta", "")
        else:
            assert_no_anthropic_leak(record)
    asked = [r for r in requests if f"pong-{protocol}" in body_text(r)]
    assert asked
    assert_mid_system_placed(protocol, asked[0])
    clients.assert_billed("messages")


@pytest.mark.parametrize("protocol", ROUTES)
def test_tool_loop(clients, protocol):
    # The arithmetic proves Bash ran the command: the prompt itself never contains "marker-42".
    result = claude(clients, protocol, "Use the Bash tool. [[shell echo marker-$((40+2))]]")
    assert result["result"] == FINAL_PREFIX + "marker-42"
    requests = [r for r in clients.upstream_requests(protocol) if "[[shell" in body_text(r)]
    assert len(requests) >= 2, [r.path for r in clients.mock.requests]
    first, last = requests[0], requests[-1]
    assert "Bash" in body_text(first)
    assert "marker-42" not in body_text(first) and "marker-42" in body_text(last)
    if protocol == "A":
        for record in requests:
            assert "claude-code-20250219" in record.headers["anthropic-beta"]
        # cache_control blocks reach an Anthropic upstream unchanged.
        assert "cache_control" in body_text(last)
        results = [b for m in last.json["messages"] if isinstance(m["content"], list) for b in m["content"]
                   if b.get("type") == "tool_result"]  # fmt: skip
        assert "marker-42" in json.dumps(results)
    else:
        for record in requests:
            assert_no_anthropic_leak(record)
    assert_mid_system_placed(protocol, first)
    clients.assert_billed("messages")
