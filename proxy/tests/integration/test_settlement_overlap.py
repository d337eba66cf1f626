"""A complete answer leaves while its settlement commits (issue 15; proxy/metering.py).

The guarantees of that overlap, each shown with the settlement held back: another connection holds
billing_usageevent in SHARE mode, so every settlement statement (it inserts the usage event) waits
for it while holds (which do not touch that table) go through. Postgres only: on SQLite the ORM
backend settles before the answer, as RUAPI_SETTLE_BEFORE_RESPONSE does everywhere.

- the answer does not wait for the commit; until the commit the hold keeps the money reserved, and
  the commit then debits exactly what the answer said, once;
- RUAPI_SETTLE_BEFORE_RESPONSE=1: the answer waits for the commit;
- a failed settlement is retried until it commits, once;
- a gateway shutting down waits for its settlements in flight;
- the window: a gateway process killed between answers and their commits leaves those requests
  unbilled — their holds pending until the expiry task releases them, the ledger equal to the
  balance, nothing overdrawn.
"""

import contextlib
import signal
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import psycopg
import pytest
from django.db import connection

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.money import usd_to_nanos
from billing.services import holds as boundary
from billing.services import holds_expire, ledger_reconcile
from proxy import metering
from proxy.tests.reliability.faults import database_url, tenant_gateway_process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _overlap(settings):
    if connection.vendor != "postgresql":
        pytest.skip("settlements overlap answers on the batched Postgres writer only")
    settings.RUAPI_SETTLE_BEFORE_RESPONSE = False
    boundary.funds_forget()
    yield
    boundary.funds_forget()


@contextlib.contextmanager
def settlements_held_back():
    """Every settlement statement waits while this is open (holds do not)."""
    with psycopg.connect(database_url()) as conn:
        conn.execute("LOCK TABLE billing_usageevent IN SHARE MODE")
        yield
        conn.rollback()


def ask(url: str, secret: str, *, timeout: float = 15) -> httpx.Response:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"},
                      timeout=timeout)  # fmt: skip


def settled(request_id: str) -> bool:
    return UsageEvent.objects.filter(request_id=request_id).exists()


def test_an_answer_leaves_while_its_settlement_commits(gateway):
    org_id, url, secret = gateway.tenant.org.id, gateway.server.url, gateway.tenant.secret
    first = ask(url, secret)  # the organisation's funds are seen; its settlement commits
    assert first.status_code == 200
    wait_for(lambda: settled(first.headers["x-request-id"]), 10, "the first settlement")
    before = Balance.objects.get(org_id=org_id)
    assert before.held_nanos == 0

    with settlements_held_back():
        started = time.monotonic()
        response = ask(url, secret)
        answered_in = time.monotonic() - started
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
        cost = usd_to_nanos(response.headers["x-ruapi-cost-usd"])
        assert cost > 0 and Decimal(str(response.json()["usage"]["cost"])) == Decimal(
            response.headers["x-ruapi-cost-usd"]
        )
        time.sleep(0.3)  # the settlement is waiting behind the lock, not lost
        # the answer is out; the hold still reserves the money until the commit
        assert answered_in < 5
        hold = Hold.objects.get(request_id=request_id)
        assert hold.status == Hold.Status.PENDING and not settled(request_id)
        balance = Balance.objects.get(org_id=org_id)
        assert (balance.balance_nanos, balance.held_nanos) == (before.balance_nanos, hold.amount_nanos)

    # the lock is gone: the settlement commits, exactly what the answer said, once
    wait_for(lambda: settled(request_id), 10, "the settlement")
    hold.refresh_from_db()
    assert hold.status == Hold.Status.SETTLED
    [entry] = LedgerEntry.objects.filter(request_id=request_id, kind=LedgerEntry.Kind.USAGE)
    assert entry.amount_nanos == -cost
    balance = Balance.objects.get(org_id=org_id)
    assert (balance.balance_nanos, balance.held_nanos) == (before.balance_nanos - cost, 0)
    assert ledger_reconcile() == []


def test_settle_before_response_makes_the_answer_wait_for_the_commit(gateway, settings):
    settings.RUAPI_SETTLE_BEFORE_RESPONSE = True
    url, secret = gateway.server.url, gateway.tenant.secret
    assert ask(url, secret).status_code == 200
    with settlements_held_back(), pytest.raises(httpx.ReadTimeout):
        ask(url, secret, timeout=1.0)
    # once the lock is gone that request is settled too (the client left; its answer was produced)
    wait_for(lambda: UsageEvent.objects.count() == 2, 10, "both settlements")
    assert Balance.objects.get(org_id=gateway.tenant.org.id).held_nanos == 0
    assert ledger_reconcile() == []


