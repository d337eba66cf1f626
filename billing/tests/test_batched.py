"""The batched ledger writer (billing/services/batched.py): the same money rules as the one-by-one
path, on real Postgres, with requests racing on one event loop as they do in a server worker."""

import asyncio
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import InsufficientBalanceError, balance_get, holds_expire, ledger_reconcile
from billing.services.batched import LedgerWriter
from billing.tests.test_services import USD, funded_org, record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("the batched writer is Postgres-only (SQLite uses the one-by-one path)")


def run_with_writer(scenario):
    """Run `scenario(writer)` on a fresh event loop with its own writer, closed afterwards."""

    async def main():
        writer = LedgerWriter()
        try:
            return await scenario(writer), writer.stats
        finally:
            await writer.close()

    return asyncio.run(main())


async def hold_or_refuse(writer, org, request_id, amount):
    try:
        return await writer.hold(org_id=org.id, request_id=request_id, amount_nanos=amount)
    except InsufficientBalanceError:
        return None


def test_concurrent_requests_are_batched_and_billed_once_each():
    # given: $10 and 40 requests holding $0.10 each (all fit)
    org = funded_org("Acme", usd=10)

    async def scenario(writer):
        holds = await asyncio.gather(*(hold_or_refuse(writer, org, f"r{i}", USD // 10) for i in range(40)))
        assert all(holds)
        mid = await balance_get_async(org)
        events = await asyncio.gather(
            *(writer.settle(hold=h, usage=record(org, h.request_id, 30_000_000)) for h in holds)
        )
        return mid, events

    # when
    (held_midway, events), stats = run_with_writer(scenario)
    # then: far fewer statements than requests, and every figure exact
    assert held_midway == 40 * USD // 10
    assert stats["holds"] == 40 and stats["settlements"] == 40 and stats["one_by_one"] == 0
    assert stats["hold_batches"] < 40 and stats["settle_batches"] < 40
    assert len({e.pk for e in events}) == 40 and all(e.pk for e in events)
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (10 * USD - 40 * 30_000_000, 0)
    assert UsageEvent.objects.filter(org=org).count() == 40
    assert LedgerEntry.objects.filter(org=org, kind="usage").count() == 40
    assert not Hold.objects.filter(status="pending").exists()
    assert ledger_reconcile() == []


async def balance_get_async(org):
    from ruapi.db import run_db

    balance = await run_db(balance_get, org_id=org.id)
    return balance.held_nanos


def test_a_small_balance_is_never_overspent():
    # given: $1.00 and 50 concurrent requests that may each cost up to $0.10
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        holds = await asyncio.gather(*(hold_or_refuse(writer, org, f"r{i}", USD // 10) for i in range(50)))
        admitted = [h for h in holds if h]
        await asyncio.gather(*(writer.settle(hold=h, usage=record(org, h.request_id, USD // 10)) for h in admitted))
        return len(admitted)

    # when
    served, _ = run_with_writer(scenario)
    # then: exactly what the balance covers, decided one by one once the batch total did not fit
    assert served == 10
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (0, 0)
    assert Hold.objects.count() == 10
    assert ledger_reconcile() == []


def test_a_poor_organisation_does_not_block_a_rich_one_in_the_same_batch():
    # given
    rich, poor = funded_org("Rich", usd=10), funded_org("Poor", usd=1)

    async def scenario(writer):
        tasks = []
        for i in range(20):
            tasks.append(hold_or_refuse(writer, rich, f"rich{i}", USD // 10))
            tasks.append(hold_or_refuse(writer, poor, f"poor{i}", USD // 4))
        holds = await asyncio.gather(*tasks)
        return [h for h in holds if h]

    # when
    admitted, stats = run_with_writer(scenario)
    # then
    assert sum(h.org_id == rich.id for h in admitted) == 20
    assert sum(h.org_id == poor.id for h in admitted) == 4
    assert Balance.objects.get(org=poor).held_nanos == USD
    assert Balance.objects.get(org=rich).held_nanos == 2 * USD
    assert stats["holds"] >= 20  # the rich organisation's holds went in batches


def test_a_second_settlement_of_a_request_bills_nothing_more():
    # given
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        hold = await writer.hold(org_id=org.id, request_id="twice", amount_nanos=200_000_000)
        usage = record(org, "twice", 150_000_000)
        # when: the same settlement twice in one batch, then once more
        first, second = await asyncio.gather(
            writer.settle(hold=hold, usage=usage), writer.settle(hold=hold, usage=usage)
        )
        third = await writer.settle(hold=hold, usage=usage)
        return first.pk, second.pk, third.pk

    (first, second, third), _ = run_with_writer(scenario)
    # then
    assert first == second == third
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD - 150_000_000, 0)
    assert ledger_reconcile() == []


def test_settling_an_expired_hold_still_bills_and_releases_once():
    # given: a hold the expiry task released (its process seemed dead)
    org = funded_org("Acme", usd=1)

    async def make_hold(writer):
        return await writer.hold(org_id=org.id, request_id="late", amount_nanos=300_000_000)

    hold, _ = run_with_writer(make_hold)
    Hold.objects.filter(pk=hold.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert holds_expire() == 1

    # when: the request finishes after all
    async def settle(writer):
        return await writer.settle(hold=hold, usage=record(org, "late", 100_000_000))

    run_with_writer(settle)
    # then: debited, and the hold's money was given back exactly once
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD - 100_000_000, 0)
    assert ledger_reconcile() == []


def test_a_client_that_leaves_while_its_hold_is_written_gets_the_money_back():
    # given
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        task = asyncio.create_task(writer.hold(org_id=org.id, request_id="gone", amount_nanos=500_000_000))
        await asyncio.sleep(0)  # queued, and its statement on the way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):  # the release runs once the statement's result is in
            await asyncio.sleep(0.02)
            if (await balance_get_async(org)) == 0 and writer.stats["holds"] == 1:
                return

    # when
    run_with_writer(scenario)
    # then
    assert Hold.objects.get(request_id="gone").status == Hold.Status.RELEASED
    assert Balance.objects.get(org=org).held_nanos == 0


def test_a_hold_that_cannot_be_covered_is_refused():
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        with pytest.raises(InsufficientBalanceError):
            await writer.hold(org_id=org.id, request_id="big", amount_nanos=2 * USD)

    run_with_writer(scenario)
    assert not Hold.objects.exists()


def test_the_server_uses_the_batched_writer(gateway):
    # given: the live gateway (uvicorn with lifespan) and its tenant
    from billing.services import batched

    # when
    gateway.openai().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    # then: its event loop has a writer that wrote the hold and the settlement
    [(_, writer)] = batched._writers.values()
    assert writer.stats["holds"] >= 1 and writer.stats["settlements"] >= 1
    assert ledger_reconcile() == []


def test_a_hold_lost_with_its_asynchronous_commit_still_ends_in_one_exact_debit():
    # given: a hold whose commit a database crash lost (asynchronous commit): the row and its
    # held_nanos are gone together, as the WAL replays whole transactions
    org = funded_org("Acme", usd=1)

    async def make_hold(writer):
        return await writer.hold(org_id=org.id, request_id="lost", amount_nanos=300_000_000)

    hold, _ = run_with_writer(make_hold)
    Hold.objects.filter(pk=hold.pk).delete()
    Balance.objects.filter(org=org).update(held_nanos=0)

    # when: the request settles
    async def settle(writer):
        return await writer.settle(hold=hold, usage=record(org, "lost", 100_000_000))

    event, _ = run_with_writer(settle)
    # then: debited once, nothing released that was not held
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD - 100_000_000, 0)
    assert event.pk and LedgerEntry.objects.filter(kind="usage", request_id="lost").count() == 1
    assert ledger_reconcile() == []


def test_holds_commit_asynchronously_and_settlements_synchronously():
    org = funded_org("Acme", usd=1)

    async def scenario(writer):
        hold = await writer.hold(org_id=org.id, request_id="sc", amount_nanos=1)
        await writer.settle(hold=hold, usage=record(org, "sc", 1))
        settings = {}
        for kind, conns in writer._idle.items():
            cursor = await conns[0].execute("SHOW synchronous_commit")
            settings[kind] = (await cursor.fetchone())[0]
        return settings

    settings, _ = run_with_writer(scenario)
    assert settings == {"hold": "off", "settle": "on"}
