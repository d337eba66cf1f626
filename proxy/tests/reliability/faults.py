"""Helpers for the infrastructure-fault tests (issue 8): a gateway in its own process, a Redis server
the test owns, a Postgres database the test can make refuse connections, a slow mock upstream, a
load of official-SDK requests that records what every client saw, and the billing checks that
must hold afterwards.

Nothing here touches shared services: the Redis server is started on a free port by the test, and
the Postgres outage affects only the test's own database (ALLOW_CONNECTIONS + pg_terminate_backend
from an admin connection to the `postgres` database).
"""

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from django.db import connection, connections

from proxy.tests.mock_upstream import MockUpstream, Script

BASE_DIR = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, message: str = "condition", interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# -- Postgres -------------------------------------------------------------------------------------


def database_url() -> str:
    """The database this test runs on (the test database, not the configured one)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            pytest.fail(f"the SQLite test database must be a file another process can open, not {name!r}")
        return f"sqlite:///{os.path.abspath(name)}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class PostgresOutage:
    """Makes the test's own database refuse new connections and kills its existing ones.

    Runs on an admin connection to the `postgres` database (the test database's own backends are
    the ones being killed). Only the test database is affected; the cluster keeps serving the rest.
    """

    def __init__(self) -> None:
        import psycopg

        db = connection.settings_dict
        self.name = db["NAME"]
        self.admin = psycopg.connect(
            host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
            dbname="postgres", autocommit=True,
        )  # fmt: skip
        self.refusing = False

    def _quoted(self) -> str:
        return '"' + self.name.replace('"', '""') + '"'

    def backends(self) -> int:
        return self.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [self.name]
        ).fetchone()[0]

    def start(self) -> int:
        """Refuse new connections, then terminate every existing one; returns how many were killed."""
        self.admin.execute(f"ALTER DATABASE {self._quoted()} ALLOW_CONNECTIONS false")
        self.refusing = True
        return self.kill_backends()

    def kill_backends(self) -> int:
        rows = self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.name],
        ).fetchall()
        return sum(1 for (killed,) in rows if killed)

    def end(self) -> None:
        if self.refusing:
            self.admin.execute(f"ALTER DATABASE {self._quoted()} ALLOW_CONNECTIONS true")
            self.refusing = False

    def close(self) -> None:
        try:
            self.end()
        finally:
            self.admin.close()


def _close_this_threads_connections() -> None:
    for conn in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            conn.close()


def reset_test_process_connections() -> None:
    """After an outage: this process's own connections were killed too; drop them all — this
    thread's, the pool, and the one asgiref's thread for sync-from-async ORM calls may keep (Django's
    connections are thread-local; a later test's thread-sensitive call would find it dead)."""
    from asgiref.sync import SyncToAsync

    with contextlib.suppress(Exception):
        SyncToAsync.single_thread_executor.submit(_close_this_threads_connections).result(timeout=10)
    _close_this_threads_connections()
    for conn in connections.all(initialized_only=True):
        if hasattr(conn, "close_pool"):
            with contextlib.suppress(Exception):
                conn.close_pool()


# -- Redis ----------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on 127.0.0.1:port (no persistence); stop and start it at will."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> "RedisServer":
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                   "no", "--daemonize", "no"]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited ({self.process.returncode}):\n{self.log.read_text()[-2000:]}")
            try:
                return bool(client.ping())
            except Exception:
                return False

        wait_for(ready, 10, "redis-server to answer PING")
        client.close()
        return self

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, SIGTERM if that fails; every connection drops and the data is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.client().shutdown(nosave=True)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


# -- the gateway as a process ---------------------------------------------------------------------


