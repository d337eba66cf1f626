"""Auto-recharge, balance alerts, promotions, adjustments and monthly invoices."""

import io
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core import mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from pypdf import PdfReader

from billing.models import BillingProfile, Invoice, LedgerEntry, Payment, UsageEvent
from billing.money import usd_to_nanos
from billing.services import (
    BillingError,
    UsageRecord,
    auto_recharge_configure,
    auto_recharge_scan,
    balance_adjust,
    balance_alerts_check,
    balance_credit,
    balance_get,
    balance_hold,
    card_setup_create,
    hold_settle,
    invoices_generate,
    ledger_reconcile,
    promo_grant,
    promos_expire,
)
from billing.tests.factories import org_with

pytestmark = [pytest.mark.embedded, pytest.mark.django_db]

USD = 1_000_000_000


def save_card(stripe_standin, deliver, org):
    setup = card_setup_create(org=org, success_url="http://testserver/ok", cancel_url="http://testserver/no")
    deliver(stripe_standin.event("checkout.session.completed", stripe_standin.pay(setup.checkout_session_id)))


def spend(org, request_id: str, nanos: int, model: str = "gpt-test", **tokens):
    hold = balance_hold(org_id=org.id, request_id=request_id, amount_nanos=0)
    return hold_settle(hold=hold, usage=UsageRecord(
        request_id=request_id, org_id=org.id, api_key_id=None, endpoint="chat.completions", model=model,
        client_protocol="openai", status_code=200, cost_nanos=nanos, **tokens,
    ))  # fmt: skip


def test_card_setup_saves_the_card(stripe_standin, deliver):
    org = org_with("Acme")
    save_card(stripe_standin, deliver, org)
    profile = BillingProfile.objects.get(pk=org.id)
    assert (profile.card_brand, profile.card_last4, profile.payment_method_id.startswith("pm_")) == (
        "visa",
        "4242",
        True,
    )
    assert stripe_standin.calls("POST", "/v1/checkout/sessions")[0]["mode"] == "setup"
    assert LedgerEntry.objects.count() == 0


def test_auto_recharge_charges_once_below_threshold(stripe_standin, deliver):
    # given: $2 left, recharge $20 below $5
    org = org_with("Acme", usd="2", owner_email="owner@acme.test")
    save_card(stripe_standin, deliver, org)
    auto_recharge_configure(org_id=org.id, enabled=True, threshold_nanos=5 * USD, amount_nanos=20 * USD,
                            daily_cap_nanos=100 * USD)  # fmt: skip
    # when: the scan runs three times (and Stripe's webhook for the intent arrives too)
    assert auto_recharge_scan() == 1
    assert auto_recharge_scan() == 0
    intent_id = Payment.objects.get(purpose="auto_recharge").payment_intent_id
    deliver(stripe_standin.event("payment_intent.succeeded", stripe_standin.objects[intent_id]))
    assert auto_recharge_scan() == 0
    # then
    assert len(stripe_standin.calls("POST", "/v1/payment_intents")) == 1
    call = stripe_standin.calls("POST", "/v1/payment_intents")[0]
    assert (call["amount"], call["off_session"], call["confirm"]) == ("2000", "true", "true")
    assert balance_get(org_id=org.id).balance_nanos == 22 * USD
    assert LedgerEntry.objects.filter(kind="topup").count() == 1
    assert ledger_reconcile() == []


def test_auto_recharge_respects_daily_cap(stripe_standin, deliver):
    org = org_with("Acme", usd="1")
    save_card(stripe_standin, deliver, org)
    auto_recharge_configure(org_id=org.id, enabled=True, threshold_nanos=50 * USD, amount_nanos=20 * USD,
                            daily_cap_nanos=30 * USD)  # fmt: skip
    assert auto_recharge_scan() == 1  # $21 < $50 still, but a second $20 would pass the $30 cap
    assert auto_recharge_scan() == 0
    assert balance_get(org_id=org.id).balance_nanos == 21 * USD


