"""Redis and Postgres taken away under load (issue 8).

A real gateway runs as its own process (uvicorn, production settings) against the test database
(and, for the Redis test, a Redis server the test owns); eight official-SDK clients (OpenAI and
Anthropic, streams and not, same-protocol and translated) keep sending requests through it while
the test

- stops Redis (SHUTDOWN NOSAVE) for three seconds and starts it again on the same port;
- makes the test database refuse new connections and kills its existing ones for twelve seconds
  (longer than a call waits for a pooled connection), with new clients arriving all along;
- does the same to the database while the gateway is idle: a short blip, then a longer outage.

Then every outcome a client saw is checked against the billing rows: a full response was billed
exactly once and for what the client was told, no request was billed twice, ledger = balance,
no hold stays pending (or the expiry task releases it), and the gateway serves again without a
restart. Only the test's own Redis server and the test database are touched (faults.py).

Postgres + Redis only: the gateway is another process, so it needs a database it can share.
"""

import threading
import time

import pytest
from django.conf import settings
from django.db import connection

from billing.models import Balance, Hold
from proxy.tests.reliability.faults import (
    CUT,
    FULL,
    MIX,
    NO_ANSWER,
    REFUSED,
    Clients,
    GatewayProcess,
    Load,
    PostgresOutage,
    RedisServer,
    SlowMockUpstream,
    assert_billed_exactly_once,
    assert_ledger_equals_balance,
    database_url,
    is_protocol_error,
    one_request,
    reset_test_process_connections,
    wait_for,
)

