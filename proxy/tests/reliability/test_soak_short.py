"""Load held, short (issue 8 item 9): ~25 s of mixed concurrent SDK traffic through the live gateway
leaves no file descriptor or database connection behind, and every request is billed exactly once.

The mix, 16 clients in a closed loop: non-streaming and streaming chat over both protocols, same- and
cross-protocol; slow streams (a second mock upstream, 20 events 50 ms apart); clients that hang up
after the first chunk of a slow stream; invalid keys (from 127.0.0.2, so the gateway's per-address
brute-force throttle cannot block the valid traffic from 127.0.0.1); bad bodies and an unknown model.
The long version against the production server (uvicorn workers, Postgres, Redis): bench/soak.sh,
results in bench/results/soak.md.
"""

import asyncio
import gc
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import anthropic
import httpx
import openai
import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import ledger_reconcile
from proxy.tests.mock_upstream import MockUpstream, Script

pytestmark = [pytest.mark.integration]

CONCURRENCY = 16
WARMUP_S = 4.0
LOAD_S = 20.0
REQUEST_TIMEOUT_S = 20.0
FD_SLACK = 12  # pools that grew a little after the baseline (DB, Redis, upstream keep-alive)
FD_SETTLE_S = 35.0  # at most: aiohttp closes idle upstream keep-alive connections 15-30 s after their last use
SLOW_WORDS = 20  # 1 s: a client that hangs up after the first chunk always cuts the stream
SLOW_DELAY_S = 0.05
GUESSER = "127.0.0.2"
INVALID_KEY = "sk-ru-" + "0" * 40
MESSAGES = [{"role": "user", "content": "Say something about load balancers"}]
MAX_TOKENS = 64

# (kind, weight); the kinds are the branches of `one_request`.
KINDS = [
    ("openai json", 14), ("openai stream", 10), ("anthropic json", 10), ("anthropic stream", 8),
    ("openai -> anthropic json", 5), ("openai -> anthropic stream", 4),
    ("anthropic -> openai json", 5), ("anthropic -> openai stream", 4),
    ("openai slow stream", 4), ("anthropic -> openai slow stream", 3),
    ("disconnect mid-stream", 4), ("openai invalid key", 2), ("anthropic invalid key", 2), ("bad body", 3),
    ("unknown model", 2),
]  # fmt: skip


