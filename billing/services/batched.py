"""The gateway's holds and settlements, batched: one Postgres statement for everything queued.

Every proxied request needs a hold before its upstream call and a settlement before its last
byte. As one statement each through the ORM thread pool (fastpath.py) that cost two thread hops,
two pool check-outs and two round trips per request — most of the gateway's CPU per request
(bench/results/profile-S2.md). Here, per event loop (one per server worker process):

- callers queue their hold or settlement and await a future;
- a flusher sends everything queued as ONE statement on an async psycopg connection (no thread
  hop; constant SQL text with the rows as one json parameter, so the server prepares it once per connection),
  with at most MAX_INFLIGHT statements per kind at a time. There is no timer: a lone request is
  sent at once, and batches form only from requests that arrive while a statement is in flight,
  so at low load the latency is one round trip and under load the cost per request falls.

The guarantees are fastpath.py's, per organisation instead of per request:

- hold: the sufficient-balance test stays in the UPDATE's WHERE, for the organisation's total
  in the batch (balance + credit limit >= held + total). An organisation whose total does not fit
  is not refused: its holds are retried one by one through ledger.balance_hold, which admits or
  refuses each exactly. Balance rows are locked in org_id order, so two batches cannot deadlock.
- settle: the holds are marked settled only if still pending (an expired hold released by the
  task is not released twice, its cost is still debited); the unique constraints on the usage
  event and the usage ledger entry make a second settlement of a request fail — and any failed
  batch (that, a deadlock, a lost connection) is retried item by item through ledger.hold_settle,
  which is idempotent on the request id.

Only Postgres, and only on event loops that went through the ASGI lifespan startup (the server's
workers), whose shutdown closes the connections. Everywhere else (SQLite, in-process calls
without a server, scripts) callers use ledger.balance_hold / hold_settle through run_db.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import orjson
import psycopg
from django.conf import settings
from django.db import connections
from django.db.models import AutoField, DecimalField
from django.utils import timezone
from psycopg.conninfo import make_conninfo

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services.ledger import (
    BillingError,
    InsufficientBalanceError,
    UsageRecord,
    balance_hold,
    hold_release,
    hold_settle,
)
from ruapi import observability
from ruapi.db import run_db

logger = logging.getLogger(__name__)

MAX_BATCH = 256  # items per statement
MAX_INFLIGHT = 2  # statements per kind at a time (and connections per kind)


class _Rows:
    """A model's rows as ONE json parameter: INSERT INTO <table> (<columns>) SELECT <columns> FROM
    json_to_recordset(%s::json) AS r(<column> <type>, ...), every concrete column of the model.

    One orjson-encoded string instead of one typed array per column: psycopg's array dumpers
    (type detection per list) cost ~0.3 ms per statement, json_to_recordset costs Postgres little.
    """

    def __init__(self, model) -> None:
        connection = connections["default"]
        quote = connection.ops.quote_name
        fields = [f for f in model._meta.local_concrete_fields if not isinstance(f, AutoField)]
        self.table = model._meta.db_table
        self.columns = ", ".join(quote(f.column) for f in fields)
        types = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
        self.recordset = f"json_to_recordset(%s::json) AS r({types})"
        self.insert_sql = f"INSERT INTO {self.table} ({self.columns}) SELECT {self.columns} FROM {self.recordset}"
        # (column, attribute, kind): "now" for auto_now(_add) timestamps, "str" for decimals (exact as text).
        self._spec = [
            (
                f.column,
                f.attname,
                "now" if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
                else "str" if isinstance(f, DecimalField) else "",
            )
            for f in fields
        ]  # fmt: skip

    def json(self, objs, *, now) -> str:
        """The objects' rows as Django would write them (defaults applied by the model's __init__)."""
        rows = []
        for obj in objs:
            row = {}
            for column, attname, kind in self._spec:
                if kind == "now":
                    setattr(obj, attname, now)
                    row[column] = now
                else:
                    value = getattr(obj, attname)
                    row[column] = str(value) if kind == "str" and value is not None else value
            rows.append(row)
        return orjson.dumps(rows).decode()


@dataclass(slots=True)
class _Settlement:
    hold: Hold
    record: UsageRecord
    event: UsageEvent


class _Batcher:
    """A queue of (item, future) flushed by at most MAX_INFLIGHT tasks, up to MAX_BATCH items each."""

    def __init__(self, flush: Callable[[list], Awaitable[None]], kind: str = "") -> None:
        self._flush = flush
        self._depth = observability.LEDGER_QUEUE_DEPTH.labels(kind or "ledger")
        self._queue: list[tuple[object, asyncio.Future]] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()  # a running task must be referenced

    def submit(self, item) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future))
        self._depth.inc()
        if self._inflight < MAX_INFLIGHT:
            self._inflight += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._depth.dec(len(batch))
                try:
                    await self._flush(batch)
                except BaseException as exc:  # the flush resolves its futures; never leave one waiting
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._inflight -= 1


class LedgerWriter:
    """Batched holds and settlements on this event loop's own Postgres connections."""

    def __init__(self) -> None:
        settings_dict = connections["default"].settings_dict
        conninfo = make_conninfo(
            dbname=settings_dict["NAME"],
            user=settings_dict.get("USER") or None,
            password=settings_dict.get("PASSWORD") or None,
            host=settings_dict.get("HOST") or None,
            port=str(settings_dict.get("PORT") or "") or None,
            application_name="ruapi-ledger",
        )
        # Holds commit asynchronously (no WAL flush wait: ~0.4 ms less before the upstream call).
        # A hold is a reservation, not a movement of money: if a database crash loses its commit,
        # the hold row and its held_nanos vanish together (the WAL replays whole transactions), and
        # the request's settlement still debits its cost (a settlement whose hold is missing
        # releases nothing) — nothing is lost or doubled. Settlements commit synchronously, and
        # their WAL flush makes every earlier hold durable too.
        self._conninfo = {
            "hold": make_conninfo(conninfo, options="-c synchronous_commit=off"),
            "settle": conninfo,
        }
        self._idle: dict[str, list[psycopg.AsyncConnection]] = {"hold": [], "settle": []}
        # Statements and items written, and items decided one by one (tests, benchmarks).
        self.stats = {"hold_batches": 0, "holds": 0, "settle_batches": 0, "settlements": 0, "one_by_one": 0}
        self._closed = False
        self._holds = _Batcher(self._flush_holds, "holds")
        self._settlements = _Batcher(self._flush_settlements, "settlements")
        self._hold_rows = _Rows(Hold)
        self._events = _Rows(UsageEvent)
        self._entries = _Rows(LedgerEntry)
        self._hold_sql = _hold_sql(self._hold_rows)
        self._settle_sql = _settle_sql(self._entries.insert_sql, self._events.insert_sql)

    # -- public ------------------------------------------------------------------------------------
    async def hold(self, *, org_id: int, request_id: str, amount_nanos: int) -> Hold:
        """As ledger.balance_hold: reserve or raise InsufficientBalanceError."""
        if amount_nanos < 0:
            raise BillingError("a hold cannot be negative")
        hold = Hold(
            id=uuid.uuid4(),
            org_id=org_id,
            request_id=request_id,
            amount_nanos=amount_nanos,
            status=Hold.Status.PENDING,
            expires_at=timezone.now() + timedelta(seconds=settings.RUAPI_HOLD_TTL),
        )
        future = self._holds.submit(hold)
        try:
            admitted = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The client left while its hold was being written: give the money back once it is.
            future.add_done_callback(_release_if_admitted(hold))
            raise
        if not admitted:  # its organisation's batch total did not fit: decide this one alone
            return await run_db(balance_hold, org_id=org_id, request_id=request_id, amount_nanos=amount_nanos)
        hold._state.adding = False
        return hold

    async def settle(self, *, hold: Hold, usage: UsageRecord) -> UsageEvent:
        """As ledger.hold_settle: debit, release, record once; returns the usage event."""
        if usage.cost_nanos < 0:
            raise BillingError("a cost cannot be negative")
        event = UsageEvent(**usage.__dict__)
        ok = await self._settlements.submit(_Settlement(hold, usage, event))
        if ok:
            event._state.adding = False
            return event
        return await run_db(hold_settle, hold=hold, usage=usage)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {"hold": [], "settle": []}
        for conns in idle.values():
            for conn in conns:
                await conn.close()

    # -- connections -------------------------------------------------------------------------------
    async def _execute(self, kind: str, sql: str, params: list) -> list[tuple]:
        idle = self._idle[kind]
        conn = idle.pop() if idle else None
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(self._conninfo[kind], autocommit=True, connect_timeout=5)
        try:
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall()
        except BaseException:
            await conn.close()  # a statement error leaves it usable, but its state is unknown: start afresh
            raise
        if self._closed or conn.closed:
            await conn.close()
        else:
            self._idle[kind].append(conn)
        return rows

    # -- flushes -----------------------------------------------------------------------------------
    async def _flush_holds(self, batch: list[tuple[Hold, asyncio.Future]]) -> None:
        now = timezone.now()
        params = [self._hold_rows.json([hold for hold, _ in batch], now=now), now]
        try:
            rows = await self._execute("hold", self._hold_sql, params)
        except Exception:
            logger.warning("batched holds failed; deciding %d holds one by one", len(batch), exc_info=True)
            admitted: set[str] = set()
        else:
            admitted = {row[0] for row in rows}
            self.stats["hold_batches"] += 1
            self.stats["holds"] += len(admitted)
        self.stats["one_by_one"] += len(batch) - len(admitted)
        for hold, future in batch:
            if not future.done():
                future.set_result(hold.request_id in admitted)

    async def _flush_settlements(self, batch: list[tuple[_Settlement, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        entries = [
            LedgerEntry(
                org_id=item.hold.org_id,
                kind=LedgerEntry.Kind.USAGE,
                amount_nanos=-item.record.cost_nanos,
                request_id=item.record.request_id,
                description=f"{item.record.model} ({item.record.endpoint})",
            )
            for item in items
            if item.record.cost_nanos
        ]
        now = timezone.now()
        settled = [{"hold_id": i.hold.pk, "org_id": i.hold.org_id, "cost": i.record.cost_nanos} for i in items]
        params = [
            orjson.dumps(settled).decode(),
            now,
            self._entries.json(entries, now=now),
            self._events.json([item.event for item in items], now=now),
        ]
        try:
            rows = await self._execute("settle", self._settle_sql, params)
        except Exception as exc:
            if len(batch) > 1 or not _is_duplicate(exc):
                logger.warning("batched settlement failed; settling %d one by one", len(batch), exc_info=True)
            ids: dict[str, int] = {}
        else:
            ids = dict((request_id, pk) for pk, request_id in rows)
            self.stats["settle_batches"] += 1
            self.stats["settlements"] += len(ids)
        self.stats["one_by_one"] += len(batch) - len(ids)
        for item, future in batch:
            if future.done():
                continue
            pk = ids.get(item.record.request_id)
            if pk is not None:
                item.event.pk = pk
            future.set_result(pk is not None)


def _is_duplicate(exc: Exception) -> bool:
    return isinstance(exc, psycopg.errors.UniqueViolation)


_releases: set[asyncio.Task] = set()


def _release_if_admitted(hold: Hold):
    def callback(future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None or not future.result():
            return  # not written (or written by the one-by-one path, which the caller never reached)
        task = asyncio.get_running_loop().create_task(run_db(hold_release, hold=hold))
        _releases.add(task)
        task.add_done_callback(_releases.discard)

    return callback


def _hold_sql(rows: _Rows) -> str:
    balance = Balance._meta.db_table
    return f"""
WITH req AS (
  SELECT * FROM {rows.recordset}
), total AS (
  SELECT org_id, SUM(amount_nanos)::bigint AS amount FROM req GROUP BY org_id
), locked AS (
  SELECT b.org_id FROM {balance} b WHERE b.org_id IN (SELECT org_id FROM total) ORDER BY b.org_id FOR NO KEY UPDATE
), reserved AS (
  UPDATE {balance} b SET held_nanos = b.held_nanos + total.amount, updated_at = %s
  FROM total JOIN locked USING (org_id)
  WHERE b.org_id = total.org_id AND b.balance_nanos + b.credit_limit_nanos >= b.held_nanos + total.amount
  RETURNING b.org_id
)
INSERT INTO {rows.table} ({rows.columns}) SELECT {rows.columns} FROM req
WHERE org_id IN (SELECT org_id FROM reserved)
RETURNING request_id"""


def _settle_sql(ledger_insert: str, event_insert: str) -> str:
    balance, holds = Balance._meta.db_table, Hold._meta.db_table
    return f"""
WITH s AS (
  SELECT * FROM json_to_recordset(%s::json) AS s(hold_id uuid, org_id bigint, cost bigint)
), released AS (
  UPDATE {holds} h SET status = 'settled' FROM s WHERE h.id = s.hold_id AND h.status = 'pending'
  RETURNING h.id, h.amount_nanos
), per_org AS (
  SELECT s.org_id, SUM(s.cost)::bigint AS cost, COALESCE(SUM(released.amount_nanos), 0)::bigint AS released
  FROM s LEFT JOIN released ON released.id = s.hold_id GROUP BY s.org_id
), locked AS (
  SELECT b.org_id FROM {balance} b WHERE b.org_id IN (SELECT org_id FROM s) ORDER BY b.org_id FOR NO KEY UPDATE
), debited AS (
  UPDATE {balance} b SET held_nanos = b.held_nanos - per_org.released, balance_nanos = b.balance_nanos - per_org.cost,
  updated_at = %s FROM per_org JOIN locked USING (org_id) WHERE b.org_id = per_org.org_id
), entries AS (
  {ledger_insert}
)
{event_insert} RETURNING id, request_id"""


# -- one writer per server event loop -----------------------------------------------------------
_writers: dict[int, tuple[asyncio.AbstractEventLoop, LedgerWriter]] = {}


def enable_for_running_loop() -> None:
    """Called at the ASGI lifespan startup: this loop's requests use the batched writer."""
    if connections["default"].vendor != "postgresql" or not settings.RUAPI_BATCHED_LEDGER:
        return
    loop = asyncio.get_running_loop()
    _writers[id(loop)] = (loop, LedgerWriter())


async def close_for_running_loop() -> None:
    entry = _writers.pop(id(asyncio.get_running_loop()), None)
    if entry is not None:
        await entry[1].close()


def writer() -> LedgerWriter | None:
    """This loop's writer, or None (callers then use the ledger functions through run_db)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    entry = _writers.get(id(loop))
    if entry is None or entry[0] is not loop:
        return None
    return entry[1]


__all__ = [
    "InsufficientBalanceError",
    "LedgerWriter",
    "close_for_running_loop",
    "enable_for_running_loop",
    "writer",
]
