"""Top-ups, webhooks, refunds and disputes against the local Stripe stand-in (no internet)."""

import json
import time

import pytest
from django.core import mail

from accounts.models import Organization
from billing.models import BillingProfile, LedgerEntry, Payment, StripeEvent
from billing.money import usd_to_nanos
from billing.services import (
    StripeDisabledError,
    TopUpAmountError,
    balance_get,
    ledger_reconcile,
    topup_amount_validate,
    topup_create,
)
from billing.tests.factories import org_with

pytestmark = [pytest.mark.embedded, pytest.mark.django_db]

USD = 1_000_000_000


def start_topup(org, usd: str = "25") -> Payment:
    return topup_create(
        org=org, amount_nanos=usd_to_nanos(usd), success_url="http://testserver/ok", cancel_url="http://testserver/no"
    )


def entries(org) -> list[tuple[str, int]]:
    return list(LedgerEntry.objects.filter(org=org).order_by("id").values_list("kind", "amount_nanos"))


def test_topup_end_to_end_credits_once(stripe_standin, deliver):
    # given
    org = org_with("Acme")
    other = org_with("Other", usd="3")
    payment = start_topup(org, "25")
    # when: the customer pays on Checkout and Stripe delivers the event
    session = stripe_standin.pay(payment.checkout_session_id)
    response = deliver(stripe_standin.event("checkout.session.completed", session))
    # then
    assert response.status_code == 200
    assert balance_get(org_id=org.id).balance_nanos == 25 * USD
    assert entries(org) == [("topup", 25 * USD)]
    assert balance_get(org_id=other.id).balance_nanos == 3 * USD
    created = stripe_standin.calls("POST", "/v1/checkout/sessions")[0]
    assert created["mode"] == "payment"
    assert created["line_items"][0]["price_data"]["unit_amount"] == "2500"
    assert created["metadata"] == {"org_id": str(org.id), "payment_id": str(payment.pk), "purpose": "topup"}
    assert payment.checkout_url.startswith(stripe_standin.api_base)
    payment.refresh_from_db()
    assert (payment.status, payment.payment_intent_id) == ("paid", session["payment_intent"])
    assert ledger_reconcile() == []


def test_one_stripe_customer_per_organisation(stripe_standin):
    org = org_with("Acme")
    start_topup(org, "10")
    start_topup(org, "20")
    assert len(stripe_standin.calls("POST", "/v1/customers")) == 1
    assert BillingProfile.objects.get(pk=org.id).stripe_customer_id.startswith("cus_")


def test_same_event_five_times_credits_once(stripe_standin, deliver):
    org = org_with("Acme")
    payment = start_topup(org, "10")
    event = stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id))
    statuses = [deliver(event).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert entries(org) == [("topup", 10 * USD)]
    row = StripeEvent.objects.get()
    assert (row.id, row.status, row.deliveries, row.attempts) == (event["id"], "processed", 5, 1)


def test_same_session_through_different_events_credits_once(stripe_standin, deliver):
    org = org_with("Acme")
    payment = start_topup(org, "10")
    session = stripe_standin.pay(payment.checkout_session_id)
    intent = stripe_standin.objects[session["payment_intent"]]
    for event in (
        stripe_standin.event("payment_intent.succeeded", intent),
        stripe_standin.event("checkout.session.completed", session),
        stripe_standin.event("checkout.session.async_payment_succeeded", session),
    ):
        assert deliver(event).status_code == 200
    assert entries(org) == [("topup", 10 * USD)]
    assert StripeEvent.objects.filter(status="processed").count() == 3


@pytest.mark.parametrize(
    ("_case", "tamper"),
    [
        ("body changed after signing", {"body_change": True}),
        ("stale timestamp", {"timestamp": int(time.time()) - 3600}),
        ("wrong secret", {"secret": "whsec_attacker"}),
    ],
)
def test_bad_signature_is_400_and_credits_nothing(stripe_standin, deliver, _case, tamper):
    org = org_with("Acme")
    payment = start_topup(org, "10")
    event = stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id))
    kwargs = {k: v for k, v in tamper.items() if k != "body_change"}
    if tamper.get("body_change"):
        forged = json.loads(json.dumps(event))
        forged["data"]["object"]["amount_total"] = 999999
        kwargs["body"] = json.dumps(forged)
    response = deliver(event, **kwargs)
    assert response.status_code == 400
    assert entries(org) == []
    assert StripeEvent.objects.count() == 0
    assert Payment.objects.get().status == "pending"


