"""A correctly signed Stripe event that disagrees with the stored payment is flagged for an admin (issue 12).

Amount, currency or organisation (metadata, client_reference_id, customer) other than what we stored:
the payment is marked `needs_review` with the reason (admin list filter, email to ADMINS), and only the
stored amount is credited, as before. A matching event flags nothing.
"""

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from billing.models import LedgerEntry, Payment
from billing.money import usd_to_nanos
from billing.services import balance_get, ledger_reconcile, topup_create
from billing.tests.factories import org_with

pytestmark = [pytest.mark.embedded, pytest.mark.django_db]

USD = 1_000_000_000


def _paid_session(stripe_standin, org, **changes) -> tuple[Payment, dict]:
    payment = topup_create(org=org, amount_nanos=usd_to_nanos("25"), success_url="http://t/ok", cancel_url="http://t/no")
    session = stripe_standin.pay(payment.checkout_session_id)
    session.update(changes)
    return payment, session


@pytest.mark.parametrize(
    ("_case", "changes", "reason"),
    [
        ("amount", {"amount_total": 99900}, "amount_total 99900 != stored 2500 (cents)"),
        ("currency", {"currency": "eur"}, "currency 'eur' != 'usd'"),
        ("metadata org", "metadata", "metadata org_id"),
        ("client reference", "client_reference_id", "client_reference_id"),
        ("customer", {"customer": "cus_somebody_else"}, "customer cus_somebody_else != the organisation's"),
    ],
)
def test_a_signed_event_that_disagrees_is_flagged_and_books_the_stored_amount(
    stripe_standin, deliver, settings, _case, changes, reason
):
    # given
    settings.ADMINS = [("Ops", "ops@example.test")]
    org, other = org_with("Acme"), org_with("Globex", usd="1")
    if changes == "metadata":
        changes = {"metadata": {"org_id": str(other.id), "payment_id": "0", "purpose": "topup"}}
    elif changes == "client_reference_id":
        changes = {"client_reference_id": str(other.id)}
    payment, session = _paid_session(stripe_standin, org, **changes)
    event = stripe_standin.event("checkout.session.completed", session)
    # when: delivered (twice: a redelivery adds no second reason)
    assert deliver(event).status_code == 200
    assert deliver(event).status_code == 200
    # then
    payment.refresh_from_db()
    assert payment.status == "paid" and payment.needs_review
    assert reason in payment.review_reason and payment.review_reason.count("disagrees") == 1
    assert balance_get(org_id=org.id).balance_nanos == 25 * USD
    assert list(LedgerEntry.objects.filter(org=org).values_list("kind", "amount_nanos")) == [("topup", 25 * USD)]
    assert balance_get(org_id=other.id).balance_nanos == USD
    assert [m.subject for m in mail.outbox] == [f"[Django] Payment {payment.pk} needs review"]
    assert ledger_reconcile() == []


def test_a_matching_event_flags_nothing(stripe_standin, deliver):
    org = org_with("Acme")
    payment, session = _paid_session(stripe_standin, org)
    assert deliver(stripe_standin.event("checkout.session.completed", session)).status_code == 200
    payment.refresh_from_db()
    assert (payment.status, payment.needs_review, payment.review_reason) == ("paid", False, "")
    assert balance_get(org_id=org.id).balance_nanos == 25 * USD


def test_an_intent_with_another_amount_is_flagged(stripe_standin, deliver):
    org = org_with("Acme")
    payment, session = _paid_session(stripe_standin, org)
    intent = dict(stripe_standin.objects[session["payment_intent"]], amount=1)
    assert deliver(stripe_standin.event("payment_intent.succeeded", intent)).status_code == 200
    payment.refresh_from_db()
    assert payment.needs_review and "amount 1 != stored 2500 (cents)" in payment.review_reason
    assert balance_get(org_id=org.id).balance_nanos == 25 * USD


def test_flagged_payments_are_filtered_in_the_admin_and_can_be_marked_reviewed(stripe_standin, deliver, client):
    # given: one flagged payment, one clean one
    org = org_with("Acme")
    flagged, session = _paid_session(stripe_standin, org, amount_total=1)
    deliver(stripe_standin.event("checkout.session.completed", session))
    clean = topup_create(org=org, amount_nanos=usd_to_nanos("30"), success_url="http://t/ok", cancel_url="http://t/no")
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.test", "pw-ops-123"))
    # when / then: the filter lists only the flagged one
    listing = client.get("/admin/billing/payment/?needs_review__exact=1").content.decode()
    assert f"/admin/billing/payment/{flagged.pk}/change/" in listing
    assert f"/admin/billing/payment/{clean.pk}/change/" not in listing
    # and marking it reviewed clears the flag, keeps the reason and names who
    response = client.post("/admin/billing/payment/", {"action": "mark_reviewed", "_selected_action": [flagged.pk]})
    assert response.status_code == 302
    flagged.refresh_from_db()
    assert not flagged.needs_review and "disagrees" in flagged.review_reason and "reviewed by ops" in flagged.review_reason
