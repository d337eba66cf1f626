"""Billing pages: tenant scoping, CSV export, top-up redirect to Checkout, Stripe off, invoice download."""

from datetime import UTC, date, datetime

import pytest

from accounts.models import Membership
from billing.models import Invoice, LedgerEntry
from billing.services import balance_adjust, invoice_create
from billing.tests.factories import org_with

pytestmark = [pytest.mark.embedded, pytest.mark.django_db]


@pytest.fixture
def acme_client(client):
    acme = org_with("Acme", usd="7", owner_email="owner@acme.test")
    balance_adjust(org_id=acme.id, amount_nanos=-1_000_000_000, reason="acme-secret-reason", actor="ops")
    other = org_with("Globex", usd="3", owner_email="boss@globex.test")
    balance_adjust(org_id=other.id, amount_nanos=-500_000_000, reason="globex-secret-reason", actor="ops")
    client.login(username="owner@acme.test", password="pw-123456")
    return client, acme, other


def test_pages_render_for_a_member(acme_client):
    client, _, _ = acme_client
    for url in ("/billing/", "/billing/top-up/", "/billing/settings/", "/billing/transactions/", "/billing/invoices/"):
        assert client.get(url).status_code == 200, url
    assert b"$6.00" in client.get("/billing/").content


def test_transactions_and_csv_show_only_the_current_org(acme_client):
    client, _, _ = acme_client
    page = client.get("/billing/transactions/?kind=adjustment").content.decode()
    assert "acme-secret-reason" in page and "globex-secret-reason" not in page
    response = client.get("/billing/transactions/?format=csv")
    body = b"".join(response.streaming_content).decode()
    assert response["Content-Type"] == "text/csv"
    lines = body.strip().splitlines()
    assert lines[0].startswith("created_at,kind,amount_usd")
    assert len(lines) == 3 and "acme-secret-reason" in body and "globex" not in body
    assert "-1.000000000" in body


def test_other_orgs_invoice_is_404(acme_client):
    client, acme, other = acme_client
    LedgerEntry.objects.update(created_at=datetime(2026, 10, 5, tzinfo=UTC))
    mine = invoice_create(org_id=acme.id, period_start=date(2026, 10, 1))
    theirs = invoice_create(org_id=other.id, period_start=date(2026, 10, 1))
    assert client.get(f"/billing/invoices/{mine.pk}.pdf").content.startswith(b"%PDF")
    assert client.get(f"/billing/invoices/{theirs.pk}.pdf").status_code == 404
    assert client.get(f"/billing/invoices/{theirs.pk}.html").status_code == 404
    assert Invoice.objects.count() == 2


def test_viewer_cannot_top_up(client):
    org_with("Acme", owner_email="viewer@acme.test", role=Membership.Role.VIEWER)
    client.login(username="viewer@acme.test", password="pw-123456")
    assert client.get("/billing/").status_code == 200
    assert client.post("/billing/top-up/", {"amount": "10"}).status_code == 403


def test_top_up_redirects_to_checkout(acme_client, stripe_standin):
    client, _, _ = acme_client
    response = client.post("/billing/top-up/", {"amount": "15"})
    assert response.status_code == 302
    assert response["Location"].startswith(f"{stripe_standin.api_base}/checkout/cs_test_")
    assert client.post("/billing/top-up/", {"amount": "1"}).status_code == 400


def test_top_up_with_stripe_off_says_so(acme_client, settings):
    settings.STRIPE_SECRET_KEY = ""
    client, _, _ = acme_client
    # customers are told what they can do (issue 16), never about the operator's settings
    page = client.get("/billing/top-up/").content
    assert b"Top-ups by card are not available here" in page and b"STRIPE_SECRET_KEY" not in page
    response = client.post("/billing/top-up/", {"amount": "15"})
    assert response.status_code == 503 and b"Top-ups by card are not available here" in response.content
    assert b"STRIPE_SECRET_KEY" not in response.content


def test_auto_recharge_settings_saved(acme_client):
    client, acme, _ = acme_client
    response = client.post("/billing/settings/", {"action": "recharge", "enabled": "on", "threshold": "5",
                                                  "amount": "20", "daily_cap": "60"})  # fmt: skip
    assert response.status_code == 302
    acme.billing.refresh_from_db()
    assert (acme.billing.auto_recharge_enabled, acme.billing.auto_recharge_amount_nanos) == (True, 20_000_000_000)
    bad = client.post("/billing/settings/", {"action": "recharge", "enabled": "on", "threshold": "5", "amount": "20",
                                             "daily_cap": "10"})  # fmt: skip
    assert bad.status_code == 400


def test_revenue_page_is_staff_only(acme_client):
    client, _, _ = acme_client
    assert client.get("/billing/admin/revenue/").status_code == 302
