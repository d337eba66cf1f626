"""The money statements (billing/services/holds_pg.py) reach their rows through indexes, whatever
the size of the tables: a settlement must not read every hold ever written.

The rows come as one json parameter, which Postgres estimates at 100 rows; a plain join against
it (`IN (SELECT ... FROM json_to_recordset(...))`) made Postgres scan billing_hold and
billing_balance whole on every hold and settlement — the cost per request grew with the table
(bench S1: Postgres time per request up by a third within one 25 s run). Here the tables hold
thousands of rows (statistics up to date) and every statement's plan is read.
"""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Organization
from billing.models import Balance, Hold, UsageEvent
from billing.services.holds import HoldRequest, new_hold
from billing.services.holds_pg import _Statements
from billing.tests.test_services import funded_org, record

pytestmark = pytest.mark.django_db(transaction=True)

MONEY_TABLES = {"billing_hold", "billing_balance", "billing_usageevent", "billing_ledgerentry"}


@pytest.fixture
def big_tables():
    if connection.vendor != "postgresql":
        pytest.skip("the SQL builder runs on Postgres only")
    org = funded_org("Busy", usd=1000)
    others = Organization.objects.bulk_create(Organization(name=f"org {i}", slug=f"org-{i}") for i in range(3000))
    Balance.objects.bulk_create(Balance(org=o, balance_nanos=10**9) for o in others)
    expires = timezone.now() + timedelta(minutes=5)
    Hold.objects.bulk_create(
        Hold(org=others[i % len(others)], request_id=f"old-{i}", amount_nanos=1, expires_at=expires,
             status=Hold.Status.SETTLED if i % 10 else Hold.Status.PENDING)
        for i in range(5000)
    )  # fmt: skip
    UsageEvent.objects.bulk_create(
        UsageEvent(**record(others[i % len(others)], f"old-{i}", 1).__dict__) for i in range(5000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return org


def scanned_whole(sql: str, params: list) -> set[str]:
    """The money tables the statement's plan reads with a sequential scan."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        [[plans]] = cursor.fetchall()
    found = set()

    def walk(node: dict) -> None:
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in MONEY_TABLES:
            found.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plans[0]["Plan"])
    return found


@pytest.mark.parametrize("size", [1, 50])
def test_holds_and_settlements_use_indexes(big_tables, size):
    org, statements = big_tables, _Statements()
    holds = [new_hold(HoldRequest(org.id, f"r-{uuid.uuid4()}", 1000)) for _ in range(size)]
    assert scanned_whole(*statements.hold(holds)) == set()
    items = [(hold, record(org, hold.request_id, 10)) for hold in holds]
    assert scanned_whole(*statements.settle(items)) == set()
    assert scanned_whole(statements.release_sql, [holds[0].id, timezone.now()]) == set()
    assert scanned_whole(statements.event_sql, [holds[0].request_id]) == set()
