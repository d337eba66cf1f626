"""The money boundary: holding, settling and releasing a request's money. Plain data in and out.

A hold reserves the most a request can cost before its upstream call (`balance_hold`); its
settlement debits the actual cost, releases the hold and writes the request's one usage event
(`hold_settle`); a request that never ran gives the money back (`hold_release`), and holds left by
crashed processes are released by the expiry task (`holds_expire`). The rules, on every backend:

- a hold is granted only when balance + credit limit covers it next to every other pending hold
  (for a batch, per organisation total); a refused hold leaves nothing held;
- a request is settled exactly once: a second settlement (or a racing one) debits nothing and
  returns the first usage event;
- a hold the expiry task already released is still billed when its request settles (a debit is
  never lost), its money is not released twice, and it ends `settled` like every billed hold;
- a release happens once, and a settled hold is never released.

Two backends, chosen once (by the database's vendor): the ORM (SQLite, the embedded run) in
`_OrmBackend` here, and one Postgres SQL builder (billing/services/holds_pg.py) for a batch of one
and a batch of many alike. On the server's event loops (after the ASGI lifespan startup, unless
RUAPI_BATCHED_LEDGER is off) the Postgres statements are queued and batched on async connection
pools; everywhere else they run on Django's connection (through run_db from async code).

Every hold, settlement and release also tells the process what it saw of the organisation's funds
(`funds_seen`: balance, held, credit limit after its update, read by the statement itself): the
process's view of each organisation's available funds, with its age (`funds_available`), for the
gateway's optimistic admission (proxy/metering.py). The view only decides whether a request may
start before its hold is written; the holds above still decide every admission.
"""

import asyncio
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services.ledger import BillingError, InsufficientBalanceError
from ruapi.db import run_db


@dataclass(frozen=True, slots=True)
class HoldRequest:
    org_id: int
    request_id: str
    amount_nanos: int


@dataclass(frozen=True, slots=True)
class HeldFunds:
    """A granted hold (the row in billing_hold, pending when returned)."""

    id: uuid.UUID
    org_id: int
    request_id: str
    amount_nanos: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Settled:
    """The request's usage event (the first one when the request had been settled before)."""

    event_id: int
    created_at: datetime


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


def usage_description(usage: UsageRecord) -> str:
    """The usage ledger entry's description."""
    return f"{usage.model} ({usage.endpoint})"[:500]


def hold_expires_at() -> datetime:
    """When a hold written now expires (RUAPI_HOLD_TTL)."""
    return timezone.now() + timedelta(seconds=settings.RUAPI_HOLD_TTL)


def new_hold(request: HoldRequest) -> HeldFunds:
    if request.amount_nanos < 0:
        raise BillingError("a hold cannot be negative")
    return HeldFunds(
        id=uuid.uuid4(),
        org_id=request.org_id,
        request_id=request.request_id,
        amount_nanos=request.amount_nanos,
        expires_at=hold_expires_at(),
    )


# -- what this process last saw of each organisation's funds ----------------------------------------
@dataclass(frozen=True, slots=True)
class Funds:
    available_nanos: int  # balance + credit limit - held, after the statement that saw it
    seen_at: float  # time.monotonic() when that statement was sent: the figure is at least this recent


_funds: dict[int, Funds] = {}
_funds_lock = threading.Lock()  # the server's event loops and run_db's threads all report


def funds_seen(org_id: int, balance_nanos: int, held_nanos: int, credit_limit_nanos: int, *, at: float) -> None:
    """A hold, settlement or release statement sent at `at` (time.monotonic()) left these figures."""
    funds = Funds(balance_nanos + credit_limit_nanos - held_nanos, at)
    with _funds_lock:
        current = _funds.get(org_id)
        if current is None or at >= current.seen_at:
            _funds[org_id] = funds


def funds_available(org_id: int, *, max_age: float) -> int | None:
    """The organisation's available funds as last seen, if seen within `max_age` seconds, else None."""
    funds = _funds.get(org_id)
    if funds is None or time.monotonic() - funds.seen_at > max_age:
        return None
    return funds.available_nanos


def funds_forget() -> None:
    """Forget every organisation's funds (tests)."""
    with _funds_lock:
        _funds.clear()


def _balance_seen(org_id: int, at: float) -> None:
    """The ORM backend's report: the balance row as its transaction leaves it, once committed."""
    row = Balance.objects.filter(org_id=org_id).values_list("balance_nanos", "held_nanos", "credit_limit_nanos").first()
    if row is not None:
        transaction.on_commit(lambda: funds_seen(org_id, *row, at=at))