def test_auto_recharge_failure_is_recorded_emailed_and_paused(stripe_standin, deliver):
    org = org_with("Acme", usd="1", owner_email="owner@acme.test")
    save_card(stripe_standin, deliver, org)
    auto_recharge_configure(org_id=org.id, enabled=True, threshold_nanos=5 * USD, amount_nanos=20 * USD,
                            daily_cap_nanos=100 * USD)  # fmt: skip
    stripe_standin.decline_cards = True
    mail.outbox.clear()
    assert auto_recharge_scan() == 1
    assert auto_recharge_scan() == 0  # paused: no retry storm against a declined card
    payment = Payment.objects.get(purpose="auto_recharge")
    assert (payment.status, payment.error) == ("failed", "Your card was declined.")
    assert BillingProfile.objects.get(pk=org.id).auto_recharge_error == "Your card was declined."
    assert [m.to for m in mail.outbox] == [["owner@acme.test"]]
    assert "Auto-recharge failed" in mail.outbox[0].subject
    assert balance_get(org_id=org.id).balance_nanos == 1 * USD
    assert len(stripe_standin.calls("POST", "/v1/payment_intents")) == 1


def test_only_one_pending_auto_recharge_per_org():
    org = org_with("Acme")
    Payment.objects.create(org=org, purpose="auto_recharge", amount_nanos=USD)
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(org=org, purpose="auto_recharge", amount_nanos=USD)


def test_balance_alerts_once_per_crossing():
    # given: threshold $5, balance $10
    org = org_with("Acme", usd="10", owner_email="owner@acme.test")
    mail.outbox.clear()
    assert balance_alerts_check() == 0
    # when: it falls below $5, is checked twice, then hits zero, then recovers and falls again
    balance_adjust(org_id=org.id, amount_nanos=-7 * USD, reason="test", actor="test")
    assert (balance_alerts_check(), balance_alerts_check()) == (1, 0)
    balance_adjust(org_id=org.id, amount_nanos=-3 * USD, reason="test", actor="test")
    assert balance_alerts_check() == 1
    balance_credit(org_id=org.id, amount_nanos=20 * USD, kind="promo")
    assert balance_alerts_check() == 0
    balance_adjust(org_id=org.id, amount_nanos=-18 * USD, reason="test", actor="test")
    assert balance_alerts_check() == 1
    # then
    assert [m.subject for m in mail.outbox] == [
        "[RuAPI] Acme: low balance", "[RuAPI] Acme: your balance is used up", "[RuAPI] Acme: low balance",
    ]  # fmt: skip


def test_promo_expiry_writes_off_unused_remainder_once():
    org = org_with("Acme")
    grant = promo_grant(org_id=org.id, amount_nanos=10 * USD, expires_at=timezone.now() + timedelta(days=1))
    spend(org, "req_1", 3 * USD)
    LedgerEntry.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert (promos_expire(), promos_expire()) == (1, 0)
    expiry = LedgerEntry.objects.get(kind="promo_expiry")
    assert (expiry.amount_nanos, expiry.reference) == (-7 * USD, f"promo:{grant.pk}")
    assert balance_get(org_id=org.id).balance_nanos == 0
    assert ledger_reconcile() == []


@pytest.mark.parametrize(
    ("_case", "kwargs"),
    [
        ("credit kind as debit", {"kind": "topup", "amount_nanos": -5}),
        ("refund as credit", {"kind": "refund", "amount_nanos": 5}),
        ("usage by hand", {"kind": "usage", "amount_nanos": -5}),
    ],
)
def test_entry_signs_are_enforced(_case, kwargs):
    org = org_with("Acme", usd="1")
    with pytest.raises(BillingError):
        balance_credit(org_id=org.id, **kwargs)
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == ["promo"]


def test_database_refuses_a_negative_topup_even_bypassing_services():
    org = org_with("Acme")
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(org=org, kind="topup", amount_nanos=-1, reference="x")


def test_adjustment_needs_reason_and_actor():
    org = org_with("Acme")
    with pytest.raises(BillingError):
        balance_adjust(org_id=org.id, amount_nanos=USD, reason="", actor="ops")
    entry = balance_adjust(org_id=org.id, amount_nanos=USD, reason="goodwill", actor="ops@ruapi")
    assert (entry.kind, entry.description, entry.created_by) == ("adjustment", "goodwill", "ops@ruapi")


def _backdate(when: datetime) -> None:
    LedgerEntry.objects.update(created_at=when)
    UsageEvent.objects.update(created_at=when)