# outage: the Postgres tests kill every backend of the test database, this process's own included;
# scripts/test.sh runs this module in a pytest process of its own so no later test inherits one.
pytestmark = [pytest.mark.integration, pytest.mark.outage, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def services_required():
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs Postgres and Redis: the gateway process shares the test database")


@pytest.fixture(scope="module")
def slow_upstream():
    with SlowMockUpstream(first_byte_delay=0.05, chunk_delay=0.03) as server:
        yield server


@pytest.fixture
def tenant(services_required, slow_upstream):
    """The mock catalog on the slow upstream, and an organisation with $10 whose key has an RPM limit
    (so every admission goes through the rate limiter, in Redis when it is up)."""
    from accounts.models import ApiKey
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import make_tenant, mock_catalog

    slow_upstream.reset()
    catalog_load(mock_catalog(slow_upstream))
    catalog_invalidate()
    tenant = make_tenant("Acme")
    ApiKey.objects.filter(pk=tenant.api_key.pk).update(rpm_limit=1_000_000)
    return tenant


def _held(org_id: int) -> tuple[int, int]:
    balance = Balance.objects.get(org_id=org_id)
    return Hold.objects.filter(org_id=org_id, status=Hold.Status.PENDING).count(), balance.held_nanos


def _started_in(outcomes, start: float, end: float):
    return [o for o in outcomes if start <= o.started < end]


def test_redis_stopped_for_three_seconds_under_load(tenant, tmp_path):
    # given: a gateway process whose Redis is a server this test owns, serving a steady load
    redis_server = RedisServer(tmp_path / "redis.log").start()
    gateway = GatewayProcess(
        tmp_path / "gateway.log", env={"DATABASE_URL": database_url(), "REDIS_URL": redis_server.url}
    )
    org_id = tenant.org.id
    start_balance = Balance.objects.get(org_id=org_id).balance_nanos
    rate_keys = f"ruapi:rl:key:{tenant.api_key.pk}:rpm:*"
    try:
        gateway.wait_ready()
        with Load(gateway.url, tenant.secret, threads=8) as load:
            wait_for(lambda: load.count(FULL) >= 30, 30, "traffic before the outage")
            assert list(redis_server.client().scan_iter(rate_keys)), "the rate limiter counts in Redis"

            # when: Redis goes away for three seconds (connections dropped, data gone) ...
            down = time.monotonic()
            redis_server.stop()
            time.sleep(3)
            # ... and comes back on the same port
            redis_server.start()
            up = time.monotonic()
            wait_for(lambda: len(_started_in(load.outcomes, up + 6, float("inf"))) >= 30, 60, "traffic after")
        outcomes = list(load.outcomes)

        # then: every request was served, during the outage too, none slowly
        kinds = load.summary()
        failed = [o for o in outcomes if o.kind != FULL]
        assert not failed, (kinds, failed[:5], gateway.log_tail())
        during = _started_in(outcomes, down, up)
        assert len(during) >= 20, kinds
        slowest = max(o.elapsed for o in outcomes)
        assert slowest < 5, f"a request took {slowest:.1f}s"

        # and: the gateway uses Redis again by itself: the rate limiter's counter reappears
        clients = Clients(gateway.url, tenant.secret, timeout=30)
        try:

            def counted_in_redis() -> bool:
                after = one_request(clients, "openai", False, "gpt-test")
                outcomes.append(after)
                assert after.kind == FULL, after
                return bool(list(redis_server.client().scan_iter(rate_keys)))

            wait_for(counted_in_redis, 15, "the rate-limit counter to reappear in Redis", interval=0.5)
        finally:
            clients.close()

        # and: billing is exact
        state = assert_billed_exactly_once(org_id, outcomes)
        wait_for(lambda: _held(org_id) == (0, 0), 15, "no pending hold")
        assert_ledger_equals_balance()
        spent = -sum(d for debits in state.debits.values() for d in debits)
        assert Balance.objects.get(org_id=org_id).balance_nanos == start_balance - spent
        print(f"\nredis outage: {kinds}, {len(during)} during the outage, slowest {slowest:.2f}s")
    finally:
        gateway.kill()
        redis_server.kill()


def _gateway_on_test_database(tmp_path) -> GatewayProcess:
    env = {"DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL}
    return GatewayProcess(tmp_path / "gateway.log", env=env).wait_ready()


def _assert_refused_in_protocol_shape(outcome) -> None:
    assert outcome.kind == REFUSED and outcome.status >= 500, outcome
    assert is_protocol_error(outcome.protocol, outcome.status, outcome.body), outcome


def _release_and_check_holds(org_id: int, outcomes) -> None:
    """Holds still pending belong to requests that did not get a full response (their settlement
    could not reach the database); the expiry task releases them, and then nothing is held."""
    from datetime import timedelta

    from django.utils import timezone

    from billing.services import holds_expire

    full = {o.request_id for o in outcomes if o.kind == FULL}
    pending = set(Hold.objects.filter(org_id=org_id, status=Hold.Status.PENDING).values_list("request_id", flat=True))
    assert not pending & full, "a request that was served still holds money"
    holds_expire(now=timezone.now() + timedelta(seconds=settings.RUAPI_HOLD_TTL + 1))
    assert _held(org_id) == (0, 0)


POOL_TIMEOUT = 10  # seconds a call waits for a pooled connection (ruapi/env.py)
FAST = 2.5  # seconds: "at once" for a refusal while the database is unreachable


class Arrivals:
    """A new client every `every` seconds, each sending one request, until stopped."""

    def __init__(self, base_url: str, secret: str, *, every: float) -> None:
        self.base_url, self.secret, self.every = base_url, secret, every
        self.outcomes: list = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._starter = threading.Thread(target=self._start, daemon=True)
        self._starter.start()

    def _one(self, turn: int) -> None:
        clients = Clients(self.base_url, self.secret, timeout=30)
        try:
            self.outcomes.append(one_request(clients, *MIX[turn % len(MIX)]))
        finally:
            clients.close()

    def _start(self) -> None:
        turn = 0
        while not self._stop.wait(self.every):
            thread = threading.Thread(target=self._one, args=(turn,), daemon=True)
            thread.start()
            self._threads.append(thread)
            turn += 1

    def stop(self) -> None:
        self._stop.set()
        self._starter.join()

    def join(self) -> list:
        for thread in self._threads:
            thread.join(timeout=40)
            assert not thread.is_alive(), "a client is still waiting for the gateway"
        return list(self.outcomes)


def test_postgres_refusing_connections_under_load(tenant, tmp_path):
    # given: a gateway process on the test database, serving a steady load
    gateway = _gateway_on_test_database(tmp_path)
    org_id = tenant.org.id
    outage = PostgresOutage()
    try:
        with Load(gateway.url, tenant.secret, threads=8) as load:
            wait_for(lambda: load.count(FULL) >= 30, 30, "traffic before the outage")

            # when: the database refuses new connections and its existing ones are killed, for longer
            # than a call waits for a pooled connection, while new requests keep arriving ...
            down = time.monotonic()
            outage.start()
            arrivals = Arrivals(gateway.url, tenant.secret, every=0.25)
            time.sleep(POOL_TIMEOUT + 2)
            arrivals.stop()
            outage.kill_backends()
            # ... and then accepts them again
            outage.end()
            up = time.monotonic()
            wait_for(lambda: len(_started_in(load.outcomes, up + 3, float("inf"))) >= 30, 60, "traffic after")
        outcomes = list(load.outcomes) + arrivals.join()
        reset_test_process_connections()  # this process's pooled connections were killed too

        # then: nobody waited beyond the pool's timeout, and every answer was either a full response,
        # an error in the caller's protocol shape, or a stream cut after it had started
        kinds = load.summary()
        log = gateway.log_tail()
        slowest = max(o.elapsed for o in outcomes)
        assert slowest < POOL_TIMEOUT + 3, (f"a request took {slowest:.1f}s", kinds)
        assert not [o for o in outcomes if o.kind == NO_ANSWER], (kinds, log)
        for o in outcomes:
            if o.kind == REFUSED:
                _assert_refused_in_protocol_shape(o)
            elif o.kind == CUT:  # a 200 stream whose end (and billing) could not happen
                assert o.stream and o.started < up, o
        # fail-closed and fast: a request that came while the database was unreachable was not
        # served without it, and got a 500 in its protocol's shape at once (no pile-up)
        during = _started_in(arrivals.outcomes, down + 1.5, up - 0.5)
        assert len(during) >= 20 and all(o.kind == REFUSED for o in during), [o for o in during if o.kind != REFUSED]
        assert max(o.elapsed for o in during) < FAST, sorted(o.elapsed for o in during)[-3:]

        # and: the gateway recovered by itself: everything that came a moment after the outage was served
        after = _started_in(outcomes, up + 2, float("inf"))
        assert len(after) >= 30 and all(o.kind == FULL for o in after), (
            kinds,
            [o for o in after if o.kind != FULL][:3],
        )

        # and: billing is exact — full responses once each, nothing twice, ledger = balance
        assert_billed_exactly_once(org_id, outcomes)
        assert_ledger_equals_balance()
        _release_and_check_holds(org_id, outcomes)
        assert_ledger_equals_balance()
        print(f"\npostgres outage under load: {kinds}, slowest {slowest:.1f}s")
    finally:
        outage.close()
        gateway.kill()
        reset_test_process_connections()


def test_postgres_gone_while_idle_then_back(tenant, tmp_path):
    """The pool's idle connections all die with the database: none of them may fail a request once
    it is back; during a longer outage requests are refused at once; and a pool that backed off its
    reconnects must not keep the gateway down after it."""
    from accounts.services import apikey_issue

    gateway = _gateway_on_test_database(tmp_path)
    org_id = tenant.org.id
    # keys the gateway has never seen: authenticating them needs the database
    fresh_keys = [apikey_issue(org=tenant.org, name=f"fresh-{i}").secret for i in range(2)]
    outage = PostgresOutage()
    clients = Clients(gateway.url, tenant.secret, timeout=30)
    outcomes = []
    try:
        with Load(gateway.url, tenant.secret, threads=8) as load:  # the pool grows to several connections
            wait_for(lambda: load.count(FULL) >= 40, 30, "warm-up traffic")
        outcomes += load.outcomes
        assert outage.backends() >= 3

        # when: a short blip while idle — every pooled connection dies
        outage.start()
        time.sleep(2)
        outage.end()
        # then: the next requests are all served (no dead connection is handed to them)
        blip = [one_request(clients, *MIX[i % len(MIX)]) for i in range(12)]
        outcomes += blip
        assert [o.kind for o in blip] == [FULL] * len(blip), [o for o in blip if o.kind != FULL][:3]

        # when: a longer outage (the pool backs off its reconnects), requests arriving all along
        outage.start()
        waiting = Clients(gateway.url, fresh_keys[0], timeout=30)
        try:
            refused = []
            while len(refused) < 10:
                refused.append(one_request(waiting, *MIX[len(refused) % len(MIX)]))
                time.sleep(1)
        finally:
            waiting.close()
        outcomes += refused
        # then: each is refused at once, in its protocol's shape
        for o in refused:
            _assert_refused_in_protocol_shape(o)
        assert max(o.elapsed for o in refused) < FAST, [round(o.elapsed, 2) for o in refused]
        outage.end()
        # then: the first request after it is served at once, not after the pool's back-off
        later = Clients(gateway.url, fresh_keys[1], timeout=30)
        try:
            back = one_request(later, "anthropic", True, "claude-test")
        finally:
            later.close()
        outcomes.append(back)
        assert back.kind == FULL and back.elapsed < 1.5, (back, gateway.log_tail())
        outcomes += [one_request(clients, *MIX[i % len(MIX)]) for i in range(6)]
        assert all(o.kind == FULL for o in outcomes[-6:])
    finally:
        clients.close()
        outage.close()
        gateway.kill()
        reset_test_process_connections()

    assert_billed_exactly_once(org_id, outcomes)
    assert_ledger_equals_balance()
    _release_and_check_holds(org_id, outcomes)