def slow_stream() -> Script:
    """An OpenAI stream with usage, one event every SLOW_DELAY_S."""
    head = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1, "model": "gpt-slow"}

    def chunk(delta: dict, finish: str | None = None) -> tuple[None, dict]:
        return None, {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": f" word{i}"}) for i in range(SLOW_WORDS)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 20, "completion_tokens": SLOW_WORDS, "total_tokens": 20 + SLOW_WORDS}
    events.append((None, {**head, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return Script(sse=events, chunk_delay=SLOW_DELAY_S)


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)  # ok | disconnect | expected_4xx | unexpected
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Clients:
    openai: openai.AsyncOpenAI
    anthropic: anthropic.AsyncAnthropic
    raw: httpx.AsyncClient  # the tenant's key, from 127.0.0.1
    guesser: httpx.AsyncClient  # no valid key, from 127.0.0.2

    async def close(self) -> None:
        await self.openai.close()
        await self.anthropic.close()
        await self.raw.aclose()
        await self.guesser.aclose()


def make_clients(gateway) -> Clients:
    return Clients(
        openai=gateway.async_openai(timeout=REQUEST_TIMEOUT_S),
        anthropic=gateway.async_anthropic(timeout=REQUEST_TIMEOUT_S),
        raw=httpx.AsyncClient(base_url=gateway.server.url, timeout=REQUEST_TIMEOUT_S,
                              headers={"authorization": f"Bearer {gateway.tenant.secret}"}),
        guesser=httpx.AsyncClient(base_url=gateway.server.url, timeout=REQUEST_TIMEOUT_S,
                                  transport=httpx.AsyncHTTPTransport(local_address=GUESSER)),
    )  # fmt: skip


async def openai_stream(client: openai.AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True)
    text, finish = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text and finish, (text, finish)


async def anthropic_stream(client: anthropic.AsyncAnthropic, model: str) -> None:
    stream = await client.messages.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[-1] == "message_stop" and "content_block_delta" in kinds, kinds


def assert_refused(response: httpx.Response, message: str) -> None:
    """401, or 429 once the guesser's address is throttled (proxy/auththrottle.py, where present)."""
    assert response.status_code == 401 or (
        response.status_code == 429 and "too many invalid api keys" in message.lower()
    ), (response.status_code, message)


async def one_request(kind: str, clients: Clients, slow: MockUpstream) -> str:
    """Send one request of `kind`; its outcome, or raise for an unexpected one."""
    if "slow" in kind or kind == "disconnect mid-stream":
        slow.enqueue("/v1/chat/completions", slow_stream())
    if kind in ("openai json", "openai -> anthropic json"):
        model = "gpt-test" if kind == "openai json" else "claude-test"
        reply = await clients.openai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS)
        assert reply.choices[0].message.content.startswith("Echo:"), reply
    elif kind in ("anthropic json", "anthropic -> openai json"):
        model = "claude-test" if kind == "anthropic json" else "gpt-test"
        reply = await clients.anthropic.messages.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS)
        assert reply.content[0].text.startswith("Echo:"), reply
    elif kind in ("openai stream", "openai -> anthropic stream", "openai slow stream"):
        model = {"openai stream": "gpt-test", "openai -> anthropic stream": "claude-test"}.get(kind, "slow-test")
        await openai_stream(clients.openai, model)
    elif kind in ("anthropic stream", "anthropic -> openai stream", "anthropic -> openai slow stream"):
        model = {"anthropic stream": "claude-test", "anthropic -> openai stream": "gpt-test"}.get(kind, "slow-test")
        await anthropic_stream(clients.anthropic, model)
    elif kind == "disconnect mid-stream":
        stream = await clients.openai.chat.completions.create(
            model="slow-test", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
        )
        async for _chunk in stream:
            break
        await stream.close()  # hang up: the connection is closed with the body unread
        return "disconnect"
    elif kind == "openai invalid key":
        response = await clients.guesser.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {INVALID_KEY}"},
            json={"model": "gpt-test", "messages": MESSAGES},
        )  # fmt: skip
        assert_refused(response, response.json()["error"]["message"])
        return "expected_4xx"
    elif kind == "anthropic invalid key":
        response = await clients.guesser.post(
            "/v1/messages", headers={"x-api-key": INVALID_KEY, "anthropic-version": "2023-06-01"},
            json={"model": "claude-test", "messages": MESSAGES, "max_tokens": 8},
        )  # fmt: skip
        body = response.json()
        assert body["type"] == "error", body
        assert_refused(response, body["error"]["message"])
        return "expected_4xx"
    elif kind == "bad body":
        response = await clients.raw.post(
            "/v1/chat/completions",
            content=b'{"model": "gpt-test", "messages": [',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["error"]["message"], response.text
        return "expected_4xx"
    elif kind == "unknown model":
        try:
            await clients.anthropic.messages.create(model="no-such-model", messages=MESSAGES, max_tokens=8)
        except anthropic.NotFoundError:
            return "expected_4xx"
        raise AssertionError("an unknown model was served")
    else:
        raise AssertionError(kind)
    return "ok"


async def mixed_load(gateway, slow: MockUpstream, seconds: float, tally: Tally) -> None:
    clients = make_clients(gateway)
    rng = random.Random(809)
    names, weights = zip(*KINDS, strict=True)
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            kind = rng.choices(names, weights)[0]
            try:
                outcome = await one_request(kind, clients, slow)
            except Exception as exc:  # every failure is counted and reported
                tally.unexpected.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")
                outcome = "unexpected"
            tally.outcomes[outcome] += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), seconds + 60)
    finally:
        await clients.close()


