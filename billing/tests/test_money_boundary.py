"""Every money rule of billing/services/holds.py, on every way it runs:

- "orm": the ORM backend (SQLite's; forced here on Postgres too);
- "postgres": the Postgres SQL builder on Django's connection (Celery, scripts, no server);
- "batched": the same SQL queued and batched on a server event loop's connection pools.

On SQLite (`-m embedded`) only "orm" runs.
"""

import asyncio
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import (
    BillingError,
    InsufficientBalanceError,
    ahold_open,
    ahold_release,
    ahold_settle,
    balance_adjust,
    balance_get,
    hold_release,
    holds_expire,
    holds_open,
    holds_settle,
    ledger_reconcile,
)
from billing.services import holds as boundary
from billing.services.holds import HoldRequest
from billing.tests.test_services import USD, funded_org, record

pytestmark = [pytest.mark.embedded, pytest.mark.django_db(transaction=True)]

CENTS_10 = USD // 10


class SyncMoney:
    """The synchronous boundary (what Celery tasks and in-process callers use)."""

    def open_many(self, requests):
        return holds_open(requests)

    def settle_many(self, items):
        return holds_settle(items)

    def release(self, hold):
        return hold_release(hold=hold)

    def close(self):
        pass


class BatchedMoney:
    """The async boundary on an event loop set up as a server worker's (lifespan startup): its
    writer batches whatever is submitted while a statement is in flight, from any thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._run(boundary.enable_for_running_loop())
        assert self._run(self._writer()) is not None

    async def _writer(self):
        return boundary.backend().writer()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    @staticmethod
    async def _open(request):
        try:
            return await ahold_open(
                org_id=request.org_id, request_id=request.request_id, amount_nanos=request.amount_nanos
            )
        except InsufficientBalanceError:
            return None

    def open_many(self, requests):
        async def run():
            return await asyncio.gather(*(self._open(r) for r in requests))

        return self._run(run())

    def settle_many(self, items):
        async def run():
            return await asyncio.gather(*(ahold_settle(hold=h, usage=u) for h, u in items))

        return self._run(run())

    def release(self, hold):
        return self._run(ahold_release(hold=hold))

    def close(self):
        self._run(boundary.close_for_running_loop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["orm", "postgres", "batched"])
def money(request, settings):
    if request.param != "orm" and connection.vendor != "postgresql":
        pytest.skip("the SQL backend is Postgres's")
    settings.RUAPI_BATCHED_LEDGER = True
    previous = boundary.backend_set("orm" if request.param == "orm" else "postgres")
    driver = BatchedMoney() if request.param == "batched" else SyncMoney()
    try:
        yield driver
    finally:
        driver.close()
        boundary.backend_set(previous)


def hold_one(money, org, request_id, amount):
    [hold] = money.open_many([HoldRequest(org.id, request_id, amount)])
    return hold


def settle_one(money, hold, usage):
    [settled] = money.settle_many([(hold, usage)])
    return settled


def figures(org):
    balance = balance_get(org_id=org.id)
    return balance.balance_nanos, balance.held_nanos


def test_hold_then_settle_debits_the_cost_once(money):
    # given
    org, other = funded_org("Acme"), funded_org("Other", usd=5)
    hold = hold_one(money, org, "r1", 3 * CENTS_10)
    assert figures(org) == (USD, 3 * CENTS_10)
    # when: settled, then settled again
    first = settle_one(money, hold, record(org, "r1", 120_000_000))
    again = settle_one(money, hold, record(org, "r1", 120_000_000))
    # then
    assert again.event_id == first.event_id == UsageEvent.objects.get().pk
    assert figures(org) == (USD - 120_000_000, 0)
    assert Hold.objects.get().status == Hold.Status.SETTLED
    entry = LedgerEntry.objects.get(kind="usage")
    assert (entry.org_id, entry.amount_nanos, entry.request_id, entry.description) == (
        org.id, -120_000_000, "r1", "m (chat.completions)",
    )  # fmt: skip
    assert figures(other) == (5 * USD, 0)
    assert ledger_reconcile() == []


def test_settlements_of_one_request_in_one_batch_bill_once(money):
    org = funded_org("Acme")
    hold = hold_one(money, org, "twice", 2 * CENTS_10)
    usage = record(org, "twice", 150_000_000)
    # when: the same settlement three times at once
    results = money.settle_many([(hold, usage)] * 3)
    # then
    assert len({r.event_id for r in results}) == 1
    assert LedgerEntry.objects.filter(kind="usage").count() == 1 and UsageEvent.objects.count() == 1
    assert figures(org) == (USD - 150_000_000, 0)
    assert ledger_reconcile() == []


def test_racing_settlements_bill_once(money):
    # given
    org = funded_org("Acme")
    hold = hold_one(money, org, "race", 2 * CENTS_10)
    barrier, events = threading.Barrier(4), []

    def settle():
        barrier.wait()
        events.append(settle_one(money, hold, record(org, "race", 150_000_000)).event_id)
        connection.close()

    # when
    threads = [threading.Thread(target=settle) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then
    assert len(events) == 4 and len(set(events)) == 1
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    assert figures(org) == (USD - 150_000_000, 0)
    assert ledger_reconcile() == []


def test_an_expired_hold_is_still_billed_once_and_ends_settled(money):
    # given: the expiry task released the hold (its process seemed dead)
    org = funded_org("Acme")
    hold = hold_one(money, org, "late", 3 * CENTS_10)
    Hold.objects.filter(pk=hold.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert holds_expire() == 1 and holds_expire() == 0
    assert figures(org) == (USD, 0)
    # when: the request finishes after all (and its settlement is repeated)
    settle_one(money, hold, record(org, "late", 100_000_000))
    settle_one(money, hold, record(org, "late", 100_000_000))
    # then: debited once, nothing released twice, and the hold is settled on every backend
    assert figures(org) == (USD - 100_000_000, 0)
    assert Hold.objects.get().status == Hold.Status.SETTLED
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    assert money.release(hold) is False and figures(org) == (USD - 100_000_000, 0)
    assert ledger_reconcile() == []


def test_a_hold_lost_with_its_commit_still_ends_in_one_exact_debit(money):
    # given: a hold whose row and held_nanos a database crash lost together (asynchronous commit)
    org = funded_org("Acme")
    hold = hold_one(money, org, "lost", 3 * CENTS_10)
    Hold.objects.filter(pk=hold.id).delete()
    Balance.objects.filter(org=org).update(held_nanos=0)
    # when
    settle_one(money, hold, record(org, "lost", 100_000_000))
    # then: debited, nothing released that was not held
    assert figures(org) == (USD - 100_000_000, 0)
    assert ledger_reconcile() == []


def test_a_release_happens_once_and_never_after_settlement(money):
    org = funded_org("Acme")
    released, settled = hold_one(money, org, "gone", CENTS_10), hold_one(money, org, "done", 2 * CENTS_10)
    # when / then: released once
    assert money.release(released) is True
    assert money.release(released) is False
    assert figures(org) == (USD, 2 * CENTS_10)
    # a settled hold is not released
    settle_one(money, settled, record(org, "done", CENTS_10))
    assert money.release(settled) is False
    assert figures(org) == (USD - CENTS_10, 0)
    assert dict(Hold.objects.values_list("request_id", "status")) == {"gone": "released", "done": "settled"}
    assert ledger_reconcile() == []


def test_a_hold_the_balance_cannot_cover_is_refused_and_holds_nothing(money):
    org = funded_org("Acme")
    assert hold_one(money, org, "r1", 7 * CENTS_10) is not None
    assert hold_one(money, org, "r2", 4 * CENTS_10) is None
    assert hold_one(money, funded_org("Broke", usd=0), "r3", 1) is None
    assert figures(org) == (USD, 7 * CENTS_10)
    assert list(Hold.objects.values_list("request_id", flat=True)) == ["r1"]


def test_a_postpaid_credit_limit_bounds_the_debt(money):
    # given: $1 and a $2 credit limit
    org = funded_org("Acme")
    Balance.objects.filter(org=org).update(credit_limit_nanos=2 * USD)
    # when: holds up to balance + limit, and one more
    holds = [hold_one(money, org, f"r{i}", USD) for i in range(4)]
    # then
    assert [h is not None for h in holds] == [True, True, True, False]
    money.settle_many([(h, record(org, h.request_id, USD)) for h in holds[:3]])
    assert figures(org) == (-2 * USD, 0)
    assert hold_one(money, org, "more", 1) is None
    assert ledger_reconcile() == []


def test_a_batch_where_one_organisation_does_not_fit_and_another_does(money):
    # given: one batch of holds: $10 covers the rich organisation's 20 × $0.10; $1 covers 4 of the poor one's 20 × $0.25
    rich, poor = funded_org("Rich", usd=10), funded_org("Poor", usd=1)
    requests = []
    for i in range(20):
        requests += [HoldRequest(rich.id, f"rich{i}", CENTS_10), HoldRequest(poor.id, f"poor{i}", USD // 4)]
    # when
    holds = money.open_many(requests)
    # then: each decided exactly, nobody blocked by the other
    admitted = [h for h in holds if h is not None]
    assert sum(h.org_id == rich.id for h in admitted) == 20
    assert sum(h.org_id == poor.id for h in admitted) == 4
    assert figures(rich) == (10 * USD, 2 * USD) and figures(poor) == (USD, USD)
    assert Hold.objects.count() == 24
    # and settled as one batch too
    orgs = {rich.id: rich, poor.id: poor}
    settled = money.settle_many([(h, record(orgs[h.org_id], h.request_id, CENTS_10)) for h in admitted])
    assert len({s.event_id for s in settled}) == 24
    assert figures(rich) == (8 * USD, 0) and figures(poor) == (USD - 4 * CENTS_10, 0)
    assert ledger_reconcile() == []


def test_concurrent_bursts_never_overspend_a_small_balance(money):
    # given: $1.00 and 10 clients sending 5 requests each that may cost up to $0.10
    org = funded_org("Acme")
    results: list[str] = []
    barrier = threading.Barrier(10)

    def client(index: int) -> None:
        barrier.wait()
        holds = money.open_many([HoldRequest(org.id, f"r{index}_{n}", CENTS_10) for n in range(5)])
        admitted = [h for h in holds if h is not None]
        results.extend(["refused"] * (5 - len(admitted)) + ["ok"] * len(admitted))
        money.settle_many([(h, record(org, h.request_id, CENTS_10)) for h in admitted])
        connection.close()

    # when
    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then: every cent spent, nothing more
    assert (results.count("ok"), results.count("refused")) == (10, 40)
    assert figures(org) == (0, 0)
    assert LedgerEntry.objects.filter(kind="usage").count() == 10
    assert ledger_reconcile() == []


def test_a_free_request_writes_its_event_but_no_ledger_entry(money):
    org = funded_org("Acme")
    hold = hold_one(money, org, "free", 100)
    settle_one(money, hold, record(org, "free", 0))
    assert UsageEvent.objects.get().cost_nanos == 0
    assert not LedgerEntry.objects.filter(kind="usage").exists()
    assert figures(org) == (USD, 0)


def test_negative_amounts_are_refused(money):
    org = funded_org("Acme")
    with pytest.raises(BillingError):
        money.open_many([HoldRequest(org.id, "neg", -1)])
    hold = hold_one(money, org, "ok", 1)
    with pytest.raises(BillingError):
        money.settle_many([(hold, record(org, "ok", -1))])
    assert figures(org) == (USD, 1)


def test_holds_settlements_and_releases_report_the_organisations_funds(money):
    # given: a postpaid organisation ($1 + $0.10 of credit) this process has seen nothing of
    org = funded_org("Acme")
    Balance.objects.filter(org_id=org.id).update(credit_limit_nanos=CENTS_10)
    boundary.funds_forget()
    assert boundary.funds_available(org.id, max_age=60) is None

    def seen():
        return boundary.funds_available(org.id, max_age=60)

    # when/then: a hold reports balance + credit limit - held after it
    hold = hold_one(money, org, "r1", 3 * CENTS_10)
    assert seen() == USD + CENTS_10 - 3 * CENTS_10
    # an operator's debit is not a hold statement: the view does not know of it ...
    balance_adjust(org_id=org.id, amount_nanos=-USD // 2, reason="test", actor="test")
    assert seen() == USD + CENTS_10 - 3 * CENTS_10
    # ... until the next statement, even a refused hold, reports the figures as they stand
    assert hold_one(money, org, "too-much", USD) is None
    assert seen() == USD // 2 + CENTS_10 - 3 * CENTS_10
    # a settlement: the cost debited, the hold released
    settle_one(money, hold, record(org, "r1", CENTS_10))
    assert seen() == USD // 2 - CENTS_10 + CENTS_10
    # a release gives the held money back to the view as well
    second = hold_one(money, org, "r2", 2 * CENTS_10)
    assert seen() == USD // 2 - 2 * CENTS_10
    assert money.release(second)
    assert seen() == USD // 2
    # and the figure ages: not fresher than the statement that saw it
    assert boundary.funds_available(org.id, max_age=0) is None
    assert ledger_reconcile() == []
