"""Stripe webhooks: verify, store the raw event under its id first, then process it once in a task.

Processing runs in `atomic()` with the event row locked, records status and error on the row, and
dispatches through HANDLERS ({event type: handler}). Handlers only move payment state forward and
converge the ledger (services.payments), so replays and out-of-order delivery end in one state.
"""

import json
import logging
import traceback
from datetime import timedelta

import stripe
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from billing.models import BillingProfile, LedgerEntry, Payment, StripeEvent
from billing.money import format_usd, nanos_to_cents
from billing.services.ledger import BillingError, ledger_append
from billing.services.payments import (
    card_save,
    cents_field,
    org_freeze_for_dispute,
    payment_converge,
    payment_find,
    payment_find_by_intent,
    payment_flag_for_review,
    payment_link_intent,
    payment_mark_failed,
    payment_mark_paid,
    payment_record_refund,
)

logger = logging.getLogger(__name__)
Kind = LedgerEntry.Kind


class WebhookSignatureError(BillingError):
    pass


class EventIgnoredError(Exception):
    """The event is about something that is not ours (or needs nothing); kept with this reason."""


def stripe_event_receive(*, payload: bytes, signature: str | None) -> tuple[StripeEvent, bool]:
    """Verify the signature on the raw body (with timestamp tolerance) and store the event; (row, is_new).

    The row is written before any processing, under the event's unique id: a redelivery finds it.
    """
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise WebhookSignatureError("STRIPE_WEBHOOK_SECRET is not set: webhooks are off")
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, settings.STRIPE_WEBHOOK_SECRET, tolerance=settings.STRIPE_WEBHOOK_TOLERANCE
        )
    except (stripe.SignatureVerificationError, ValueError) as exc:
        raise WebhookSignatureError(str(exc)) from exc
    try:
        with transaction.atomic():
            row = StripeEvent.objects.create(id=event.id, type=event.type, payload=payload.decode("utf-8"))
        return row, True
    except IntegrityError:
        StripeEvent.objects.filter(pk=event.id).update(deliveries=F("deliveries") + 1)
        return StripeEvent.objects.get(pk=event.id), False


def stripe_event_needs_processing(row: StripeEvent) -> bool:
    return row.status in (StripeEvent.Status.RECEIVED, StripeEvent.Status.FAILED)


def stripe_event_process(*, event_id: str) -> str:
    """Process one stored event exactly once; returns its final status. Safe to call again."""
    row = StripeEvent.objects.filter(pk=event_id).first()
    if row is None or not stripe_event_needs_processing(row):
        return row.status if row else "missing"
    StripeEvent.objects.filter(pk=event_id).update(attempts=F("attempts") + 1)
    handler = HANDLERS.get(row.type)
    try:
        with transaction.atomic():
            # Two workers with the same event: the second waits here and then sees it processed.
            locked = StripeEvent.objects.select_for_update().get(pk=event_id)
            if not stripe_event_needs_processing(locked):
                return locked.status
            if handler is None:
                raise EventIgnoredError(f"no handler for {row.type}")
            handler(json.loads(row.payload)["data"]["object"])
            StripeEvent.objects.filter(pk=event_id).update(
                status=StripeEvent.Status.PROCESSED, processed_at=timezone.now(), error=""
            )
            return StripeEvent.Status.PROCESSED
    except EventIgnoredError as exc:
        StripeEvent.objects.filter(pk=event_id).update(
            status=StripeEvent.Status.IGNORED, processed_at=timezone.now(), error=str(exc)
        )
        return StripeEvent.Status.IGNORED
    except Exception as exc:
        logger.exception("stripe event %s (%s) failed", event_id, row.type)
        StripeEvent.objects.filter(pk=event_id).update(
            status=StripeEvent.Status.FAILED, error=f"{exc!r}\n{traceback.format_exc()}"[-5000:]
        )
        return StripeEvent.Status.FAILED


def stripe_events_retry(*, max_attempts: int = 10) -> int:
    """Process events left received (a lost task) or failed (a bug, Stripe down); returns how many ran."""
    stale = timezone.now() - timedelta(minutes=2)
    ids = list(
        StripeEvent.objects.filter(
            status__in=[StripeEvent.Status.RECEIVED, StripeEvent.Status.FAILED],
            attempts__lt=max_attempts,
            received_at__lt=stale,
        ).values_list("pk", flat=True)[:500]
    )
    for event_id in ids:
        stripe_event_process(event_id=event_id)
    return len(ids)


