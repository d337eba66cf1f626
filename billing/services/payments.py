"""Stripe money in: Checkout top-ups, card setup, and payment state that converges to Stripe's.

A Payment's ledger effect is derived from its state by `payment_converge`: a paid payment has
exactly one top-up entry, and refunds are debited up to Stripe's cumulative `amount_refunded`.
Every webhook handler only moves state forward and then converges, so any number of deliveries,
in any order, and any number of different events about the same Checkout session end in the same
ledger (idempotent on the event id and on the session).
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from accounts.models import Organization
from billing.models import BillingProfile, LedgerEntry, Payment
from billing.money import MoneyError, cents_exact, cents_to_nanos, format_usd, usd_to_nanos
from billing.services.ledger import BillingError, ledger_append
from billing.services.stripe_client import stripe_client

logger = logging.getLogger(__name__)
Kind = LedgerEntry.Kind


class TopUpAmountError(BillingError):
    pass


def stripe_plain(obj) -> dict:
    """A Stripe library object as a plain dict (webhook handlers and API results share one shape)."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    return obj.to_dict()


# --- profiles and customers -----------------------------------------------------------------


def profile_get(*, org_id: int) -> BillingProfile:
    """The organisation's billing profile, created on first use (race-safe)."""
    profile = BillingProfile.objects.filter(pk=org_id).first()
    if profile is None:
        try:
            with transaction.atomic():
                profile = BillingProfile.objects.create(org_id=org_id)
        except IntegrityError:
            profile = BillingProfile.objects.get(pk=org_id)
    return profile


def customer_ensure(*, org: Organization) -> str:
    """The organisation's Stripe customer id, created in Stripe on first use (one per organisation)."""
    profile = profile_get(org_id=org.id)
    if profile.stripe_customer_id:
        return profile.stripe_customer_id
    customer = stripe_client().v1.customers.create(
        params={"name": org.name, "metadata": {"org_id": str(org.id), "org_slug": org.slug}},
        # Two racing first top-ups make one customer: Stripe answers the second with the first.
        options={"idempotency_key": f"ruapi-customer-{org.id}"},
    )
    BillingProfile.objects.filter(pk=org.id, stripe_customer_id__isnull=True).update(stripe_customer_id=customer.id)
    return BillingProfile.objects.values_list("stripe_customer_id", flat=True).get(pk=org.id)


# --- Checkout -------------------------------------------------------------------------------


def topup_amount_validate(amount_usd) -> int:
    """A top-up amount in USD (string or Decimal) -> nano-USD, within the configured bounds, whole cents."""
    try:
        nanos = usd_to_nanos(str(amount_usd).strip())
        cents_exact(nanos)
    except MoneyError as exc:
        raise TopUpAmountError("Enter an amount in dollars and cents, e.g. 25 or 12.50.") from exc
    low, high = usd_to_nanos(settings.RUAPI_TOPUP_MIN_USD), usd_to_nanos(settings.RUAPI_TOPUP_MAX_USD)
    if not low <= nanos <= high:
        raise TopUpAmountError(f"A top-up is between ${format_usd(low)} and ${format_usd(high)}.")
    return nanos


def _metadata(payment: Payment) -> dict:
    return {"org_id": str(payment.org_id), "payment_id": str(payment.pk), "purpose": payment.purpose}


# A double click, a reload or a retried POST within this many seconds reuses the pending top-up of the
# same amount (one Payment, one Checkout session) instead of opening a second one (issue 12).
TOPUP_BURST_SECONDS = 30


def _topup_pending_or_new(*, org: Organization, amount_nanos: int, user) -> Payment:
    """The organisation's pending top-up of this amount from the last TOPUP_BURST_SECONDS, else a new one.

    Serialised per organisation: the UPDATE of its billing profile row is a row lock on Postgres and
    takes SQLite's write lock, so two requests of one click burst cannot both see "none" and insert.
    """
    profile_get(org_id=org.id)
    since = timezone.now() - timedelta(seconds=TOPUP_BURST_SECONDS)
    with transaction.atomic():
        BillingProfile.objects.filter(pk=org.id).update(updated_at=timezone.now())
        recent = Payment.objects.filter(
            org=org, purpose=Payment.Purpose.TOPUP, status=Payment.Status.PENDING, amount_nanos=amount_nanos,
            created_at__gte=since,
        )  # fmt: skip
        payment = recent.order_by("-created_at", "-id").first()
        if payment is None:
            payment = Payment.objects.create(
                org=org, purpose=Payment.Purpose.TOPUP, amount_nanos=amount_nanos, created_by=user
            )
    return payment


