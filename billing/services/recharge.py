"""Auto-recharge: charge the saved card off-session when the balance falls below the threshold.

Never on the hot path: a periodic task finds organisations below their threshold (one cheap query)
and runs `auto_recharge_run` for each. At most one recharge is pending per organisation (a partial
unique constraint), and its Stripe call carries the payment's idempotency key, so a crash or a retry
re-sends the same request and Stripe charges once. A daily cap bounds the total per UTC day.
"""

import logging
from datetime import UTC, datetime, time

import stripe
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing.models import Balance, BillingProfile, Payment
from billing.money import format_usd, nanos_to_cents
from billing.services.ledger import BillingError
from billing.services.notifications import billing_email_send
from billing.services.payments import payment_link_intent, payment_mark_failed, payment_mark_paid, profile_get
from billing.services.stripe_client import stripe_client, stripe_enabled

logger = logging.getLogger(__name__)


def auto_recharge_configure(
    *, org_id: int, enabled: bool, threshold_nanos: int, amount_nanos: int, daily_cap_nanos: int
) -> BillingProfile:
    """Save the settings; saving also resumes an auto-recharge paused by a failure."""
    if min(threshold_nanos, amount_nanos, daily_cap_nanos) < 0:
        raise BillingError("amounts cannot be negative")
    if enabled:
        if amount_nanos <= 0 or nanos_to_cents(amount_nanos) < 50:
            raise BillingError("the recharge amount must be at least $0.50")
        if daily_cap_nanos < amount_nanos:
            raise BillingError("the daily cap must be at least one recharge amount")
    profile_get(org_id=org_id)
    BillingProfile.objects.filter(pk=org_id).update(
        auto_recharge_enabled=enabled, auto_recharge_threshold_nanos=threshold_nanos,
        auto_recharge_amount_nanos=amount_nanos, auto_recharge_daily_cap_nanos=daily_cap_nanos,
        auto_recharge_error="", auto_recharge_failed_at=None,
    )  # fmt: skip
    return BillingProfile.objects.get(pk=org_id)


def auto_recharge_due() -> list[int]:
    """Organisations below their threshold with a card, not paused, and no recharge in flight."""
    pending = Payment.objects.filter(purpose=Payment.Purpose.AUTO_RECHARGE, status=Payment.Status.PENDING)
    return list(
        Balance.objects.filter(
            org__billing__auto_recharge_enabled=True,
            org__billing__auto_recharge_error="",
            balance_nanos__lt=F("org__billing__auto_recharge_threshold_nanos"),
        )
        .exclude(org__billing__payment_method_id="")
        .exclude(org_id__in=pending.values("org_id"))
        .values_list("org_id", flat=True)
    ) + list(pending.values_list("org_id", flat=True))  # resume any recharge left pending by a crash


def _spent_today(org_id: int) -> int:
    start = timezone.make_aware(datetime.combine(timezone.now().date(), time.min), UTC)
    return (
        Payment.objects.filter(
            org_id=org_id, purpose=Payment.Purpose.AUTO_RECHARGE, created_at__gte=start,
            status__in=[Payment.Status.PENDING, Payment.Status.PAID],
        ).aggregate(total=Sum("amount_nanos"))["total"]
        or 0
    )  # fmt: skip


def _pending_or_new(org_id: int, profile: BillingProfile) -> Payment | None:
    pending = Payment.objects.filter(
        org_id=org_id, purpose=Payment.Purpose.AUTO_RECHARGE, status=Payment.Status.PENDING
    ).first()
    if pending is not None:
        return pending
    balance = Balance.objects.get(org_id=org_id)
    if not (profile.auto_recharge_enabled and profile.payment_method_id and not profile.auto_recharge_error):
        return None
    if balance.balance_nanos >= profile.auto_recharge_threshold_nanos:
        return None
    amount = profile.auto_recharge_amount_nanos
    if _spent_today(org_id) + amount > profile.auto_recharge_daily_cap_nanos:
        logger.info("auto-recharge of org %s skipped: daily cap reached", org_id)
        return None
    try:
        with transaction.atomic():
            return Payment.objects.create(org_id=org_id, purpose=Payment.Purpose.AUTO_RECHARGE, amount_nanos=amount)
    except IntegrityError:
        return None  # another worker created the pending recharge: it charges, not us


def auto_recharge_run(*, org_id: int) -> Payment | None:
    """Charge the saved card once if the organisation is below its threshold; None if nothing to do."""
    if not stripe_enabled():
        return None
    profile = profile_get(org_id=org_id)
    payment = _pending_or_new(org_id, profile)
    if payment is None:
        return None
    try:
        intent = stripe_client().v1.payment_intents.create(
            params={
                "amount": nanos_to_cents(payment.amount_nanos),
                "currency": "usd",
                "customer": profile.stripe_customer_id,
                "payment_method": profile.payment_method_id,
                "off_session": True,
                "confirm": True,
                "description": "Auto-recharge",
                "metadata": {"org_id": str(org_id), "payment_id": str(payment.pk), "purpose": payment.purpose},
            },
            options={"idempotency_key": payment.idempotency_key},
        )
    except stripe.CardError as exc:
        intent_id = ((exc.json_body or {}).get("error") or {}).get("payment_intent", {}).get("id")
        if intent_id:
            payment_link_intent(payment_id=payment.pk, payment_intent_id=intent_id)
        _recharge_failed(payment, exc.user_message or str(exc))
        return Payment.objects.get(pk=payment.pk)
    except stripe.StripeError as exc:
        # Outcome unknown (network, Stripe down): stay pending; the next run retries with the same key.
        logger.warning("auto-recharge of org %s: %s (will retry)", org_id, exc)
        Payment.objects.filter(pk=payment.pk).update(error=str(exc)[:2000])
        return Payment.objects.get(pk=payment.pk)
    payment_link_intent(payment_id=payment.pk, payment_intent_id=intent.id)
    if intent.status == "succeeded":
        payment_mark_paid(payment_id=payment.pk)
    elif intent.status in ("processing",):
        pass  # payment_intent.succeeded / payment_failed will settle it
    else:
        _recharge_failed(payment, f"The card needs the cardholder ({intent.status}); update the saved card.")
    return Payment.objects.get(pk=payment.pk)


def _recharge_failed(payment: Payment, message: str) -> None:
    if not payment_mark_failed(payment_id=payment.pk, error=message):
        return
    BillingProfile.objects.filter(pk=payment.org_id).update(
        auto_recharge_error=message[:2000], auto_recharge_failed_at=timezone.now()
    )
    billing_email_send(
        org_id=payment.org_id,
        subject="Auto-recharge failed",
        body=(f"We could not charge ${format_usd(payment.amount_nanos)} to the saved card: {message}\n\n"
              "Auto-recharge is paused until you update the card or save the auto-recharge settings again."),
    )  # fmt: skip


def auto_recharge_scan() -> int:
    """Run every due auto-recharge; returns how many were attempted."""
    attempted = 0
    for org_id in auto_recharge_due():
        try:
            if auto_recharge_run(org_id=org_id) is not None:
                attempted += 1
        except Exception:
            logger.exception("auto-recharge of org %s failed", org_id)
    return attempted