# --- handlers: one Stripe object in, state moved forward ---------------------------------------


def _expected_currency(payment: Payment) -> str:
    # Postpaid invoices are issued in USD (services.invoices); Checkout and recharges in STRIPE_CURRENCY.
    return "usd" if payment.purpose == Payment.Purpose.POSTPAID_INVOICE else settings.STRIPE_CURRENCY.lower()


def _flag_if_mismatched(payment: Payment, obj: dict, *, amount_field: str | None) -> None:
    """A signed Stripe object that disagrees with the stored payment (amount, currency, organisation)
    is flagged for an admin. The handler goes on and books only the stored amount, as always."""
    problems = []
    if amount_field and payment.purpose != Payment.Purpose.SETUP and obj.get(amount_field) is not None:
        expected = nanos_to_cents(payment.amount_nanos)
        if int(obj[amount_field]) != expected:
            problems.append(f"{amount_field} {obj[amount_field]} != stored {expected} (cents)")
    currency = obj.get("currency")
    if currency and payment.purpose != Payment.Purpose.SETUP and str(currency).lower() != _expected_currency(payment):
        problems.append(f"currency {currency!r} != {_expected_currency(payment)!r}")
    org_id = str(payment.org_id)
    metadata_org = (obj.get("metadata") or {}).get("org_id")
    if metadata_org and str(metadata_org) != org_id:
        problems.append(f"metadata org_id {metadata_org} != payment's organisation {org_id}")
    reference = obj.get("client_reference_id")
    if reference and str(reference) != org_id:
        problems.append(f"client_reference_id {reference} != payment's organisation {org_id}")
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    if customer:
        ours = BillingProfile.objects.filter(pk=payment.org_id).values_list("stripe_customer_id", flat=True).first()
        if ours and customer != ours:
            problems.append(f"customer {customer} != the organisation's {ours}")
    if problems:
        what = f"Stripe {obj.get('object', 'object')} {obj.get('id', '?')}"
        reason = f"{what} disagrees with payment {payment.pk}: {'; '.join(problems)}. Booked the stored amount."
        payment_flag_for_review(payment_id=payment.pk, reason=reason)


def _session_payment(session: dict) -> Payment:
    payment = payment_find(session)
    if payment is None:
        raise EventIgnoredError(f"checkout session {session.get('id')} was not created by RuAPI")
    if session.get("id") and not payment.checkout_session_id:
        Payment.objects.filter(pk=payment.pk, checkout_session_id__isnull=True).update(
            checkout_session_id=session["id"]
        )
    return payment


def checkout_session_completed(session: dict) -> None:
    payment = _session_payment(session)
    _flag_if_mismatched(payment, session, amount_field="amount_total")
    if session.get("mode") == "setup":
        if session.get("setup_intent"):
            card_save(org_id=payment.org_id, setup_intent_id=session["setup_intent"])
        payment_mark_paid(payment_id=payment.pk)
        return
    intent_id = session.get("payment_intent")
    if intent_id:
        payment_link_intent(payment_id=payment.pk, payment_intent_id=intent_id)
    # "unpaid" here means an asynchronous method (bank debit): async_payment_succeeded follows.
    if session.get("payment_status") in ("paid", "no_payment_required"):
        payment_mark_paid(payment_id=payment.pk)


def checkout_session_async_payment_succeeded(session: dict) -> None:
    payment = _session_payment(session)
    _flag_if_mismatched(payment, session, amount_field="amount_total")
    payment_mark_paid(payment_id=payment.pk, payment_intent_id=session.get("payment_intent"))


def checkout_session_async_payment_failed(session: dict) -> None:
    payment = _session_payment(session)
    payment_mark_failed(payment_id=payment.pk, error="The payment failed (asynchronous payment method).")


def checkout_session_expired(session: dict) -> None:
    payment = _session_payment(session)
    payment_mark_failed(payment_id=payment.pk, error="The Checkout session expired unpaid.")


def payment_intent_succeeded(intent: dict) -> None:
    payment = payment_find(intent, intent_id=intent.get("id"))
    if payment is None:
        raise EventIgnoredError(f"payment intent {intent.get('id')} was not created by RuAPI")
    _flag_if_mismatched(payment, intent, amount_field="amount")
    payment_mark_paid(payment_id=payment.pk, payment_intent_id=intent["id"])


