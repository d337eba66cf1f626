"""Server tools on invoices (issue 14 item 4): counts and the per-1,000 price on the usage line."""

from datetime import UTC, date, datetime

import pytest

from billing.models import Invoice, LedgerEntry, UsageEvent
from billing.services import UsageRecord, balance_hold, hold_settle
from billing.services.invoices import invoice_create
from billing.tests.factories import org_with
from catalog.models import Model, Price

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


def test_invoice_line_shows_web_searches():
    # given a month with one request that ran 3 web searches at $10 per 1,000
    org = org_with("Acme", usd="5")
    model = Model.objects.create(name="claude-search")
    price = Price.objects.create(model=model, input_nanos_per_mtok=3_000_000_000, web_search_nanos_per_kreq=10**10)
    hold = balance_hold(org_id=org.id, request_id="req_s", amount_nanos=0)
    hold_settle(hold=hold, usage=UsageRecord(
        request_id="req_s", org_id=org.id, api_key_id=None, endpoint="messages", model="claude-search",
        client_protocol="anthropic", status_code=200, input_tokens=1000, web_search_requests=3, price_id=price.id,
        cost_nanos=33_000_000,
    ))  # fmt: skip
    october = datetime(2026, 10, 15, tzinfo=UTC)
    LedgerEntry.objects.update(created_at=october)
    UsageEvent.objects.update(created_at=october)
    # when
    invoice_create(org_id=org.id, period_start=date(2026, 10, 1))
    # then
    invoice = Invoice.objects.get(org=org)
    line = invoice.lines[0]
    assert {k: line[k] for k in ("model", "web_search_requests", "web_fetch_requests", "web_search_price",
                                 "amount_nanos")} == {"model": "claude-search", "web_search_requests": 3,
                                                      "web_fetch_requests": 0, "web_search_price": "10",
                                                      "amount_nanos": 33_000_000}  # fmt: skip
    assert "3 web searches at $10 per 1,000" in invoice.html
    assert "web fetches" not in invoice.html
