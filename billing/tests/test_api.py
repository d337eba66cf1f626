"""Invoices through the management API: listed and downloaded per organisation, never another's."""

import io
from datetime import UTC, date, datetime

import pytest
from django.contrib.auth import get_user_model
from pypdf import PdfReader

from billing.models import Invoice, LedgerEntry
from billing.services import invoices_generate
from billing.tests.factories import org_with

pytestmark = [pytest.mark.embedded, pytest.mark.django_db]


@pytest.fixture
def invoiced():
    acme = org_with("Acme", usd="20", owner_email="owner@acme.test")
    other = org_with("Other", usd="5", owner_email="owner@other.test")
    LedgerEntry.objects.update(created_at=datetime(2026, 10, 10, tzinfo=UTC))
    invoices_generate(period_start=date(2026, 10, 1))
    return acme, other


def test_invoice_list_and_pdf(client, invoiced):
    # given
    acme, _ = invoiced
    client.force_login(get_user_model().objects.get(email="owner@acme.test"))
    invoice = Invoice.objects.get(org=acme)
    # when
    listed = client.get(f"/api/orgs/{acme.id}/invoices/")
    pdf = client.get(f"/api/orgs/{acme.id}/invoices/{invoice.id}/pdf/")
    # then
    assert listed.status_code == 200
    [item] = listed.json()
    assert (item["number"], item["topups_usd"], item["closing_balance_usd"]) == (invoice.number, "0.00", "20.00")
    assert item["pdf_url"].endswith(f"/api/orgs/{acme.id}/invoices/{invoice.id}/pdf/")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert invoice.number in PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()


def test_other_tenants_invoices_are_invisible(client, invoiced):
    acme, other = invoiced
    client.force_login(get_user_model().objects.get(email="owner@acme.test"))
    foreign = Invoice.objects.get(org=other)
    assert client.get(f"/api/orgs/{other.id}/invoices/").status_code == 404
    assert client.get(f"/api/orgs/{acme.id}/invoices/{foreign.id}/pdf/").status_code == 404
    assert client.get(f"/api/orgs/{other.id}/invoices/{foreign.id}/pdf/").status_code == 404