def _check_costs(items: Sequence[tuple[HeldFunds, UsageRecord]]) -> None:
    if any(usage.cost_nanos < 0 for _, usage in items):
        raise BillingError("a cost cannot be negative")


class _OrmBackend:
    """SQLite (and any non-Postgres database): conditional UPDATEs through the ORM, one item at a time.

    A hold is one conditional UPDATE (the sufficient-balance test in the WHERE, F() in the SET) plus
    a rows-affected check — safe where select_for_update does nothing. Hold state changes are
    conditional UPDATEs, and the unique constraints on the usage event and the usage ledger entry
    roll a racing second settlement back.
    """

    name = "orm"

    def holds_open(self, requests: Sequence[HoldRequest]) -> list[HeldFunds | None]:
        return [self._hold_open(new_hold(request)) for request in requests]

    @transaction.atomic
    def _hold_open(self, hold: HeldFunds) -> HeldFunds | None:
        at = time.monotonic()
        # balance + credit limit >= held + amount; the credit limit is zero unless the org is postpaid.
        reserved = Balance.objects.filter(
            org_id=hold.org_id, balance_nanos__gte=F("held_nanos") + hold.amount_nanos - F("credit_limit_nanos")
        ).update(held_nanos=F("held_nanos") + hold.amount_nanos)
        _balance_seen(hold.org_id, at)
        if not reserved:
            return None
        Hold.objects.create(
            id=hold.id, org_id=hold.org_id, request_id=hold.request_id, amount_nanos=hold.amount_nanos,
            expires_at=hold.expires_at,
        )  # fmt: skip
        return hold

    def holds_settle(self, items: Sequence[tuple[HeldFunds, UsageRecord]]) -> list[Settled]:
        results = []
        for hold, usage in items:
            try:
                event = self._hold_settle(hold, usage)
            except IntegrityError:  # a racing settlement of the same request won
                event = UsageEvent.objects.filter(request_id=usage.request_id).first()
                if event is None:
                    raise
            results.append(Settled(event.pk, event.created_at))
        return results

    @transaction.atomic
    def _hold_settle(self, hold: HeldFunds, usage: UsageRecord) -> UsageEvent:
        at = time.monotonic()
        existing = UsageEvent.objects.filter(request_id=usage.request_id).first()
        if existing is not None:
            return existing
        # A released (expired) hold is billed all the same and ends settled; only a pending one gives money back.
        was_pending = Hold.objects.filter(pk=hold.id, status=Hold.Status.PENDING).update(status=Hold.Status.SETTLED)
        if not was_pending:
            Hold.objects.filter(pk=hold.id).update(status=Hold.Status.SETTLED)
        release = hold.amount_nanos if was_pending else 0
        if release or usage.cost_nanos:
            Balance.objects.filter(org_id=hold.org_id).update(
                held_nanos=F("held_nanos") - release, balance_nanos=F("balance_nanos") - usage.cost_nanos
            )
        _balance_seen(hold.org_id, at)
        if usage.cost_nanos:
            LedgerEntry.objects.create(
                org_id=hold.org_id, kind=LedgerEntry.Kind.USAGE, amount_nanos=-usage.cost_nanos,
                request_id=usage.request_id, description=usage_description(usage),
            )  # fmt: skip
        return UsageEvent.objects.create(**usage.__dict__)

    @transaction.atomic
    def hold_release(self, hold_id: uuid.UUID) -> bool:
        at = time.monotonic()
        row = Hold.objects.filter(pk=hold_id, status=Hold.Status.PENDING).values_list("org_id", "amount_nanos").first()
        if row is None or not Hold.objects.filter(pk=hold_id, status=Hold.Status.PENDING).update(
            status=Hold.Status.RELEASED
        ):
            return False
        Balance.objects.filter(org_id=row[0]).update(held_nanos=F("held_nanos") - row[1])
        _balance_seen(row[0], at)
        return True

    def writer(self) -> None:
        return None  # no batching: async callers go through run_db

    async def writer_open(self) -> None:
        pass

    async def writer_close(self) -> None:
        pass


_backend = None