class GatewayProcess:
    """uvicorn ruapi.asgi:application (production settings) in its own process, with its own env."""

    def __init__(self, log: Path, *, env: dict[str, str], workers: int = 1, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log = log
        full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ruapi.settings", "DJANGO_ALLOW_ASYNC_UNSAFE": "", **env}
        command = [sys.executable, "-m", "uvicorn", "ruapi.asgi:application", "--host", "127.0.0.1",
                   "--port", str(self.port), "--lifespan", "on", "--log-level", "warning",
                   "--workers", str(workers), *extra_args]  # fmt: skip
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=BASE_DIR, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> "GatewayProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"the gateway process did not start (exit {self.process.poll()}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def tenant_gateway_process(mock_upstream, log: Path, **env: str):
    """The mock catalog loaded, a funded tenant ("Acme") and a GatewayProcess on the test database and
    Redis (extra `env` on top); yields (gateway, tenant) and kills the process after."""
    from django.conf import settings

    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import make_tenant, mock_catalog

    catalog_load(mock_catalog(mock_upstream))
    catalog_invalidate()
    tenant = make_tenant("Acme")
    gateway = GatewayProcess(log, env={"DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL or "", **env})
    try:
        gateway.wait_ready()
        yield gateway, tenant
    finally:
        gateway.kill()


# -- a slow upstream ------------------------------------------------------------------------------


class SlowMockUpstream(MockUpstream):
    """The mock upstream with latency on its default answers, so requests are in flight when a fault hits."""

    def __init__(self, *, first_byte_delay: float = 0.05, chunk_delay: float = 0.03, **kwargs) -> None:
        super().__init__(**kwargs)
        self.first_byte_delay = first_byte_delay
        self.chunk_delay = chunk_delay

    def _default_script(self, record) -> Script:
        script = super()._default_script(record)
        if script.status == 200:
            script.first_byte_delay = script.first_byte_delay or self.first_byte_delay
            script.chunk_delay = script.chunk_delay or self.chunk_delay
        return script


# -- load -----------------------------------------------------------------------------------------

FULL, REFUSED, CUT, NO_ANSWER = "full", "refused", "cut", "no_answer"


@dataclass
class Outcome:
    """What one client saw."""

    protocol: str  # openai | anthropic
    stream: bool
    model: str
    started: float  # time.monotonic()
    ended: float = 0.0
    kind: str = ""  # FULL | REFUSED (an HTTP error answer) | CUT (a stream that started and broke) | NO_ANSWER
    request_id: str = ""
    status: int = 0
    body: object = None  # the error body (REFUSED) or the exception (CUT, NO_ANSWER)
    cost: str | None = None  # usage.cost the client was told

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


# (protocol, stream, model): OpenAI and Anthropic clients, same-protocol and translated, streams and not.
MIX = [
    ("openai", False, "gpt-test"),
    ("openai", True, "gpt-test"),
    ("anthropic", False, "claude-test"),
    ("anthropic", True, "claude-test"),
    ("openai", True, "claude-test"),
    ("anthropic", False, "gpt-test"),
]
PROMPT = "please answer with a short echo of these words"


def request_id_of(response) -> str:
    return response.headers.get("x-request-id") or response.headers.get("request-id") or ""


def is_protocol_error(protocol: str, status: int, body) -> bool:
    """The error body has the caller's protocol shape (PROTOCOLS §5)."""
    if not isinstance(body, dict):
        return False
    if protocol == "openai":
        error = body.get("error")
        return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)
    error = body.get("error")
    return body.get("type") == "error" and isinstance(error, dict) and isinstance(error.get("type"), str)


class Clients:
    def __init__(self, base_url: str, secret: str, *, timeout: float) -> None:
        self.openai = openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0, timeout=timeout)
        self.anthropic = anthropic.Anthropic(base_url=base_url, api_key=secret, max_retries=0, timeout=timeout)

    def close(self) -> None:
        self.openai.close()
        self.anthropic.close()


def one_request(clients: Clients, protocol: str, stream: bool, model: str, *, max_tokens: int = 50,
                prompt: str = PROMPT) -> Outcome:  # fmt: skip
    """One SDK request; classifies what the client saw (never raises for a gateway failure)."""
    outcome = Outcome(protocol, stream, model, time.monotonic())
    messages = [{"role": "user", "content": prompt}]
    stream_started = False
    try:
        if protocol == "openai":
            extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
            raw = clients.openai.chat.completions.with_raw_response.create(
                model=model, messages=messages, max_tokens=max_tokens, **extra
            )
            outcome.request_id, outcome.status = request_id_of(raw), raw.status_code
            if stream:
                stream_started = True
                chunks = list(raw.parse())
                usage = chunks[-1].usage if chunks else None
                finished = any(c.choices and c.choices[0].finish_reason for c in chunks)
                if usage is not None and finished:
                    outcome.kind, outcome.cost = FULL, (usage.model_extra or {}).get("cost")
                else:
                    outcome.kind, outcome.body = CUT, "the stream ended without its usage chunk"
            else:
                completion = raw.parse()
                outcome.kind = FULL if completion.choices and completion.usage else CUT
                outcome.cost = (completion.usage.model_extra or {}).get("cost") if completion.usage else None
        else:
            raw = clients.anthropic.messages.with_raw_response.create(
                model=model, messages=messages, max_tokens=max_tokens, stream=stream
            )
            outcome.request_id, outcome.status = request_id_of(raw), raw.status_code
            if stream:
                stream_started = True
                events = list(raw.parse())
                deltas = [e for e in events if e.type == "message_delta"]
                if any(e.type == "message_stop" for e in events) and deltas:
                    outcome.kind = FULL
                    outcome.cost = (deltas[-1].usage.model_extra or {}).get("cost")
                else:
                    outcome.kind, outcome.body = CUT, "the stream ended without message_stop"
            else:
                message = raw.parse()
                outcome.kind = FULL if message.stop_reason else CUT
                outcome.cost = (message.usage.model_extra or {}).get("cost")
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        outcome.request_id = outcome.request_id or request_id_of(exc.response)
        if stream_started:  # an error event inside a 200 stream
            outcome.kind, outcome.body = CUT, exc
        else:
            outcome.status = exc.status_code
            try:
                outcome.body = exc.response.json()
            except Exception:
                outcome.body = exc.response.text
            outcome.kind = REFUSED
    except Exception as exc:  # a transport error: before an answer (NO_ANSWER) or mid-stream (CUT)
        outcome.kind, outcome.body = (CUT if stream_started else NO_ANSWER), exc
    outcome.ended = time.monotonic()
    return outcome


class Load:
    """`threads` clients sending the MIX round-robin until stopped; every outcome is recorded."""

    def __init__(self, base_url: str, secret: str, *, threads: int = 8, timeout: float = 30.0, mix=MIX) -> None:
        self.base_url, self.secret, self.timeout, self.mix = base_url, secret, timeout, mix
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._turn = itertools.count()
        self._threads = [threading.Thread(target=self._worker, name=f"load-{i}", daemon=True) for i in range(threads)]

    def _worker(self) -> None:
        clients = Clients(self.base_url, self.secret, timeout=self.timeout)
        try:
            while not self._stop.is_set():
                protocol, stream, model = self.mix[next(self._turn) % len(self.mix)]
                outcome = one_request(clients, protocol, stream, model)
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.kind != FULL:
                    time.sleep(0.05)  # a failing gateway answers fast: don't spin
        finally:
            clients.close()

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 10)
            assert not thread.is_alive(), "a client is still waiting for the gateway"

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if kind is None or o.kind == kind)

    def summary(self) -> dict:
        with self._lock:
            return dict(Counter(o.kind for o in self.outcomes))