def topup_create(*, org: Organization, amount_nanos: int, success_url: str, cancel_url: str, user=None) -> Payment:
    """A Checkout Session (payment mode) for a one-off top-up; the balance rises when Stripe says it is paid.

    Idempotent per click burst: a second call for the same organisation and amount within
    TOPUP_BURST_SECONDS returns the same pending payment and Checkout session. Stripe is asked with
    the payment's Idempotency-Key and the same parameters, so even two calls racing to create the
    session get one session (Stripe answers the second with the first's result).
    """
    client = stripe_client()
    topup_amount_validate(format_usd(amount_nanos))
    customer_id = customer_ensure(org=org)
    payment = _topup_pending_or_new(org=org, amount_nanos=amount_nanos, user=user)
    if payment.checkout_session_id and payment.checkout_url:
        return payment
    metadata = _metadata(payment)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "customer": customer_id,
            "client_reference_id": str(org.id),
            "line_items": [{
                "quantity": 1,
                "price_data": {
                    "currency": settings.STRIPE_CURRENCY,
                    "unit_amount": cents_exact(amount_nanos),
                    "product_data": {"name": f"{settings.RUAPI_BRAND_NAME} credit"},
                },
            }],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
        },
        options={"idempotency_key": payment.idempotency_key},
    )  # fmt: skip
    Payment.objects.filter(pk=payment.pk).update(checkout_session_id=session.id, checkout_url=session.url or "")
    payment.refresh_from_db()
    return payment


def card_setup_create(*, org: Organization, success_url: str, cancel_url: str, user=None) -> Payment:
    """A Checkout Session in setup mode: saves a card for auto-recharge, charges nothing."""
    client = stripe_client()
    customer_id = customer_ensure(org=org)
    payment = Payment.objects.create(org=org, purpose=Payment.Purpose.SETUP, amount_nanos=0, created_by=user)
    metadata = _metadata(payment)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "customer": customer_id,
            "client_reference_id": str(org.id),
            "payment_method_types": ["card"],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
            "setup_intent_data": {"metadata": metadata},
        },
        options={"idempotency_key": payment.idempotency_key},
    )
    Payment.objects.filter(pk=payment.pk).update(checkout_session_id=session.id, checkout_url=session.url or "")
    payment.refresh_from_db()
    return payment


# --- state that only moves forward ----------------------------------------------------------


def payment_mark_paid(*, payment_id: int, payment_intent_id: str | None = None) -> None:
    """pending/failed -> paid (money arrived, whatever was said before), then book it."""
    if payment_intent_id:
        payment_link_intent(payment_id=payment_id, payment_intent_id=payment_intent_id)
    Payment.objects.filter(pk=payment_id).exclude(status=Payment.Status.PAID).update(
        status=Payment.Status.PAID, error=""
    )
    payment_converge(payment_id=payment_id)


def payment_mark_failed(*, payment_id: int, error: str) -> bool:
    """pending -> failed; a paid payment stays paid (a late failure event changes nothing)."""
    return bool(
        Payment.objects.filter(pk=payment_id, status=Payment.Status.PENDING).update(
            status=Payment.Status.FAILED, error=error[:2000]
        )
    )


def payment_link_intent(*, payment_id: int, payment_intent_id: str) -> None:
    Payment.objects.filter(pk=payment_id, payment_intent_id__isnull=True).update(payment_intent_id=payment_intent_id)


def payment_record_refund(*, payment_id: int, refunded_nanos: int) -> None:
    """Stripe's cumulative refunded amount; an older (smaller) figure delivered late changes nothing."""
    Payment.objects.filter(pk=payment_id, refunded_nanos__lt=refunded_nanos).update(refunded_nanos=refunded_nanos)
    payment_converge(payment_id=payment_id)


def _stripe_ref(payment: Payment) -> str:
    return payment.payment_intent_id or payment.checkout_session_id or payment.stripe_invoice_id or ""


@transaction.atomic
def payment_converge(*, payment_id: int) -> None:
    """Make the ledger say what the payment's state says: one credit when paid, refunds debited once."""
    payment = Payment.objects.select_for_update().get(pk=payment_id)
    if payment.status != Payment.Status.PAID or payment.purpose == Payment.Purpose.SETUP:
        return
    if payment.amount_nanos:
        ledger_append(
            org_id=payment.org_id, amount_nanos=payment.amount_nanos, kind=Kind.TOPUP,
            reference=f"payment:{payment.pk}", payment_id=payment.pk,
            description=f"{payment.get_purpose_display()} via Stripe ({_stripe_ref(payment)})",
        )  # fmt: skip
    refunded = min(payment.refunded_nanos, payment.amount_nanos)
    debited = -(
        LedgerEntry.objects.filter(payment_id=payment.pk, kind=Kind.REFUND).aggregate(total=Sum("amount_nanos"))[
            "total"
        ]
        or 0
    )
    if refunded > debited:
        ledger_append(
            org_id=payment.org_id, amount_nanos=-(refunded - debited), kind=Kind.REFUND,
            reference=f"payment:{payment.pk}:refund:{refunded}", payment_id=payment.pk,
            description=f"Refund of {payment.get_purpose_display().lower()} ({payment.payment_intent_id or ''})",
        )  # fmt: skip