def test_missing_signature_header_is_400(stripe_standin, client):
    response = client.post("/billing/stripe/webhook/", data="{}", content_type="application/json")
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


def test_webhook_refuses_get(client):
    assert client.get("/billing/stripe/webhook/").status_code == 405


def test_async_payment_out_of_order_ends_paid_once(stripe_standin, deliver):
    # given: a delayed payment method; Stripe's events arrive succeeded, failed(stale), completed(unpaid)
    org = org_with("Acme")
    payment = start_topup(org, "30")
    completed_unpaid = stripe_standin.pay(payment.checkout_session_id, delayed=True)
    succeeded = stripe_standin.settle_delayed(payment.checkout_session_id)
    # when
    deliver(stripe_standin.event("checkout.session.async_payment_succeeded", succeeded))
    deliver(stripe_standin.event("checkout.session.async_payment_failed", succeeded))
    deliver(stripe_standin.event("checkout.session.completed", completed_unpaid))
    # then
    assert entries(org) == [("topup", 30 * USD)]
    assert Payment.objects.get().status == "paid"


def test_async_payment_failure_credits_nothing(stripe_standin, deliver):
    org = org_with("Acme")
    payment = start_topup(org, "30")
    deliver(
        stripe_standin.event(
            "checkout.session.completed", stripe_standin.pay(payment.checkout_session_id, delayed=True)
        )
    )
    deliver(
        stripe_standin.event(
            "checkout.session.async_payment_failed",
            stripe_standin.settle_delayed(payment.checkout_session_id, succeeded=False),
        )
    )
    payment.refresh_from_db()
    assert (payment.status, entries(org)) == ("failed", [])
    assert "failed" in payment.error


def test_refund_before_completion_event_ends_in_the_right_state(stripe_standin, deliver):
    # given: the charge.refunded event overtakes checkout.session.completed
    org = org_with("Acme")
    payment = start_topup(org, "20")
    session = stripe_standin.pay(payment.checkout_session_id)
    partial = stripe_standin.refund(payment.checkout_session_id, 500)
    full = stripe_standin.refund(payment.checkout_session_id, 1500)
    # when: newest refund first, then the older (smaller cumulative) one, then the completion
    deliver(stripe_standin.event("charge.refunded", full))
    deliver(stripe_standin.event("charge.refunded", partial))
    deliver(stripe_standin.event("checkout.session.completed", session))
    # then
    assert entries(org) == [("topup", 20 * USD), ("refund", -20 * USD)]
    assert balance_get(org_id=org.id).balance_nanos == 0
    assert ledger_reconcile() == []


def test_partial_refunds_debit_each_increment_once(stripe_standin, deliver):
    org = org_with("Acme")
    payment = start_topup(org, "20")
    deliver(stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id)))
    first = stripe_standin.event("charge.refunded", stripe_standin.refund(payment.checkout_session_id, 500))
    second = stripe_standin.event("charge.refunded", stripe_standin.refund(payment.checkout_session_id, 250))
    for event in (first, second, first, second):
        deliver(event)
    assert entries(org) == [("topup", 20 * USD), ("refund", -5 * USD), ("refund", -int(2.5 * USD))]


def test_refund_of_spent_credit_is_explicit_debt(stripe_standin, deliver):
    # given: $20 topped up, $15 already spent
    org = org_with("Acme")
    payment = start_topup(org, "20")
    deliver(stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id)))
    from billing.services import balance_adjust

    balance_adjust(org_id=org.id, amount_nanos=-15 * USD, reason="spent (test)", actor="test")
    # when
    deliver(stripe_standin.event("charge.refunded", stripe_standin.refund(payment.checkout_session_id)))
    # then
    refund = LedgerEntry.objects.get(kind="refund")
    assert (refund.amount_nanos, refund.is_debt) == (-20 * USD, True)
    assert balance_get(org_id=org.id).balance_nanos == -15 * USD
    assert ledger_reconcile() == []