class DbConnections:
    """Samples the test database's connections in pg_stat_activity (from the `postgres` database)."""

    def __init__(self) -> None:
        params = connection.settings_dict
        self.database = params["NAME"]
        self.conninfo = psycopg.conninfo.make_conninfo(
            host=params["HOST"] or "127.0.0.1", port=params["PORT"] or 5432, user=params["USER"],
            password=params["PASSWORD"] or None, dbname="postgres", connect_timeout=5,
        )  # fmt: skip
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-db-sampler", daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.database])
                self.samples.append(row.fetchone()[0])
                self._stop.wait(0.25)

    def __enter__(self) -> "DbConnections":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def connection_budget() -> int:
    """Connections this process may hold: the ORM pool's max_size, plus the batched ledger writer's
    own connections (2 kinds × MAX_INFLIGHT) where billing/services/holds_pg.py exists."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    budget = pool.get("max_size", 1) if isinstance(pool, dict) else 1
    try:
        from billing.services import holds_pg as batched
    except ImportError:
        return budget
    return budget + (2 * batched.MAX_INFLIGHT if getattr(settings, "RUAPI_BATCHED_LEDGER", True) else 0)


def fd_count() -> int:
    gc.collect()  # sockets of closed clients that only a collection releases
    return len(os.listdir("/proc/self/fd"))


def fd_kinds() -> Counter:
    """This process's FDs by kind, TCP sockets by state and server port (for failure messages)."""
    tcp = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/self/net/{table}") as file:
            for line in list(file)[1:]:
                fields = line.split()
                ports = sorted(int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                tcp[fields[9]] = f"tcp state {fields[3]} port {ports[0]}"
    kinds = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        inode = target[8:-1] if target.startswith("socket:[") else None
        kinds[tcp.get(inode, "other socket") if inode else target.split("[")[0].split("/")[0] or "file"] += 1
    return kinds


def wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_mixed_load_leaves_no_leak_and_bills_every_request_once(gateway):
    if connection.vendor != "postgresql":
        pytest.skip("the soak measures Postgres connections; scripts/test.sh runs it on Postgres")
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import mock_catalog

    tenant = gateway.tenant
    tally = Tally()
    with MockUpstream().start() as slow, DbConnections() as db:
        # given: the mock catalog plus a model on a second, slow upstream
        catalog = mock_catalog(gateway.mock)
        catalog["providers"].append(
            {"name": "mock-slow", "kind": "openai", "base_url": slow.openai_base_url, "api_key": slow.api_key}
        )
        catalog["models"].append({"name": "slow-test", "provider": "mock-slow", "upstream_model": "gpt-slow",
                                  "input": "2.50", "output": "10", "max_output_tokens": 1000})  # fmt: skip
        catalog_load(catalog)
        catalog_invalidate()
        # and: pools warmed up by the same mix, then the process's file descriptors counted at rest
        asyncio.run(mixed_load(gateway, slow, WARMUP_S, tally))
        assert wait_until(lambda: not Hold.objects.filter(status="pending").exists(), 10)
        assert gateway.mock.wait_idle() and slow.wait_idle()
        baseline, baseline_kinds = fd_count(), fd_kinds()

        # when: the sustained mixed load
        asyncio.run(mixed_load(gateway, slow, LOAD_S, tally))

        # then: every cut stream is settled, and the descriptors come back to the baseline
        assert wait_until(lambda: not Hold.objects.filter(status="pending").exists(), 15), "holds left pending"
        assert gateway.mock.wait_idle() and slow.wait_idle()
        settled = wait_until(lambda: fd_count() <= baseline + FD_SLACK, FD_SETTLE_S)
        after, after_kinds = fd_count(), fd_kinds()

    outcomes = tally.outcomes
    assert tally.unexpected == [], f"{len(tally.unexpected)} unexpected errors: {tally.unexpected[:5]}"
    assert outcomes["ok"] >= 100 and outcomes["disconnect"] >= 1 and outcomes["expected_4xx"] >= 5, outcomes
    assert settled, f"file descriptors: {baseline} before the load, {after} after it: {baseline_kinds} → {after_kinds}"
    budget = connection_budget()
    assert db.samples and max(db.samples) <= budget, (max(db.samples, default=None), budget)
    # money: the ledger is the balance, nothing is held, one usage event per request the client saw
    # complete (status 200, no error) and one per stream it cut (client_disconnected)
    assert ledger_reconcile() == []
    balance = Balance.objects.get(org_id=tenant.org.id)
    ledger = LedgerEntry.objects.filter(org_id=tenant.org.id).aggregate(total=Sum("amount_nanos"))["total"]
    assert (balance.balance_nanos, balance.held_nanos) == (ledger, 0)
    events = UsageEvent.objects.filter(org_id=tenant.org.id)
    assert events.filter(status_code=200, error_type="").count() == outcomes["ok"]
    assert events.exclude(status_code=200, error_type="").count() == outcomes["disconnect"]
    assert set(events.exclude(error_type="").values_list("error_type", flat=True)) <= {"client_disconnected"}
    usage_debits = -LedgerEntry.objects.filter(org_id=tenant.org.id, kind="usage").aggregate(t=Sum("amount_nanos"))["t"]
    assert usage_debits == events.aggregate(t=Sum("cost_nanos"))["t"] > 0
