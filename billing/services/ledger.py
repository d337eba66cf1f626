"""Every write to balances, the ledger, holds and usage events.

Concurrency: a hold is one conditional UPDATE (the sufficient-balance test in the WHERE, F() in
the SET) plus a rows-affected check — safe on Postgres and on SQLite, where select_for_update does
nothing. State changes of a hold are conditional UPDATEs too, so a request is billed exactly once
even if settle runs twice or races the expiry task.
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import fastpath

Kind = LedgerEntry.Kind


class InsufficientBalanceError(Exception):
    pass


class BillingError(ValueError):
    pass


def balance_ensure(*, org_id: int) -> None:
    """Create the organisation's balance row if missing (idempotent, race-safe)."""
    if not Balance.objects.filter(org_id=org_id).exists():
        try:
            with transaction.atomic():
                Balance.objects.create(org_id=org_id)
        except IntegrityError:
            pass  # created concurrently


def ledger_append(
    *,
    org_id: int,
    amount_nanos: int,
    kind: str,
    description: str = "",
    created_by: str = "",
    reference: str = "",
    payment_id: int | None = None,
    expires_at=None,
) -> tuple[LedgerEntry, bool]:
    """Append one entry and move the cached balance with it, atomically; (entry, created).

    Idempotent on (kind, reference) for the referenced kinds: a second call with the same
    reference returns the first entry and changes nothing. A debit that leaves the balance below
    zero is flagged `is_debt` (only refunds and disputes of already-spent credit can do that here).
    """
    if kind == Kind.USAGE:
        raise BillingError("usage is debited through hold_settle")
    if amount_nanos == 0 and kind != Kind.PROMO_EXPIRY:
        raise BillingError("an entry of zero changes nothing")
    if kind in LedgerEntry.CREDIT_KINDS and amount_nanos < 0:
        raise BillingError(f"a {kind} entry is a credit")
    if kind in LedgerEntry.DEBIT_KINDS and amount_nanos > 0:
        raise BillingError(f"a {kind} entry is a debit")
    if kind == Kind.ADJUSTMENT and not (description.strip() and created_by.strip()):
        raise BillingError("a manual adjustment needs a reason and an actor")
    if kind in LedgerEntry.REFERENCED_KINDS and not reference:
        raise BillingError(f"a {kind} entry needs a reference")
    balance_ensure(org_id=org_id)
    try:
        with transaction.atomic():
            entry = LedgerEntry.objects.create(
                org_id=org_id, kind=kind, amount_nanos=amount_nanos, description=description[:500],
                created_by=created_by[:200], reference=reference, payment_id=payment_id, expires_at=expires_at,
            )  # fmt: skip
            Balance.objects.filter(org_id=org_id).update(balance_nanos=F("balance_nanos") + amount_nanos)
            if amount_nanos < 0 and Balance.objects.filter(org_id=org_id, balance_nanos__lt=0).exists():
                LedgerEntry.objects.filter(pk=entry.pk).update(is_debt=True)
                entry.is_debt = True
    except IntegrityError:
        if not reference:
            raise
        existing = LedgerEntry.objects.filter(kind=kind, reference=reference).first()
        if existing is None:
            raise
        return existing, False
    return entry, True


@transaction.atomic
def balance_credit(
    *, org_id: int, amount_nanos: int, kind: str, description: str = "", created_by: str = ""
) -> LedgerEntry:
    """Append a ledger entry (credit > 0 or debit < 0) and move the cached balance with it."""
    entry, _ = ledger_append(
        org_id=org_id, amount_nanos=amount_nanos, kind=kind, description=description, created_by=created_by,
        reference="" if kind not in LedgerEntry.REFERENCED_KINDS else f"manual:{uuid.uuid4().hex}",
    )  # fmt: skip
    return entry


def balance_adjust(*, org_id: int, amount_nanos: int, reason: str, actor: str) -> LedgerEntry:
    """A manual adjustment (either sign) by an operator, with its reason and actor on the entry."""
    entry, _ = ledger_append(
        org_id=org_id, amount_nanos=amount_nanos, kind=Kind.ADJUSTMENT, description=reason, created_by=actor
    )
    return entry


