"""Credit that does not come from Stripe: an operator's grant, and redemption codes (issue 16).

Both write the ledger only through billing.services.ledger's public services (balance_adjust,
promo_grant) and leave an audit entry in the catalog's audit log (catalog.AuditEntry: actor,
action, target, before/after — generic enough for money actions, and already the admin's one log).

Redemption is race-safe without locks that SQLite lacks: one conditional UPDATE takes a unit of the
code's `remaining` (the WHERE says remaining > 0, so concurrent redeemers can never take more than
max_redemptions), and the redemption row's unique (code, org, n) and (code, number) make each
organisation's n-th redemption, and each of the code's units, credit exactly once. All of it is one
transaction: a refused insert gives the unit back.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Organization
from billing.models import Balance, BillingProfile, CreditCode, CreditCodeRedemption, LedgerEntry
from billing.money import format_usd
from billing.services.ledger import BillingError, balance_adjust, balance_ensure, promo_grant
from billing.services.payments import profile_get

# Unambiguous when read aloud or typed from paper: no 0/O, 1/I/L.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_RANDOM_CHARS = 16  # 31^16 ≈ 2^79: unguessable even without the throttle
CODE_PREFIX = "RU"
CUSTOM_CODE_MIN_CHARS = 8
MAX_CODES_PER_BATCH = 10_000
# Guessing: attempts (any outcome) per fixed UTC minute, per user and per organisation.
ATTEMPTS_PER_MINUTE_PER_USER = 10
ATTEMPTS_PER_MINUTE_PER_ORG = 30


class CreditCodeError(BillingError):
    """A redemption refused; `code` names why (the page and the API say it to the customer)."""

    code = "invalid"
    status = 400


class CreditCodeUnknownError(CreditCodeError):
    code = "unknown"


class CreditCodeExpiredError(CreditCodeError):
    code = "expired"


class CreditCodeUsedUpError(CreditCodeError):
    code = "used_up"
    status = 409


class CreditCodeAlreadyRedeemedError(CreditCodeError):
    code = "already_redeemed"
    status = 409


class CreditCodeThrottledError(CreditCodeError):
    code = "throttled"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class IssuedCreditCode:
    credit_code: CreditCode
    code: str  # shown to staff once, never stored


# --- operator credit ------------------------------------------------------------------------


def _actor_label(actor) -> str:
    if isinstance(actor, str):
        return actor
    return getattr(actor, "email", "") or getattr(actor, "username", "") or f"user {getattr(actor, 'pk', '?')}"


def credit_add(
    *, org: Organization, amount_nanos: int, reason: str, actor, promo: bool = False, expires_at: datetime | None = None
) -> LedgerEntry:
    """An operator credits an organisation: a ledger `adjustment` (either sign) or `promo` (> 0, optionally
    expiring), with actor and reason on the entry and an audit entry. `actor` is a user or a label."""
    from catalog.services import audit_record

    reason = (reason or "").strip()
    if not reason:
        raise BillingError("A reason is required.")
    if amount_nanos == 0:
        raise BillingError("The amount must not be zero.")
    if expires_at is not None and not promo:
        raise BillingError("Only promotional credit expires.")
    label = _actor_label(actor)
    with transaction.atomic():
        balance_ensure(org_id=org.id)
        before = Balance.objects.select_for_update().get(org_id=org.id).balance_nanos
        if promo:
            entry = promo_grant(org_id=org.id, amount_nanos=amount_nanos, description=reason, actor=label,
                                expires_at=expires_at)  # fmt: skip
        else:
            entry = balance_adjust(org_id=org.id, amount_nanos=amount_nanos, reason=reason, actor=label)
        after = Balance.objects.get(org_id=org.id).balance_nanos
        audit_record(
            actor=actor, action="balance.credit", target=org, before={"balance_usd": format_usd(before)},
            after={"balance_usd": format_usd(after), "amount_usd": format_usd(amount_nanos), "kind": entry.kind,
                   "reason": reason, "ledger_entry": entry.pk,
                   "expires_at": expires_at.isoformat() if expires_at else None},
        )  # fmt: skip
    return entry


# --- redemption codes -----------------------------------------------------------------------


def creditcode_normalise(code: str) -> str:
    """What the customer typed -> the canonical form: upper case, no spaces or dashes."""
    return "".join(ch for ch in (code or "").upper() if ch.isalnum())


def creditcode_hash(code: str) -> str:
    return hashlib.sha256(creditcode_normalise(code).encode()).hexdigest()


def _new_code() -> str:
    body = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_RANDOM_CHARS))
    return "-".join([CODE_PREFIX, *(body[i : i + 4] for i in range(0, CODE_RANDOM_CHARS, 4))])


def _prefix(code: str) -> str:
    return creditcode_normalise(code)[:6]


def creditcode_issue(
    *,
    amount_nanos: int,
    count: int = 1,
    max_redemptions: int = 1,
    per_org_limit: int = 1,
    expires_at: datetime | None = None,
    note: str = "",
    created_by=None,
    code: str | None = None,
) -> list[IssuedCreditCode]:
    """Generate `count` random codes (or one operator-chosen `code`); the plaintext is returned once."""
    from catalog.services import audit_record

    if amount_nanos <= 0:
        raise BillingError("A code credits a positive amount.")
    if not 1 <= count <= MAX_CODES_PER_BATCH:
        raise BillingError(f"Generate between 1 and {MAX_CODES_PER_BATCH} codes at a time.")
    if max_redemptions < 1 or per_org_limit < 1:
        raise BillingError("Redemption limits are at least 1.")
    if per_org_limit > max_redemptions:
        raise BillingError("The per-organisation limit cannot exceed the code's total redemptions.")
    if expires_at is not None and expires_at <= timezone.now():
        raise BillingError("The expiry must be in the future.")
    if code is not None:
        if count != 1:
            raise BillingError("A chosen code is one code.")
        if len(creditcode_normalise(code)) < CUSTOM_CODE_MIN_CHARS:
            raise BillingError(f"A chosen code has at least {CUSTOM_CODE_MIN_CHARS} letters or digits.")
        codes = [code.strip().upper()]
    else:
        codes = [_new_code() for _ in range(count)]
    user = created_by if getattr(created_by, "pk", None) is not None else None
    try:
        with transaction.atomic():
            # Postgres and SQLite (3.35+) return the new primary keys from a bulk insert.
            rows = CreditCode.objects.bulk_create([
                CreditCode(prefix=_prefix(c), code_hash=creditcode_hash(c), amount_nanos=amount_nanos,
                           max_redemptions=max_redemptions, remaining=max_redemptions, per_org_limit=per_org_limit,
                           expires_at=expires_at, note=note.strip()[:200], created_by=user)
                for c in codes
            ], batch_size=500)  # fmt: skip
            audit_record(
                actor=created_by or "system", action="creditcode.issue", target=rows[0],
                after={"count": len(rows), "ids": [rows[0].pk, rows[-1].pk], "amount_usd": format_usd(amount_nanos),
                       "max_redemptions": max_redemptions, "per_org_limit": per_org_limit,
                       "expires_at": expires_at.isoformat() if expires_at else None, "note": rows[0].note},
            )  # fmt: skip
    except IntegrityError as exc:
        raise BillingError("That code exists already.") from exc
    return [IssuedCreditCode(credit_code=row, code=c) for row, c in zip(rows, codes, strict=True)]


def _throttle(*, user_id: int | None, org_id: int) -> None:
    """Fixed-window attempt counters in the cache (Redis in production, so shared by every process)."""
    now = timezone.now()
    window = now.strftime("%Y%m%d%H%M")
    retry_after = 60 - now.second
    counters = [(f"org:{org_id}", ATTEMPTS_PER_MINUTE_PER_ORG)]
    if user_id is not None:
        counters.append((f"user:{user_id}", ATTEMPTS_PER_MINUTE_PER_USER))
    for name, limit in counters:
        key = f"ruapi:creditcode:{name}:{window}"
        cache.add(key, 0, timeout=120)
        try:
            attempts = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=120)
            attempts = 1
        if attempts > limit:
            raise CreditCodeThrottledError(
                f"Too many attempts. Try again in {retry_after} seconds.", retry_after=retry_after
            )


def creditcode_redeem(*, org: Organization, user, code: str) -> CreditCodeRedemption:
    """Redeem `code` for `org`: credits its amount exactly once per allowed redemption, or raises a
    CreditCodeError saying why (unknown, expired, used up, already redeemed, throttled)."""
    _throttle(user_id=getattr(user, "pk", None), org_id=org.id)
    credit_code = CreditCode.objects.filter(code_hash=creditcode_hash(code)).first()
    if credit_code is None or not credit_code.is_active:
        raise CreditCodeUnknownError("That code is not valid. Check it and try again.")
    now = timezone.now()
    if credit_code.expires_at is not None and credit_code.expires_at <= now:
        raise CreditCodeExpiredError("That code has expired.")
    try:
        with transaction.atomic():
            n = CreditCodeRedemption.objects.filter(code=credit_code, org=org).count() + 1
            if n > credit_code.per_org_limit:
                raise CreditCodeAlreadyRedeemedError(_already_message(credit_code))
            taken = CreditCode.objects.filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=now), pk=credit_code.pk, is_active=True, remaining__gt=0
            ).update(remaining=F("remaining") - 1)
            if not taken:
                raise CreditCodeUsedUpError("That code has been used up.")
            # Our UPDATE holds the row (Postgres) or the database (SQLite) until commit: this is our unit.
            remaining = CreditCode.objects.values_list("remaining", flat=True).get(pk=credit_code.pk)
            entry = promo_grant(
                org_id=org.id, amount_nanos=credit_code.amount_nanos,
                description=f"Redemption code {credit_code.prefix}…", actor=_actor_label(user) if user else "customer",
            )  # fmt: skip
            return CreditCodeRedemption.objects.create(
                code=credit_code, org=org, n=n, number=credit_code.max_redemptions - remaining,
                user=user if getattr(user, "pk", None) is not None else None, entry=entry,
            )  # fmt: skip
    except IntegrityError as exc:
        # Another member of the organisation redeemed it in the same instant: (code, org, n) taken.
        raise CreditCodeAlreadyRedeemedError(_already_message(credit_code)) from exc


def _already_message(credit_code: CreditCode) -> str:
    if credit_code.per_org_limit == 1:
        return "Your organisation has already redeemed this code."
    return f"Your organisation has already redeemed this code {credit_code.per_org_limit} times, its limit."


# --- postpaid ---------------------------------------------------------------------------------


def postpaid_configure(*, org_id: int, is_postpaid: bool, credit_limit_nanos: int, actor) -> None:
    """An admin makes an organisation postpaid (or prepaid again) with the credit it may spend below zero.

    Only Balance.credit_limit_nanos changes on the balance row (one UPDATE: concurrent holds and
    settlements keep their own arithmetic); prepaid organisations get no credit limit.
    """
    from catalog.services import audit_record

    if credit_limit_nanos < 0:
        raise BillingError("The credit limit cannot be negative.")
    if not is_postpaid and credit_limit_nanos:
        raise BillingError("Only postpaid organisations have a credit limit.")
    with transaction.atomic():
        profile = profile_get(org_id=org_id)
        balance_ensure(org_id=org_id)
        before = {"is_postpaid": profile.is_postpaid,
                  "credit_limit_usd": format_usd(Balance.objects.get(org_id=org_id).credit_limit_nanos)}  # fmt: skip
        BillingProfile.objects.filter(pk=org_id).update(is_postpaid=is_postpaid)
        Balance.objects.filter(org_id=org_id).update(credit_limit_nanos=credit_limit_nanos)
        after = {"is_postpaid": is_postpaid, "credit_limit_usd": format_usd(credit_limit_nanos)}
        if before != after:
            audit_record(actor=actor, action="billing.postpaid", target=Organization.objects.get(pk=org_id),
                         before=before, after=after)  # fmt: skip
