"""Every write to balances, the ledger, holds and usage events.

Concurrency: a hold is one conditional UPDATE (the sufficient-balance test in the WHERE, F() in
the SET) plus a rows-affected check — safe on Postgres and on SQLite, where select_for_update does
nothing. State changes of a hold are conditional UPDATEs too, so a request is billed exactly once
even if settle runs twice or races the expiry task.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing.models import Balance, Hold, LedgerEntry, UsageEvent


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


@transaction.atomic
def balance_credit(
    *, org_id: int, amount_nanos: int, kind: str, description: str = "", created_by: str = ""
) -> LedgerEntry:
    """Append a ledger entry (credit > 0 or debit < 0) and move the cached balance with it."""
    if kind == LedgerEntry.Kind.USAGE:
        raise BillingError("usage is debited through hold_settle")
    if amount_nanos == 0:
        raise BillingError("an entry of zero changes nothing")
    balance_ensure(org_id=org_id)
    entry = LedgerEntry.objects.create(
        org_id=org_id, kind=kind, amount_nanos=amount_nanos, description=description, created_by=created_by
    )
    Balance.objects.filter(org_id=org_id).update(balance_nanos=F("balance_nanos") + amount_nanos)
    return entry


def balance_get(*, org_id: int) -> Balance:
    balance_ensure(org_id=org_id)
    return Balance.objects.get(org_id=org_id)


@transaction.atomic
def balance_hold(*, org_id: int, request_id: str, amount_nanos: int) -> Hold:
    """Reserve `amount_nanos` for a request, or raise InsufficientBalanceError. Nothing is debited yet."""
    if amount_nanos < 0:
        raise BillingError("a hold cannot be negative")
    reserved = Balance.objects.filter(org_id=org_id, balance_nanos__gte=F("held_nanos") + amount_nanos).update(
        held_nanos=F("held_nanos") + amount_nanos
    )
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
    units: float | int = 0
    is_estimated: bool = False
    price_id: int | None = None
    cost_nanos: int = 0
    attempts: int = 1
    latency_ms: int = 0
    ttfb_ms: int | None = None


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
    released = 0
    for hold in Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lt=now).iterator():
        with transaction.atomic():
            if Hold.objects.filter(pk=hold.pk, status=Hold.Status.PENDING).update(status=Hold.Status.RELEASED):
                Balance.objects.filter(org_id=hold.org_id).update(held_nanos=F("held_nanos") - hold.amount_nanos)
                released += 1
    return released


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