def payment_intent_payment_failed(intent: dict) -> None:
    payment = payment_find(intent, intent_id=intent.get("id"))
    if payment is None:
        raise EventIgnoredError(f"payment intent {intent.get('id')} was not created by RuAPI")
    payment_link_intent(payment_id=payment.pk, payment_intent_id=intent["id"])
    error = (intent.get("last_payment_error") or {}).get("message") or "The card was declined."
    payment_mark_failed(payment_id=payment.pk, error=error)


def charge_refunded(charge: dict) -> None:
    """Debit the refunded credit (Stripe's cumulative amount_refunded, so replays debit nothing more)."""
    payment = payment_find_by_intent(charge.get("payment_intent"))
    if payment is None:
        raise EventIgnoredError(f"charge {charge.get('id')} is not a RuAPI payment")
    _flag_if_mismatched(payment, charge, amount_field="amount")
    if charge.get("paid") or charge.get("status") == "succeeded":
        # A refunded charge was paid, even if the session's own event has not arrived yet.
        payment_mark_paid(payment_id=payment.pk)
    payment_record_refund(payment_id=payment.pk, refunded_nanos=cents_field(charge, "amount_refunded"))


def charge_dispute_created(dispute: dict) -> None:
    """Debit the disputed credit, freeze the organisation's API access and flag it for an admin."""
    intent_id = dispute.get("payment_intent")
    if not intent_id and dispute.get("charge"):
        from billing.services.stripe_client import stripe_client

        charge = stripe_client().v1.charges.retrieve(dispute["charge"])
        intent_id = charge.payment_intent
    payment = payment_find_by_intent(intent_id)
    if payment is None:
        raise EventIgnoredError(f"dispute {dispute.get('id')} is not about a RuAPI payment")
    payment_mark_paid(payment_id=payment.pk)
    payment.refresh_from_db()
    payment_converge(payment_id=payment.pk)
    disputed = min(
        cents_field(dispute, "amount"), payment.amount_nanos - min(payment.refunded_nanos, payment.amount_nanos)
    )
    if disputed > 0:
        ledger_append(
            org_id=payment.org_id, amount_nanos=-disputed, kind=Kind.DISPUTE, payment_id=payment.pk,
            reference=f"dispute:{dispute['id']}",
            description=f"Disputed payment ({dispute.get('reason') or 'no reason given'}), dispute {dispute['id']}",
        )  # fmt: skip
    reason = f"Stripe dispute {dispute['id']} of ${format_usd(cents_field(dispute, 'amount'))} on payment {payment.pk}"
    org_freeze_for_dispute(org_id=payment.org_id, reason=reason)
    transaction.on_commit(
        lambda: mail_admins(
            "Payment disputed: organisation frozen",
            f"{reason}. The organisation's API access is frozen until an admin reactivates it.",
            fail_silently=True,
        )
    )


def charge_dispute_closed(dispute: dict) -> None:
    """A dispute won gives the disputed credit back (access stays frozen until an admin decides)."""
    if dispute.get("status") != "won":
        return
    entry = LedgerEntry.objects.filter(kind=Kind.DISPUTE, reference=f"dispute:{dispute['id']}").first()
    if entry is None:
        raise EventIgnoredError(f"dispute {dispute.get('id')} was never debited")
    ledger_append(
        org_id=entry.org_id, amount_nanos=-entry.amount_nanos, kind=Kind.DISPUTE, payment_id=entry.payment_id,
        reference=f"dispute:{dispute['id']}:won", description=f"Dispute {dispute['id']} won: credit restored",
    )  # fmt: skip


def invoice_paid(invoice: dict) -> None:
    payment = payment_find(invoice)
    if payment is None:
        raise EventIgnoredError(f"invoice {invoice.get('id')} was not created by RuAPI")
    _flag_if_mismatched(payment, invoice, amount_field="amount_paid")
    payment_mark_paid(payment_id=payment.pk)


def invoice_payment_failed(invoice: dict) -> None:
    payment = payment_find(invoice)
    if payment is None:
        raise EventIgnoredError(f"invoice {invoice.get('id')} was not created by RuAPI")
    Payment.objects.filter(pk=payment.pk).update(error="The invoice payment failed; Stripe retries it.")


HANDLERS = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "checkout.session.expired": checkout_session_expired,
    "payment_intent.succeeded": payment_intent_succeeded,
    "payment_intent.payment_failed": payment_intent_payment_failed,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": charge_dispute_created,
    "charge.dispute.closed": charge_dispute_closed,
    "invoice.paid": invoice_paid,
    "invoice.payment_failed": invoice_payment_failed,
}