def payment_find(obj: dict, *, intent_id: str | None = None) -> Payment | None:
    """Our payment for a Stripe object: by its ids, else by the payment_id we put in its metadata."""
    obj_id = obj.get("id") or ""
    lookups = []
    if obj.get("object") == "checkout.session":
        lookups.append({"checkout_session_id": obj_id})
    if obj.get("object") == "invoice":
        lookups.append({"stripe_invoice_id": obj_id})
    if intent_id:
        lookups.append({"payment_intent_id": intent_id})
    for lookup in lookups:
        payment = Payment.objects.filter(**lookup).first()
        if payment is not None:
            return payment
    payment_id = (obj.get("metadata") or {}).get("payment_id")
    if payment_id and str(payment_id).isdigit():
        payment = Payment.objects.filter(pk=int(payment_id)).first()
        if payment is not None and str(payment.org_id) == str((obj.get("metadata") or {}).get("org_id")):
            return payment
    return None


def payment_find_by_intent(intent_id: str | None) -> Payment | None:
    """By payment intent id; for an intent we have not seen linked yet, ask Stripe for its metadata."""
    if not intent_id:
        return None
    payment = Payment.objects.filter(payment_intent_id=intent_id).first()
    if payment is None:
        intent = stripe_plain(stripe_client().v1.payment_intents.retrieve(intent_id))
        payment = payment_find(intent)
        if payment is not None:
            payment_link_intent(payment_id=payment.pk, payment_intent_id=intent_id)
    return payment


def card_save(*, org_id: int, setup_intent_id: str) -> None:
    """Store the card a setup-mode Checkout saved (for auto-recharge); clears a paused auto-recharge."""
    client = stripe_client()
    setup_intent = stripe_plain(client.v1.setup_intents.retrieve(setup_intent_id))
    method_id = setup_intent.get("payment_method")
    if isinstance(method_id, dict):
        method_id = method_id.get("id")
    if not method_id:
        raise BillingError(f"setup intent {setup_intent_id} has no payment method")
    method = stripe_plain(client.v1.payment_methods.retrieve(method_id))
    card = method.get("card") or {}
    profile_get(org_id=org_id)
    BillingProfile.objects.filter(pk=org_id).update(
        payment_method_id=method_id, card_brand=card.get("brand", "")[:30], card_last4=card.get("last4", "")[:4],
        auto_recharge_error="", auto_recharge_failed_at=None,
    )  # fmt: skip


def org_freeze_for_dispute(*, org_id: int, reason: str) -> None:
    """Stop the organisation's API access and flag it for an admin.

    Organization.is_active is what the gateway's key lookup (accounts.keycache) already checks;
    every process drops its cached keys within the documented bound once the change is published.
    """
    from accounts import keycache

    Organization.objects.filter(pk=org_id).update(is_active=False)
    profile_get(org_id=org_id)
    BillingProfile.objects.filter(pk=org_id).update(needs_review=True)
    profile = BillingProfile.objects.get(pk=org_id)
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M UTC")
    BillingProfile.objects.filter(pk=org_id).update(review_reason=f"{profile.review_reason}\n{stamp}: {reason}".strip())
    transaction.on_commit(lambda: keycache.publish_change(None))


def payment_flag_for_review(*, payment_id: int, reason: str) -> None:
    """Mark a payment for an admin (Payment.needs_review, filterable in the admin) and email the admins.

    Used when a correctly signed Stripe object disagrees with what we stored: the ledger still books
    only the stored amount, but someone must look (a misconfigured account, a tampered session).
    """
    from django.core.mail import mail_admins

    stamp = timezone.now().strftime("%Y-%m-%d %H:%M UTC")
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if reason in payment.review_reason:  # a redelivered event says nothing new
            return
        Payment.objects.filter(pk=payment_id).update(
            needs_review=True, review_reason=f"{payment.review_reason}\n{stamp}: {reason}".strip()[-5000:]
        )
    logger.warning("payment %s flagged for review: %s", payment_id, reason)
    transaction.on_commit(lambda: mail_admins(f"Payment {payment_id} needs review", reason, fail_silently=True))


def payment_mark_reviewed(*, payment_id: int, actor: str) -> None:
    """An admin looked at a flagged payment: clear the flag, keep the reasons (with who cleared it)."""
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M UTC")
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if payment.needs_review:
            Payment.objects.filter(pk=payment_id).update(
                needs_review=False, review_reason=f"{payment.review_reason}\n{stamp}: reviewed by {actor}"[-5000:]
            )


def cents_field(obj: dict, name: str) -> int:
    """A Stripe integer minor-unit field -> nano-USD (the one conversion at the Stripe edge)."""
    return cents_to_nanos(int(obj.get(name) or 0))


def refunded_total(payment_id: int) -> int:
    return -(
        LedgerEntry.objects.filter(payment_id=payment_id, kind=Kind.REFUND).aggregate(total=Sum("amount_nanos"))[
            "total"
        ]
        or 0
    )