# -- billing checks -------------------------------------------------------------------------------


@dataclass
class BillingState:
    events: dict = field(default_factory=dict)  # request_id -> [UsageEvent]
    debits: dict = field(default_factory=dict)  # request_id -> [amount_nanos]


def billing_state(org_id: int) -> BillingState:
    from billing.models import LedgerEntry, UsageEvent

    state = BillingState()
    for event in UsageEvent.objects.filter(org_id=org_id):
        state.events.setdefault(event.request_id, []).append(event)
    for request_id, amount in LedgerEntry.objects.filter(org_id=org_id, kind="usage").values_list(
        "request_id", "amount_nanos"
    ):
        state.debits.setdefault(request_id, []).append(amount)
    return state


def settled(org_id: int, outcomes: list[Outcome]) -> BillingState:
    """The billing rows once every full response's usage is durable (bounded wait: usage may be
    drained to the database asynchronously)."""

    def ready():
        state = billing_state(org_id)
        full = [o.request_id for o in outcomes if o.kind == FULL]
        return state if all(rid in state.events and rid in state.debits for rid in full) else None

    return wait_for(ready, 30, "every full response to be billed", interval=0.2)


def assert_billed_exactly_once(org_id: int, outcomes: list[Outcome]) -> BillingState:
    """Every client that got a full response: exactly one usage event (200) and one usage debit of
    its cost; no request debited twice; no debit that no client asked for."""
    from billing.money import usd_to_nanos

    state = settled(org_id, outcomes)
    seen = {o.request_id for o in outcomes if o.request_id}
    for o in outcomes:
        if o.kind != FULL:
            continue
        assert o.request_id, o
        events, debits = state.events.get(o.request_id, []), state.debits.get(o.request_id, [])
        assert len(events) == 1 and events[0].status_code == 200, (o, events)
        assert len(debits) == 1 and debits[0] == -events[0].cost_nanos < 0, (o, debits, events[0].cost_nanos)
        if o.cost is not None:  # what the client was told is what was debited
            assert usd_to_nanos(str(o.cost)) == events[0].cost_nanos, (o, events[0].cost_nanos)
    for request_id, debits in state.debits.items():
        assert len(debits) == 1, f"request {request_id} debited {len(debits)} times"
        assert request_id in seen, f"request {request_id} was debited but no client saw its id"
    for request_id, events in state.events.items():
        assert len(events) == 1, f"request {request_id} has {len(events)} usage events"
    return state


def assert_ledger_equals_balance() -> None:
    from io import StringIO

    from django.core.management import call_command

    from billing.services import ledger_reconcile

    assert ledger_reconcile() == []
    out = StringIO()
    call_command("reconcile", stdout=out)  # raises CommandError (non-zero exit) on drift
    assert out.getvalue().strip() == "ok"