def test_invoice_task_twice_one_invoice_matching_the_ledger(django_capture_on_commit_callbacks):
    # given: activity in October 2026 (opening balance from September), another org with its own
    org = org_with("Acme", usd="50", owner_email="owner@acme.test")
    LedgerEntry.objects.update(created_at=datetime(2026, 9, 20, tzinfo=UTC))
    spend(org, "req_1", 1_234_567, model="gpt-test", input_tokens=100, output_tokens=50)
    spend(org, "req_2", 765_433, model="gpt-test", input_tokens=60, output_tokens=20)
    spend(org, "req_3", 2 * USD, model="claude-test", input_tokens=1000, output_tokens=300, cache_read_tokens=10)
    balance_adjust(org_id=org.id, amount_nanos=USD, reason="goodwill", actor="ops")
    october = datetime(2026, 10, 15, tzinfo=UTC)
    LedgerEntry.objects.filter(created_at__gte=datetime(2026, 10, 1, tzinfo=UTC)).update(created_at=october)
    UsageEvent.objects.update(created_at=october)
    other = org_with("Other", usd="5")
    LedgerEntry.objects.filter(org=other).update(created_at=october)
    mail.outbox.clear()
    # when
    with django_capture_on_commit_callbacks(execute=True):
        first = invoices_generate(period_start=date(2026, 10, 1))
    with django_capture_on_commit_callbacks(execute=True):
        second = invoices_generate(period_start=date(2026, 10, 1))
    # then
    assert first == second and len(first) == 2
    invoice = Invoice.objects.get(org=org)
    assert Invoice.objects.filter(org=org).count() == 1
    ledger = dict(LedgerEntry.objects.filter(org=org, created_at__gte=datetime(2026, 10, 1, tzinfo=UTC))
                  .values_list("kind", "amount_nanos").order_by())  # fmt: skip
    assert invoice.opening_balance_nanos == 50 * USD
    assert invoice.usage_nanos == -(1_234_567 + 765_433 + 2 * USD) == -2_002_000_000
    assert invoice.adjustments_nanos == ledger["adjustment"] == USD
    assert invoice.closing_balance_nanos == 48_998_000_000 == balance_get(org_id=org.id).balance_nanos
    assert [(line["model"], line["requests"], line["input_tokens"], line["amount_nanos"]) for line in invoice.lines] == [
        ("claude-test", 1, 1000, 2 * USD), ("gpt-test", 2, 160, 2 * USD // 1000),
    ]  # fmt: skip
    assert invoice.number.startswith("RU-202610-")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(bytes(invoice.pdf))).pages)
    assert invoice.number in text and "Closing balance" in text and "$48.998" in text
    assert [m.to for m in mail.outbox] == [["owner@acme.test"]]
    assert mail.outbox[0].attachments[0][0] == f"{invoice.number}.pdf"


def test_postpaid_org_gets_a_stripe_invoice_and_payment_credits(stripe_standin, deliver):
    org = org_with("Acme")
    BillingProfile.objects.update_or_create(org=org, defaults={"is_postpaid": True})
    from billing.models import Balance

    Balance.objects.filter(org=org).update(credit_limit_nanos=100 * USD)
    spend(org, "req_1", 12_345_000_000)
    assert balance_get(org_id=org.id).balance_nanos == -12_345_000_000
    _backdate(datetime(2026, 10, 3, tzinfo=UTC))
    invoices_generate(period_start=date(2026, 10, 1))
    invoice = Invoice.objects.get()
    stripe_invoice = stripe_standin.objects[invoice.stripe_invoice_id]
    assert (stripe_invoice["status"], stripe_invoice["amount_due"]) == ("open", 1235)
    deliver(stripe_standin.event("invoice.paid", stripe_standin.pay_invoice(invoice.stripe_invoice_id)))
    assert balance_get(org_id=org.id).balance_nanos == 12_350_000_000 - 12_345_000_000
    assert ledger_reconcile() == []


def test_postpaid_credit_limit_lets_holds_below_zero():
    org = org_with("Acme")
    from billing.models import Balance
    from billing.services import InsufficientBalanceError

    with pytest.raises(InsufficientBalanceError):
        balance_hold(org_id=org.id, request_id="r0", amount_nanos=1)
    Balance.objects.filter(org=org).update(credit_limit_nanos=usd_to_nanos("1"))
    balance_hold(org_id=org.id, request_id="r1", amount_nanos=usd_to_nanos("1"))
    with pytest.raises(InsufficientBalanceError):
        balance_hold(org_id=org.id, request_id="r2", amount_nanos=1)
