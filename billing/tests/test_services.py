import pytest

from accounts.services import org_create
from billing.models import Balance
from billing.services import (
    BillingError,
    UsageRecord,
    balance_credit,
    balance_ensure,
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
