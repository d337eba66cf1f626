"""The Postgres backend's batching on a server event loop (billing/services/holds_pg.py): what only
the batched layer does. The money rules themselves run on every backend in test_money_boundary.py."""

import asyncio

import pytest
from django.db import connection

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import ahold_open, ahold_settle, balance_get, ledger_reconcile
from billing.services import holds as boundary
from billing.tests.test_services import USD, funded_org, record
from ruapi.db import run_db

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only(settings):
    if connection.vendor != "postgresql":
        pytest.skip("batching is the Postgres backend's (SQLite uses the ORM backend)")
    settings.RUAPI_BATCHED_LEDGER = True


def run_with_writer(scenario):
    """Run `scenario(writer)` on a fresh event loop set up as a server worker's, closed afterwards."""

    async def main():
        await boundary.enable_for_running_loop()
        writer = boundary.backend().writer()
        try:
            return await scenario(writer), writer.stats if writer else None
        finally:
            await boundary.close_for_running_loop()

    return asyncio.run(main())


async def held_nanos(org):
    return (await run_db(balance_get, org_id=org.id)).held_nanos


def test_concurrent_requests_are_batched_and_billed_once_each():
    # given: $10 and 40 requests holding $0.10 each (all fit)
    org = funded_org("Acme", usd=10)

    async def scenario(writer):
        holds = await asyncio.gather(
            *(ahold_open(org_id=org.id, request_id=f"r{i}", amount_nanos=USD // 10) for i in range(40))
        )
        mid = await held_nanos(org)
        events = await asyncio.gather(
            *(ahold_settle(hold=h, usage=record(org, h.request_id, 30_000_000)) for h in holds)
        )
        return mid, events

    # when
    (held_midway, events), stats = run_with_writer(scenario)
    # then: far fewer statements than requests, and every figure exact
    assert held_midway == 40 * USD // 10
    assert stats["holds"] == 40 and stats["settlements"] == 40 and stats["one_by_one"] == 0
    assert stats["hold_batches"] < 40 and stats["settle_batches"] < 40
    assert len({e.event_id for e in events}) == 40
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (10 * USD - 40 * 30_000_000, 0)
    assert UsageEvent.objects.filter(org=org).count() == 40
    assert LedgerEntry.objects.filter(org=org, kind="usage").count() == 40
    assert not Hold.objects.filter(status="pending").exists()
    assert ledger_reconcile() == []


def test_an_organisation_whose_batch_total_does_not_fit_is_decided_one_by_one():
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        async def one(i):
            try:
                return await ahold_open(org_id=org.id, request_id=f"r{i}", amount_nanos=USD // 10)
            except Exception:
                return None

        return await asyncio.gather(*(one(i) for i in range(30)))

    holds, stats = run_with_writer(scenario)
    assert sum(h is not None for h in holds) == 10
    assert stats["one_by_one"] > 0  # the batches after the first did not fit as a whole
    assert Balance.objects.get(org=org).held_nanos == USD


def test_a_client_that_leaves_while_its_hold_is_written_gets_the_money_back():
    # given
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        task = asyncio.create_task(ahold_open(org_id=org.id, request_id="gone", amount_nanos=500_000_000))
        await asyncio.sleep(0)  # queued, and its statement on the way
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):  # the release runs once the statement's result is in
            await asyncio.sleep(0.02)
            if writer.stats["holds"] == 1 and (await held_nanos(org)) == 0:
                return

    # when
    run_with_writer(scenario)
    # then
    assert Hold.objects.get(request_id="gone").status == Hold.Status.RELEASED
    assert Balance.objects.get(org=org).held_nanos == 0


def test_the_server_uses_the_batched_writer(gateway):
    # given: the live gateway (uvicorn with lifespan) and its tenant
    # when
    gateway.openai().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    # then: its event loop has a writer that wrote the hold and the settlement
    [(_, writer)] = boundary.backend()._writers.values()
    assert writer.stats["holds"] >= 1 and writer.stats["settlements"] >= 1
    assert ledger_reconcile() == []


def test_holds_commit_asynchronously_and_settlements_synchronously():
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        hold = await ahold_open(org_id=org.id, request_id="sc", amount_nanos=1)
        await ahold_settle(hold=hold, usage=record(org, "sc", 1))
        settings = {}
        for kind, pool in writer._pools.items():
            async with pool.connection() as conn:
                cursor = await conn.execute("SHOW synchronous_commit")
                settings[kind] = (await cursor.fetchone())[0]
        return settings

    settings, _ = run_with_writer(scenario)
    assert settings == {"hold": "off", "settle": "on"}


def test_without_batching_the_same_statements_run_one_request_at_a_time(settings):
    # given: RUAPI_BATCHED_LEDGER off: the server's loop gets no writer
    settings.RUAPI_BATCHED_LEDGER = False
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        assert writer is None
        hold = await ahold_open(org_id=org.id, request_id="solo", amount_nanos=USD // 2)
        return await ahold_settle(hold=hold, usage=record(org, "solo", USD // 4))

    # when
    settled, _ = run_with_writer(scenario)
    # then
    assert UsageEvent.objects.get(request_id="solo").pk == settled.event_id
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD - USD // 4, 0)
    assert ledger_reconcile() == []