def promo_grant(
    *, org_id: int, amount_nanos: int, description: str = "Promotional credit", actor: str = "", expires_at=None
) -> LedgerEntry:
    """Promotional credit, optionally expiring: at `expires_at` its unused remainder is written off."""
    if amount_nanos <= 0:
        raise BillingError("promotional credit must be positive")
    if expires_at is not None and expires_at <= timezone.now():
        raise BillingError("the expiry must be in the future")
    entry, _ = ledger_append(
        org_id=org_id, amount_nanos=amount_nanos, kind=Kind.PROMO, description=description, created_by=actor,
        expires_at=expires_at,
    )  # fmt: skip
    return entry


def promos_expire(*, now=None) -> int:
    """Write off the unused remainder of every expired promotional grant, once each (explicit entries).

    Usage spends promotional credit first: the remainder is the grant minus the usage debited since
    it was granted, never more than the balance (an expiry never creates debt). An expiry with
    nothing left is still written, as a zero entry, so each grant is visibly closed.
    """
    now = now or timezone.now()
    grants = LedgerEntry.objects.filter(kind=Kind.PROMO, expires_at__lte=now).order_by("expires_at", "id")
    done = set(
        LedgerEntry.objects.filter(kind=Kind.PROMO_EXPIRY, reference__startswith="promo:").values_list(
            "reference", flat=True
        )
    )
    written = 0
    for grant in grants.iterator():
        reference = f"promo:{grant.pk}"
        if reference in done:
            continue
        with transaction.atomic():
            balance_ensure(org_id=grant.org_id)
            balance = Balance.objects.select_for_update().get(org_id=grant.org_id)
            spent = -(
                LedgerEntry.objects.filter(
                    org_id=grant.org_id, kind=Kind.USAGE, created_at__gte=grant.created_at
                ).aggregate(total=Sum("amount_nanos"))["total"]
                or 0
            )
            remainder = min(max(grant.amount_nanos - spent, 0), max(balance.balance_nanos, 0))
            _, created = ledger_append(
                org_id=grant.org_id, amount_nanos=-remainder, kind=Kind.PROMO_EXPIRY, reference=reference,
                description=f"Unused promotional credit expired ({grant.description})"[:500],
                created_by="expiry task",
            )  # fmt: skip
            written += created
    return written


def balance_get(*, org_id: int) -> Balance:
    balance_ensure(org_id=org_id)
    return Balance.objects.get(org_id=org_id)


@transaction.atomic
def balance_hold(*, org_id: int, request_id: str, amount_nanos: int) -> Hold:
    """Reserve `amount_nanos` for a request, or raise InsufficientBalanceError. Nothing is debited yet."""
    if amount_nanos < 0:
        raise BillingError("a hold cannot be negative")
    if fastpath.is_available():
        hold = fastpath.hold_create(org_id=org_id, request_id=request_id, amount_nanos=amount_nanos)
        if hold is None:
            raise InsufficientBalanceError("Insufficient balance: top up to continue.")
        return hold
    # balance + credit limit >= held + amount; the credit limit is zero unless the org is postpaid.
    reserved = Balance.objects.filter(
        org_id=org_id, balance_nanos__gte=F("held_nanos") + amount_nanos - F("credit_limit_nanos")
    ).update(held_nanos=F("held_nanos") + amount_nanos)
    if not reserved:
        raise InsufficientBalanceError("Insufficient balance: top up to continue.")
    return Hold.objects.create(
        org_id=org_id,
        request_id=request_id,
        amount_nanos=amount_nanos,
        expires_at=timezone.now() + timedelta(seconds=settings.RUAPI_HOLD_TTL),
    )