def test_dispute_debits_freezes_and_flags(stripe_standin, deliver):
    # given
    org = org_with("Acme", owner_email="owner@acme.test")
    other = org_with("Other", usd="1")
    payment = start_topup(org, "10")
    deliver(stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id)))
    dispute = stripe_standin.dispute(payment.checkout_session_id)
    # when (twice: a replay changes nothing)
    deliver(stripe_standin.event("charge.dispute.created", dispute))
    deliver(stripe_standin.event("charge.dispute.created", dispute))
    # then
    assert entries(org) == [("topup", 10 * USD), ("dispute", -10 * USD)]
    assert Organization.objects.get(pk=org.id).is_active is False
    assert Organization.objects.get(pk=other.id).is_active is True
    profile = BillingProfile.objects.get(pk=org.id)
    assert profile.needs_review is True
    assert dispute["id"] in profile.review_reason
    assert ledger_reconcile() == []


def test_dispute_won_restores_credit(stripe_standin, deliver):
    org = org_with("Acme")
    payment = start_topup(org, "10")
    deliver(stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id)))
    dispute = stripe_standin.dispute(payment.checkout_session_id)
    deliver(stripe_standin.event("charge.dispute.created", dispute))
    deliver(stripe_standin.event("charge.dispute.closed", {**dispute, "status": "won"}))
    assert entries(org) == [("topup", 10 * USD), ("dispute", -10 * USD), ("dispute", 10 * USD)]


def test_unknown_session_is_ignored_with_reason(stripe_standin, deliver):
    event = stripe_standin.event("checkout.session.completed", {"id": "cs_test_foreign", "object": "checkout.session",
                                                               "mode": "payment", "payment_status": "paid",
                                                               "metadata": {}})  # fmt: skip
    assert deliver(event).status_code == 200
    row = StripeEvent.objects.get()
    assert (row.status, "not created by RuAPI" in row.error) == ("ignored", True)
    assert LedgerEntry.objects.count() == 0


def test_unhandled_event_type_is_stored_and_ignored(stripe_standin, deliver):
    assert deliver(stripe_standin.event("customer.created", {"id": "cus_x", "object": "customer"})).status_code == 200
    assert StripeEvent.objects.get().status == "ignored"


def test_failed_processing_is_recorded_and_retried(stripe_standin, deliver, monkeypatch):
    from billing.services import stripe_event_process, webhooks

    org = org_with("Acme")
    payment = start_topup(org, "10")
    event = stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id))

    def broken(session):
        raise RuntimeError("database hiccup")

    monkeypatch.setitem(webhooks.HANDLERS, "checkout.session.completed", broken)
    deliver(event)
    row = StripeEvent.objects.get()
    assert row.status == "failed" and "database hiccup" in row.error
    assert entries(org) == []
    monkeypatch.undo()
    assert stripe_event_process(event_id=event["id"]) == "processed"
    assert entries(org) == [("topup", 10 * USD)]


@pytest.mark.parametrize(
    ("_case", "amount"), [("below minimum", "4.99"), ("above maximum", "10000.01"), ("fraction of a cent", "10.001"),
                          ("not a number", "ten"), ("negative", "-5")],
)  # fmt: skip
def test_topup_amount_bounds(_case, amount):
    with pytest.raises(TopUpAmountError):
        topup_amount_validate(amount)


def test_topup_amount_accepted():
    assert topup_amount_validate("12.50") == 12_500_000_000


def test_stripe_off_says_so(settings):
    settings.STRIPE_SECRET_KEY = ""
    org = org_with("Acme")
    with pytest.raises(StripeDisabledError, match="STRIPE_SECRET_KEY"):
        start_topup(org, "10")
    assert Payment.objects.count() == 0


def test_emails_go_to_admins_on_dispute(stripe_standin, deliver, settings):
    settings.ADMINS = [("Ops", "ops@ruapi.test")]
    org = org_with("Acme")
    payment = start_topup(org, "10")
    deliver(stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id)))
    deliver(stripe_standin.event("charge.dispute.created", stripe_standin.dispute(payment.checkout_session_id)))
    assert [m.to for m in mail.outbox] == [["ops@ruapi.test"]]
    assert "frozen" in mail.outbox[0].subject
