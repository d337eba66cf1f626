"""Emails about money: low and zero balance (once per crossing), auto-recharge failures, invoices."""

from django.conf import settings
from django.core.mail import EmailMessage
from django.db.models import F, Q

from accounts.models import Membership
from billing.models import Balance, BillingProfile
from billing.money import format_usd
from billing.services.ledger import BillingError

BILLING_ROLES = (Membership.Role.OWNER, Membership.Role.BILLING)


def billing_contacts(*, org_id: int) -> list[str]:
    """Email addresses of the organisation's owners and billing members."""
    emails = Membership.objects.filter(org_id=org_id, role__in=BILLING_ROLES).exclude(user__email="")
    return sorted(set(emails.values_list("user__email", flat=True)))


def billing_email_send(*, org_id: int, subject: str, body: str, attachments=()) -> int:
    """Send one email to the billing contacts; returns how many messages went out (0 without contacts)."""
    recipients = billing_contacts(org_id=org_id)
    if not recipients:
        return 0
    message = EmailMessage(f"[{settings.RUAPI_BRAND_NAME}] {subject}", body, to=recipients)
    for name, content, mimetype in attachments:
        message.attach(name, content, mimetype)
    return message.send(fail_silently=False)


def balance_alerts_configure(*, org_id: int, notify: bool, threshold_nanos: int) -> BillingProfile:
    """The low-balance email setting: on/off and the threshold (nano-USD)."""
    from billing.services.payments import profile_get

    if threshold_nanos < 0:
        raise BillingError("the threshold cannot be negative")
    profile_get(org_id=org_id)
    BillingProfile.objects.filter(pk=org_id).update(
        notify_low_balance=notify, low_balance_threshold_nanos=threshold_nanos
    )
    return BillingProfile.objects.get(pk=org_id)


def _alert_state(balance_nanos: int, threshold_nanos: int) -> str:
    if balance_nanos <= 0:
        return BillingProfile.AlertState.ZERO
    if balance_nanos < threshold_nanos:
        return BillingProfile.AlertState.LOW
    return BillingProfile.AlertState.OK


_RANK = {BillingProfile.AlertState.OK: 0, BillingProfile.AlertState.LOW: 1, BillingProfile.AlertState.ZERO: 2}


def balance_alerts_check() -> int:
    """Email organisations whose balance crossed their low (or zero) threshold since the last check.

    Once per crossing: the profile remembers the state it notified; only a move to a worse state
    sends mail, and a balance back above the threshold re-arms it. Returns the number of emails.
    """
    missing = Balance.objects.filter(org__billing__isnull=True).values_list("org_id", flat=True)
    BillingProfile.objects.bulk_create([BillingProfile(org_id=i) for i in missing], ignore_conflicts=True)
    threshold = F("org__billing__low_balance_threshold_nanos")
    state = "org__billing__alert_state"
    # Only rows whose state disagrees with their balance (a cheap query; usually empty).
    changed = Balance.objects.filter(
        (Q(balance_nanos__lte=0) & ~Q(**{state: "zero"}))
        | (Q(balance_nanos__gt=0, balance_nanos__lt=threshold) & ~Q(**{state: "low"}))
        | (Q(balance_nanos__gte=threshold) & ~Q(**{state: "ok"}))
    ).values_list("org_id", "balance_nanos", "org__billing__low_balance_threshold_nanos", state, "org__name",
                  "org__billing__notify_low_balance")  # fmt: skip
    sent = 0
    for org_id, balance_nanos, threshold_nanos, old, org_name, notify in changed:
        new = _alert_state(balance_nanos, threshold_nanos)
        # Conditional: two checkers racing send one email.
        if not BillingProfile.objects.filter(pk=org_id, alert_state=old).update(alert_state=new):
            continue
        if not notify or _RANK[new] <= _RANK[old]:
            continue
        if new == BillingProfile.AlertState.ZERO:
            subject = f"{org_name}: your balance is used up"
            body = (f"The balance of {org_name} is ${format_usd(balance_nanos)}. API requests are refused "
                    "until you top up.")  # fmt: skip
        else:
            subject = f"{org_name}: low balance"
            body = (f"The balance of {org_name} is ${format_usd(balance_nanos)}, below your alert threshold of "
                    f"${format_usd(threshold_nanos)}. Top up to keep your API requests working.")  # fmt: skip
        sent += billing_email_send(org_id=org_id, subject=subject, body=body + f"\n\n{_billing_url()}")
    return sent


def _billing_url() -> str:
    return f"{settings.RUAPI_PUBLIC_BASE_URL.rstrip('/')}/billing/"