@dataclass(frozen=True)
class UsageRecord:
    """What the gateway measured for one request (token counts from the upstream, or estimated)."""

    request_id: str
    org_id: int
    api_key_id: int | None
    endpoint: str
    model: str
    client_protocol: str
    status_code: int
    provider: str = ""
    upstream_model: str = ""
    upstream_protocol: str = ""
    is_stream: bool = False
    error_type: str = ""
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    units: float | int = 0
    is_estimated: bool = False
    price_id: int | None = None
    cost_nanos: int = 0
    attempts: int = 1
    latency_ms: int = 0
    ttfb_ms: int | None = None
    source: str = "api"  # UsageEvent.Source
    user_id: int | None = None  # the dashboard user, for playground requests


def hold_settle(*, hold: Hold, usage: UsageRecord) -> UsageEvent:
    """Debit the actual cost, release the rest of the hold, and write the one usage event.

    Idempotent on the request id: a second call returns the first event and debits nothing
    (two racing calls: the unique constraints on the usage event and the usage ledger entry
    roll the loser back). A hold that already expired (released by the task) is still billed —
    a debit is never lost; the cost may then exceed what was reserved.
    """
    if usage.cost_nanos < 0:
        raise BillingError("a cost cannot be negative")
    try:
        if fastpath.is_available():
            return fastpath.hold_settle(hold=hold, event=UsageEvent(**usage.__dict__), cost_nanos=usage.cost_nanos)
        return _hold_settle(hold, usage)
    except IntegrityError:
        existing = UsageEvent.objects.filter(request_id=usage.request_id).first()
        if existing is None:
            raise
        return existing


@transaction.atomic
def _hold_settle(hold: Hold, usage: UsageRecord) -> UsageEvent:
    existing = UsageEvent.objects.filter(request_id=usage.request_id).first()
    if existing is not None:
        return existing
    was_pending = Hold.objects.filter(pk=hold.pk, status=Hold.Status.PENDING).update(status=Hold.Status.SETTLED)
    if not was_pending:
        Hold.objects.filter(pk=hold.pk).update(status=Hold.Status.SETTLED)
    release = hold.amount_nanos if was_pending else 0
    if release or usage.cost_nanos:
        Balance.objects.filter(org_id=hold.org_id).update(
            held_nanos=F("held_nanos") - release, balance_nanos=F("balance_nanos") - usage.cost_nanos
        )
    if usage.cost_nanos:
        LedgerEntry.objects.create(
            org_id=hold.org_id,
            kind=LedgerEntry.Kind.USAGE,
            amount_nanos=-usage.cost_nanos,
            request_id=usage.request_id,
            description=f"{usage.model} ({usage.endpoint})",
        )
    return UsageEvent.objects.create(**usage.__dict__)


def holds_expire(*, now=None) -> int:
    """Release pending holds past their expiry (left by crashed processes). Returns how many."""
    now = now or timezone.now()
    return sum(hold_release(hold=hold) for hold in Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lt=now))


@transaction.atomic
def hold_release(*, hold: Hold) -> bool:
    """Give a pending hold's money back without debiting anything (False if it was not pending)."""
    if not Hold.objects.filter(pk=hold.pk, status=Hold.Status.PENDING).update(status=Hold.Status.RELEASED):
        return False
    Balance.objects.filter(org_id=hold.org_id).update(held_nanos=F("held_nanos") - hold.amount_nanos)
    return True


@dataclass(frozen=True)
class Drift:
    org_id: int
    org_name: str
    balance_nanos: int
    ledger_nanos: int


def ledger_reconcile() -> list[Drift]:
    """Organisations whose cached balance differs from their ledger sum (empty when all agree)."""
    sums = dict(LedgerEntry.objects.values("org_id").annotate(total=Sum("amount_nanos")).values_list("org_id", "total"))
    drifts = []
    for balance in Balance.objects.select_related("org"):
        ledger = sums.pop(balance.org_id, 0) or 0
        if ledger != balance.balance_nanos:
            drifts.append(Drift(balance.org_id, balance.org.name, balance.balance_nanos, ledger))
    for org_id, total in sums.items():  # entries without a balance row
        if total:
            drifts.append(Drift(org_id, str(org_id), 0, total))
    return drifts
