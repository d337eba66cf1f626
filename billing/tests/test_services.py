import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import org_create
from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import (
    BillingError,
    InsufficientBalanceError,
    UsageRecord,
    balance_credit,
    balance_ensure,
    balance_get,
    balance_hold,
    hold_settle,
    holds_expire,
    ledger_reconcile,
)

pytestmark = pytest.mark.embedded

USD = 1_000_000_000


def funded_org(name: str, usd: int = 1):
    org = org_create(name=name)
    balance_ensure(org_id=org.id)
    if usd:
        balance_credit(org_id=org.id, amount_nanos=usd * USD, kind="promo")
    return org


def record(org, request_id: str, cost: int) -> UsageRecord:
    return UsageRecord(
        request_id=request_id, org_id=org.id, api_key_id=None, endpoint="chat.completions", model="m",
        client_protocol="openai", status_code=200, input_tokens=10, output_tokens=5, cost_nanos=cost,
    )  # fmt: skip


@pytest.mark.django_db
def test_hold_then_settle_debits_actual_cost_once():
    # given
    org = funded_org("Acme")
    other = funded_org("Other", usd=5)
    hold = balance_hold(org_id=org.id, request_id="req_1", amount_nanos=300_000_000)
    assert balance_get(org_id=org.id).held_nanos == 300_000_000
    # when
    event = hold_settle(hold=hold, usage=record(org, "req_1", 120_000_000))
    again = hold_settle(hold=hold, usage=record(org, "req_1", 120_000_000))
    # then
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD - 120_000_000, 0)
    assert again.pk == event.pk
    assert list(LedgerEntry.objects.filter(kind="usage").values_list("org_id", "amount_nanos")) == [
        (org.id, -120_000_000)
    ]
    assert UsageEvent.objects.count() == 1
    assert balance_get(org_id=other.id).balance_nanos == 5 * USD
    assert ledger_reconcile() == []


@pytest.mark.django_db
def test_hold_refused_when_balance_cannot_cover_it():
    org = funded_org("Acme")
    balance_hold(org_id=org.id, request_id="req_1", amount_nanos=700_000_000)
    with pytest.raises(InsufficientBalanceError):
        balance_hold(org_id=org.id, request_id="req_2", amount_nanos=400_000_000)
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD, 700_000_000)
    assert Hold.objects.count() == 1


@pytest.mark.django_db
def test_settle_of_an_expired_hold_still_bills():
    org = funded_org("Acme")
    hold = balance_hold(org_id=org.id, request_id="req_1", amount_nanos=100_000_000)
    Hold.objects.filter(pk=hold.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert holds_expire() == 1
    assert balance_get(org_id=org.id).held_nanos == 0
    hold_settle(hold=hold, usage=record(org, "req_1", 50_000_000))
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD - 50_000_000, 0)
    assert ledger_reconcile() == []


@pytest.mark.django_db
def test_zero_cost_settle_writes_event_but_no_ledger_entry():
    org = funded_org("Acme")
    hold = balance_hold(org_id=org.id, request_id="req_1", amount_nanos=100)
    hold_settle(hold=hold, usage=record(org, "req_1", 0))
    assert LedgerEntry.objects.filter(kind="usage").count() == 0
    assert UsageEvent.objects.get().cost_nanos == 0
    assert balance_get(org_id=org.id).held_nanos == 0


@pytest.mark.django_db
def test_reconcile_names_drift():
    org = funded_org("Acme")
    Balance.objects.filter(org=org).update(balance_nanos=USD + 1)
    drifts = ledger_reconcile()
    assert [(d.org_name, d.balance_nanos, d.ledger_nanos) for d in drifts] == [("Acme", USD + 1, USD)]


@pytest.mark.django_db
def test_usage_cannot_be_credited_by_hand():
    org = funded_org("Acme")
    with pytest.raises(BillingError):
        balance_credit(org_id=org.id, amount_nanos=5, kind="usage")


@pytest.mark.django_db(transaction=True)
def test_concurrent_holds_never_overspend():
    # given: $1.00 and 50 requests that may each cost up to $0.10
    org = funded_org("Acme")
    results: list[str] = []
    barrier = threading.Barrier(10)

    def worker(index: int) -> None:
        barrier.wait()
        for n in range(5):
            try:
                hold = balance_hold(org_id=org.id, request_id=f"req_{index}_{n}", amount_nanos=100_000_000)
            except InsufficientBalanceError:
                results.append("refused")
                continue
            hold_settle(hold=hold, usage=record(org, f"req_{index}_{n}", 100_000_000))
            results.append("ok")
        connection.close()

    # when
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then
    balance = balance_get(org_id=org.id)
    assert results.count("ok") == 10
    assert results.count("refused") == 40
    assert (balance.balance_nanos, balance.held_nanos) == (0, 0)
    assert ledger_reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_racing_settles_bill_once():
    # given
    org = funded_org("Acme")
    hold = balance_hold(org_id=org.id, request_id="req_race", amount_nanos=200_000_000)
    barrier = threading.Barrier(4)
    events = []

    def settle() -> None:
        barrier.wait()
        events.append(hold_settle(hold=hold, usage=record(org, "req_race", 150_000_000)).pk)
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
    balance = balance_get(org_id=org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (USD - 150_000_000, 0)
    assert ledger_reconcile() == []
