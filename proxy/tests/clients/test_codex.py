"""Codex CLI (`codex exec`, the npm release) through the gateway's `POST /v1/responses` on every upstream protocol:
a custom model provider (`wire_api = "responses"`) in a temporary config.toml, a task that needs a shell tool call,
and what reached the upstream (PROTOCOLS-RESPONSES.md §1.1 "Observed", §2.3, §4.2)."""

import json

import pytest

from proxy.tests.clients.conftest import JS_BIN
from proxy.tests.mock_agent import FINAL_PREFIX
from proxy.tests.mock_upstream import REASONING_TEXT, RESPONSES_ENCRYPTED_PREFIX, THINKING_SIGNATURE

pytestmark = [pytest.mark.clients, pytest.mark.integration]

TIMEOUT = 120
PROVIDER_ENV_KEY = "RUAPI_TEST_KEY"
TASK = "Run the command and report its output. [[shell echo marker-$((40+2))]]"


def codex_config(clients, model: str, *, websockets: bool | None, reasoning: bool = False) -> str:
    """A custom provider pointed at the gateway; analytics, feedback, OTel export, history and update checks off."""
    lines = [
        f'model = "{model}"',
        *(
            [
                'model_reasoning_effort = "high"',
                'model_reasoning_summary = "auto"',
            ]
            if reasoning
            else []
        ),
        'model_provider = "ruapi"',
        'approval_policy = "never"',
        'sandbox_mode = "danger-full-access"',
        "check_for_update_on_startup = false",
        "",
        "[model_providers.ruapi]",
        'name = "RuAPI"',
        f'base_url = "{clients.url}/v1"',
        f'env_key = "{PROVIDER_ENV_KEY}"',
        'wire_api = "responses"',
        "request_max_retries = 1",
        "stream_max_retries = 1",
        "stream_idle_timeout_ms = 60000",
    ]
    if websockets is not None:  # None: the provider's default (no upgrade attempt seen from custom providers)
        lines.append(f"supports_websockets = {'true' if websockets else 'false'}")
    lines += ["", "[analytics]", "enabled = false", "", "[feedback]", "enabled = false", "", "[otel]",
              'exporter = "none"', "", "[history]", 'persistence = "none"', ""]  # fmt: skip
    return "\n".join(lines)


def codex(clients, protocol: str, prompt: str = TASK, *, websockets: bool | None = False, reasoning: bool = False):
    home = clients.new_home()
    (home / ".codex").mkdir()
    config = codex_config(clients, clients.model(protocol), websockets=websockets, reasoning=reasoning)
    (home / ".codex" / "config.toml").write_text(config)
    last = home / "last-message.txt"
    env = clients.env(home, CODEX_HOME=str(home / ".codex"), **{PROVIDER_ENV_KEY: clients.secret})
    args = [str(JS_BIN / "codex"), "exec", "--strict-config", "--skip-git-repo-check", "--ephemeral", "--json",
            "--color", "never", "-o", str(last), prompt]  # fmt: skip
    run = clients.run(args, home=home, env=env, timeout=TIMEOUT)
    assert run.returncode == 0, run.describe()
    assert last.exists(), run.describe()
    return run, last.read_text().strip()


def tool_outputs(protocol: str, body: dict) -> str:
    """Everything the upstream request carries as tool results, as text."""
    if protocol == "O":
        return json.dumps([m for m in body["messages"] if m["role"] == "tool"])
    if protocol == "A":
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        return json.dumps([b for b in blocks if b.get("type") == "tool_result"])
    if protocol == "G":
        return json.dumps([p for c in body["contents"] for p in c.get("parts", []) if "functionResponse" in p])
    return json.dumps(
        [i for i in body["input"] if i.get("type") in ("function_call_output", "custom_tool_call_output")]
    )


@pytest.mark.parametrize("protocol", ["O", "A", "G", "R"])
def test_tool_call_task(clients, protocol):
    run, answer = codex(clients, protocol, websockets=None if protocol == "O" else False)
    assert answer == FINAL_PREFIX.strip() or answer.startswith(FINAL_PREFIX), run.describe()
    assert "marker-42" in answer, run.describe()
    events = run.json_lines()
    assert any(e.get("type") == "turn.completed" for e in events), run.describe()
    assert not [e for e in events if e.get("type") in ("error", "turn.failed")], run.describe()
    upstream = [r for r in clients.upstream_requests(protocol) if "[[shell" in r.body.decode(errors="replace")]
    assert len(upstream) == 2, [(r.method, r.path) for r in clients.mock.requests]
    first, second = upstream
    assert "marker-42" not in tool_outputs(protocol, first.json)
    assert "marker-42" in tool_outputs(protocol, second.json)
    for record in upstream:
        # Codex's own headers never reach a non-OpenAI upstream (R7); the gateway's key replaces the client's.
        assert not [h for h in record.headers if h in ("session-id", "thread-id", "originator") or
                    h.startswith("x-codex")], record.headers  # fmt: skip
        assert clients.secret not in json.dumps(record.headers)
    assert upstream[0].json.get("stream") is True or protocol == "G"
    clients.assert_billed("responses")


def test_websocket_first_then_https(clients):
    """With `supports_websockets = true` Codex first tries a WebSocket upgrade on /v1/responses: the gateway's 426
    makes it fall back to HTTPS at once (§4.2) and the task completes."""
    run, answer = codex(clients, "A", websockets=True)
    assert "marker-42" in answer, run.describe()
    assert "failed to connect to Responses WebSocket" in run.stderr, run.describe()  # it did try
    assert "Reconnecting" not in run.stdout + run.stderr, run.describe()  # and did not spend its retries
    assert run.seconds < 30, run.describe()
    clients.assert_billed("responses")


@pytest.mark.parametrize("protocol", ["A", "R"])
def test_reasoning_round_trip(clients, protocol):
    """Codex asks for reasoning (store:false + include reasoning.encrypted_content) and replays the reasoning item
    of turn 1 in turn 2: the upstream gets its own reasoning back unchanged (A: the signed thinking block first in
    the assistant turn, §5.6 / §7 case 19; R: the item with its encrypted_content)."""
    run, answer = codex(clients, protocol, reasoning=True)
    assert "marker-42" in answer, run.describe()
    first, second = [r for r in clients.upstream_requests(protocol) if "[[shell" in r.body.decode(errors="replace")]
    if protocol == "A":
        assert first.json["thinking"]["type"] in ("enabled", "adaptive")
        assistant = [m for m in second.json["messages"] if m["role"] == "assistant"][-1]
        assert assistant["content"][0] == {"type": "thinking", "thinking": REASONING_TEXT,
                                           "signature": THINKING_SIGNATURE}  # fmt: skip
        assert [block["type"] for block in assistant["content"]][-1] == "tool_use"
    else:
        assert first.json["store"] is False
        assert "reasoning.encrypted_content" in first.json["include"]
        replayed = [item for item in second.json["input"] if item.get("type") == "reasoning"]
        assert len(replayed) == 1 and replayed[0]["encrypted_content"].startswith(RESPONSES_ENCRYPTED_PREFIX)
    clients.assert_billed("responses")