def test_a_failed_settlement_is_retried_until_it_commits_once(gateway, monkeypatch):
    real, failures = metering.ahold_settle, []

    async def flaky(**kwargs):
        if len(failures) < 2:
            failures.append(kwargs["usage"].request_id)
            raise psycopg.OperationalError("the database went away")
        return await real(**kwargs)

    monkeypatch.setattr(metering, "ahold_settle", flaky)
    response = ask(gateway.server.url, gateway.tenant.secret)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    wait_for(lambda: settled(request_id), 10, "the retried settlement")
    assert failures == [request_id, request_id]
    assert UsageEvent.objects.filter(request_id=request_id).count() == 1
    assert LedgerEntry.objects.filter(request_id=request_id, kind=LedgerEntry.Kind.USAGE).count() == 1
    assert Hold.objects.get(request_id=request_id).status == Hold.Status.SETTLED
    assert Balance.objects.get(org_id=gateway.tenant.org.id).held_nanos == 0
    assert ledger_reconcile() == []


@pytest.fixture
def gateway_process(transactional_db, mock_upstream, tmp_path):
    log = tmp_path / "gateway.log"
    with tenant_gateway_process(mock_upstream, log, RUAPI_SETTLE_BEFORE_RESPONSE="0") as (gateway, tenant):
        yield gateway, tenant


def test_a_gateway_shutting_down_waits_for_its_settlements(gateway_process):
    gateway, tenant = gateway_process
    assert ask(gateway.url, tenant.secret).status_code == 200
    with settlements_held_back():
        response = ask(gateway.url, tenant.secret)
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        gateway.process.send_signal(signal.SIGTERM)  # graceful shutdown with the settlement in flight
        time.sleep(1.0)
        assert gateway.process.poll() is None, gateway.log_tail()  # still waiting for the commit
    # uvicorn exits through the signal it caught once its shutdown is done
    assert gateway.process.wait(timeout=15) in (0, -signal.SIGTERM), gateway.log_tail()
    assert settled(request_id)
    assert Hold.objects.get(request_id=request_id).status == Hold.Status.SETTLED
    assert Balance.objects.get(org_id=tenant.org.id).held_nanos == 0
    assert ledger_reconcile() == []


def ledger_statements_running() -> int:
    """Statements of gateways' ledger pools running on the test database (an idle connection of a
    killed process ends at once: Postgres reads its end of file)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ruapi-ledger'"
            " AND datname = current_database() AND state <> 'idle'"
        )
        return cursor.fetchone()[0]


def test_a_gateway_killed_before_its_commits_leaves_those_requests_unbilled_and_nothing_overdrawn(gateway_process):
    gateway, tenant = gateway_process
    org_id = tenant.org.id
    first = ask(gateway.url, tenant.secret)
    assert first.status_code == 200
    wait_for(lambda: settled(first.headers["x-request-id"]), 10, "the first settlement")
    before = Balance.objects.get(org_id=org_id)

    with settlements_held_back():
        # more answers than the process sends settlement statements at a time (holds_pg.MAX_INFLIGHT)
        answered = [ask(gateway.url, tenant.secret) for _ in range(4)]
        assert all(response.status_code == 200 for response in answered)
        time.sleep(0.3)
        gateway.kill()  # SIGKILL: no shutdown, no retry
    # A statement the process had already sent still runs to its end: Postgres learns of the client's
    # death only when it answers. Those settlements commit; the ones still queued in the process do not.
    wait_for(lambda: ledger_statements_running() == 0, 15, "the killed gateway's statements to end")
    costs = {r.headers["x-request-id"]: usd_to_nanos(r.headers["x-ruapi-cost-usd"]) for r in answered}
    billed = set(UsageEvent.objects.filter(request_id__in=costs).values_list("request_id", flat=True))
    unbilled = set(costs) - billed
    assert unbilled, "the window: requests answered whose settlement died with the process"

    # billed ones exactly once; unbilled ones still hold their money; the ledger is whole, nothing overdrawn
    for request_id in billed:
        [entry] = LedgerEntry.objects.filter(request_id=request_id, kind=LedgerEntry.Kind.USAGE)
        assert entry.amount_nanos == -costs[request_id]
        assert Hold.objects.get(request_id=request_id).status == Hold.Status.SETTLED
    pending = Hold.objects.filter(request_id__in=unbilled)
    assert pending.count() == len(unbilled) and {h.status for h in pending} == {Hold.Status.PENDING}
    balance = Balance.objects.get(org_id=org_id)
    spent = sum(costs[request_id] for request_id in billed)
    assert balance.balance_nanos == before.balance_nanos - spent
    assert balance.held_nanos == sum(hold.amount_nanos for hold in pending)
    assert ledger_reconcile() == []

    # the expiry task gives the unbilled requests' money back: never debited for them, never overdrawn
    latest = max(hold.expires_at for hold in pending)
    assert holds_expire(now=latest + timedelta(seconds=1)) == len(unbilled)
    balance = Balance.objects.get(org_id=org_id)
    assert (balance.balance_nanos, balance.held_nanos) == (before.balance_nanos - spent, 0)
    assert ledger_reconcile() == []
