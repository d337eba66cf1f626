"""Balances and the ledger: credits, debits, promotions, adjustments, reconcile.

Holds, settlements and usage events (the request path's money) are billing/services/holds.py.
"""

import uuid
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing.models import Balance, LedgerEntry

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