def backend():
    """The process's backend: Postgres's SQL builder on Postgres, else the ORM (chosen on first use)."""
    global _backend
    if _backend is None:
        if connection.vendor == "postgresql":
            from billing.services.holds_pg import PgBackend

            _backend = PgBackend()
        else:
            _backend = _OrmBackend()
    return _backend


def backend_set(choice):
    """Force a backend ("orm", "postgres", a backend returned earlier, or None to choose again on
    next use); returns the previous one (tests run every money rule on both)."""
    global _backend
    previous = _backend
    if choice == "orm":
        choice = _OrmBackend()
    elif choice == "postgres":
        from billing.services.holds_pg import PgBackend

        choice = PgBackend()
    _backend = choice
    return previous


# -- synchronous boundary (Celery tasks, scripts, tests; the gateway through the async one below) --
def holds_open(requests: Sequence[HoldRequest]) -> list[HeldFunds | None]:
    """Reserve each request's amount, or None for each one its organisation cannot cover."""
    return backend().holds_open(requests)


def holds_settle(items: Sequence[tuple[HeldFunds, UsageRecord]]) -> list[Settled]:
    """Debit each cost, release each hold and write each usage event — once per request (see the rules)."""
    _check_costs(items)
    return backend().holds_settle(items)


def balance_hold(*, org_id: int, request_id: str, amount_nanos: int) -> HeldFunds:
    """Reserve `amount_nanos` for a request, or raise InsufficientBalanceError. Nothing is debited yet."""
    [hold] = holds_open([HoldRequest(org_id, request_id, amount_nanos)])
    if hold is None:
        raise InsufficientBalanceError("Insufficient balance: top up to continue.")
    return hold


def hold_settle(*, hold: HeldFunds, usage: UsageRecord) -> Settled:
    """Debit the actual cost, release the rest of the hold and write the one usage event (idempotent)."""
    [settled] = holds_settle([(hold, usage)])
    return settled


def hold_release(*, hold: HeldFunds) -> bool:
    """Give a pending hold's money back without debiting anything (False if it was not pending)."""
    return backend().hold_release(hold.id)


def holds_expire(*, now=None) -> int:
    """Release pending holds past their expiry (left by crashed processes). Returns how many."""
    now = now or timezone.now()
    expired = Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lt=now).values_list("pk", flat=True)
    return sum(backend().hold_release(hold_id) for hold_id in list(expired))


# -- asynchronous boundary (the gateway) ----------------------------------------------------------
async def _hold_open(request: HoldRequest) -> HeldFunds | None:
    writer = backend().writer()
    if writer is not None:
        return await writer.hold(request)
    [hold] = await run_db(holds_open, [request])
    return hold


async def ahold_open(*, org_id: int, request_id: str, amount_nanos: int) -> HeldFunds:
    """As balance_hold, from async code. A caller cancelled while its hold is being written (the
    client left) does not wait for it: the hold is released as soon as it is written."""
    request = HoldRequest(org_id, request_id, amount_nanos)
    task = asyncio.ensure_future(_hold_open(request))
    try:
        hold = await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(release_when_written)
        raise
    if hold is None:
        raise InsufficientBalanceError("Insufficient balance: top up to continue.")
    return hold


async def ahold_settle(*, hold: HeldFunds, usage: UsageRecord) -> Settled:
    """As hold_settle, from async code."""
    _check_costs([(hold, usage)])
    writer = backend().writer()
    if writer is not None:
        return await writer.settle(hold, usage)
    return await run_db(hold_settle, hold=hold, usage=usage)


async def ahold_release(*, hold: HeldFunds) -> bool:
    return await run_db(hold_release, hold=hold)


_releases: set[asyncio.Task] = set()


def release_when_written(task: asyncio.Future) -> None:
    """A done callback for a task writing a hold nobody will use: its hold, if written, is released
    (in a task kept referenced here)."""
    if task.cancelled() or task.exception() is not None or task.result() is None:
        return
    release = asyncio.get_running_loop().create_task(ahold_release(hold=task.result()))
    _releases.add(release)
    release.add_done_callback(_releases.discard)


# -- the server's event loops --------------------------------------------------------------------
async def enable_for_running_loop() -> None:
    """ASGI lifespan startup: on Postgres (unless RUAPI_BATCHED_LEDGER is off) this loop's holds and
    settlements are batched on its own connection pools, closed at shutdown."""
    if settings.RUAPI_BATCHED_LEDGER:
        await backend().writer_open()


async def close_for_running_loop() -> None:
    await backend().writer_close()
