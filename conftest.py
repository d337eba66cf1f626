"""Shared fixtures: a real ASGI server (uvicorn in a thread) on the test database, the local mock
upstream server, and an organisation with credit, a key and a catalog pointing at the mock."""

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
import uvicorn

from proxy.tests.mock_upstream import MockUpstream


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveGateway:
    """uvicorn serving ruapi.asgi:application in a background thread, with production's HTTP protocol."""

    def __init__(self) -> None:
        from ruapi.asgi import application
        from ruapi.server import GuardedHttpToolsProtocol

        self.port = _free_port()
        config = uvicorn.Config(
            application, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", loop="asyncio",
            http=GuardedHttpToolsProtocol,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> "LiveGateway":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        from django.db import connections

        self.server.should_exit = True
        self.thread.join(timeout=10)
        # The server's worker threads returned their connections to the psycopg pool; close the
        # pool so pytest can drop the test database.
        for connection in connections.all(initialized_only=True):
            if hasattr(connection, "close_pool"):
                connection.close_pool()


@pytest.fixture(autouse=True, scope="session")
def _settle_before_response():
    """Tests read the ledger as soon as an answer arrives: the gateways they run (in this process and
    in subprocesses) make every debit durable before the answer's last byte. Production's default, the
    settlement overlapping the answer, has its own tests (proxy/tests/integration/test_settlement_overlap.py,
    which turns it back on) and the benchmark."""
    import os

    from django.conf import settings

    previous, previous_setting = os.environ.get("RUAPI_SETTLE_BEFORE_RESPONSE"), settings.RUAPI_SETTLE_BEFORE_RESPONSE
    os.environ["RUAPI_SETTLE_BEFORE_RESPONSE"] = "1"
    settings.RUAPI_SETTLE_BEFORE_RESPONSE = True
    yield
    settings.RUAPI_SETTLE_BEFORE_RESPONSE = previous_setting
    if previous is None:
        os.environ.pop("RUAPI_SETTLE_BEFORE_RESPONSE", None)
    else:
        os.environ["RUAPI_SETTLE_BEFORE_RESPONSE"] = previous


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts with an empty Django cache, key cache and rate-limit counters: the Redis
    ones outlive test runs (allauth's one confirmation email per 3 minutes, the gateway's limit
    windows) and the in-process ones outlive tests."""
    from django.conf import settings
    from django.core.cache import cache

    from accounts import keycache, shared_state
    from proxy import limits

    cache.clear()
    keycache.invalidate()
    limits.reset()
    if settings.REDIS_URL:
        client = shared_state.sync_client()
        for pattern in ("ruapi:rl:*", "ruapi:route:*", "ruapi:routes:*"):
            for name in client.scan_iter(pattern):
                client.delete(name)
    yield
    keycache.invalidate()
    limits.reset()


@pytest.fixture(scope="session")
def live_gateway(django_db_setup, django_db_blocker) -> Iterator[LiveGateway]:
    gateway = LiveGateway().start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def _mock_upstream_server() -> Iterator[MockUpstream]:
    with MockUpstream().start() as server:
        yield server


@pytest.fixture
def mock_upstream(_mock_upstream_server: MockUpstream) -> MockUpstream:
    _mock_upstream_server.reset()
    return _mock_upstream_server


@dataclass
class Tenant:
    org: object
    secret: str
    api_key: object


def make_tenant(name: str, credit: str = "10") -> Tenant:
    from accounts.services import apikey_issue, org_create
    from billing.money import usd_to_nanos
    from billing.services import balance_credit, balance_ensure

    org = org_create(name=name)
    balance_ensure(org_id=org.id)
    if Decimal(credit):
        balance_credit(org_id=org.id, amount_nanos=usd_to_nanos(credit), kind="promo", description="test credit")
    issued = apikey_issue(org=org, name="test")
    return Tenant(org=org, secret=issued.secret, api_key=issued.api_key)


def mock_catalog(mock: MockUpstream) -> dict:
    """Two upstream protocols, one model each, plus the built-in echo provider."""
    return {
        "providers": [
            {"name": "mock-openai", "kind": "openai", "base_url": mock.openai_base_url, "api_key": mock.api_key},
            {"name": "mock-anthropic", "kind": "anthropic", "base_url": mock.anthropic_base_url,
             "api_key": mock.api_key},
            {"name": "echo", "kind": "echo"},
        ],
        "models": [
            {"name": "gpt-test", "provider": "mock-openai", "upstream_model": "gpt-upstream-1",
             "input": "2.50", "output": "10", "cache_read": "1.25", "max_output_tokens": 16000, "thinking": "budget"},
            {"name": "claude-test", "provider": "mock-anthropic", "upstream_model": "claude-upstream-1",
             "input": "3", "output": "15", "cache_read": "0.30", "cache_write": "3.75", "max_output_tokens": 32000,
             "thinking": "budget"},
            {"name": "embed-test", "mode": "embedding", "provider": "mock-openai", "upstream_model": "embed-upstream",
             "input": "0.02", "output": 0},
            {"name": "image-test", "mode": "image", "provider": "mock-openai", "upstream_model": "image-upstream",
             "input": "5", "output": "40", "image": "0.01"},
            {"name": "whisper-test", "mode": "transcription", "provider": "mock-openai",
             "upstream_model": "whisper-upstream", "input": 0, "output": 0, "audio_minute": "0.006"},
            {"name": "tts-test", "mode": "speech", "provider": "mock-openai", "upstream_model": "tts-upstream",
             "input": 0, "output": 0, "characters": "15"},
            {"name": "demo-echo", "provider": "echo", "upstream_model": "echo-1", "input": "0.5", "output": "1.5"},
        ],
    }  # fmt: skip


@pytest.fixture
def gateway(live_gateway, transactional_db, mock_upstream):
    """A running gateway with the mock catalog loaded and one funded tenant."""
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate

    catalog_load(mock_catalog(mock_upstream))
    catalog_invalidate()
    yield GatewayEnv(live_gateway, mock_upstream, make_tenant("Acme"))
    wait_for_writes_after_answers()


def wait_for_writes_after_answers(timeout: float = 10.0) -> None:
    """Settlements and stored Responses-API responses are written after the response's last byte
    (proxy/metering.py, proxy/response_store.py): let those of the test finish before its database
    is flushed (a flush racing a write deadlocks)."""
    import time

    from proxy import metering, response_store

    deadline = time.monotonic() + timeout
    while (response_store._pending or metering._settling) and time.monotonic() < deadline:
        time.sleep(0.02)


@dataclass
class GatewayEnv:
    server: LiveGateway
    mock: MockUpstream
    tenant: Tenant

    def _auth(self) -> dict:
        return {"api_key": self.tenant.secret, "max_retries": 0}

    def openai(self, **kwargs):
        import openai

        return openai.OpenAI(**{"base_url": self.server.openai_base_url, **self._auth(), **kwargs})

    def anthropic(self, **kwargs):
        import anthropic

        return anthropic.Anthropic(**{"base_url": self.server.anthropic_base_url, **self._auth(), **kwargs})

    def async_openai(self, **kwargs):
        import openai

        return openai.AsyncOpenAI(**{"base_url": self.server.openai_base_url, **self._auth(), **kwargs})

    def async_anthropic(self, **kwargs):
        import anthropic

        return anthropic.AsyncAnthropic(**{"base_url": self.server.anthropic_base_url, **self._auth(), **kwargs})


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser_context(monkeypatch):
    """A Playwright context on Debian's Chromium (never a downloaded browser)."""
    from playwright import sync_api

    if not shutil.which(CHROMIUM):  # .ci/run installs it; a missing browser must not pass silently
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium)")
    # Playwright's sync API runs an event loop in this thread; the tests' ORM calls stay sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        context = browser.new_context()
        context.set_default_timeout(15_000)
        yield context
        context.close()
        browser.close()


@pytest.fixture
def page(browser_context):
    return browser_context.new_page()
