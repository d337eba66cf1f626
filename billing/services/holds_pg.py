"""Postgres: holds and settlements as one statement per batch, a batch of one or of many alike.

One builder (`_Statements`) writes the statements; they run either on Django's connection
(`PgBackend.holds_open` / `holds_settle`: Celery tasks, scripts, tests, async code without a
server through run_db) or, on a server's event loop, batched by `_Writer`: callers queue their
hold or settlement and await a future, and a flusher sends everything queued as ONE statement on
the loop's async connection pool (no thread hop; constant SQL text with the rows as one json
parameter, so the server prepares it once per connection), at most MAX_INFLIGHT statements per
kind at a time. There is no timer: a lone request is sent at once, and batches form only from
requests that arrive while a statement is in flight (bench/results/profile-S2.md: per-request
statements through the ORM thread pool were most of the gateway's CPU per request).

The rules (billing/services/holds.py), per organisation instead of per request:

Every row is reached through an index whatever the tables' size: the json rows are estimated at
100 by Postgres, and a plain join against them (`IN (SELECT ...)`) was planned as a scan of the
whole hold and balance tables, so `col = ANY (ARRAY(SELECT ...))` (an index scan on the array) is
used instead (billing/tests/test_money_plans.py reads every statement's plan).

- hold: the sufficient-balance test stays in the UPDATE's WHERE, for the organisation's total in
  the batch (balance + credit limit >= held + total). An organisation whose total does not fit is
  not refused: each of its holds is decided as a batch of one, which admits or refuses it exactly.
  Balance rows are locked in org_id order (after the hold rows, in id order, when settling, as
  the expiry task does), so two statements cannot deadlock.
- settle: a pending hold is marked settled and its money released; a released (expired) hold is
  marked settled too, releasing nothing; the cost is debited either way. The unique constraints
  on the usage event and the usage ledger entry make a second settlement of a request fail — a
  failed batch (that, a deadlock, a lost connection) is settled item by item as batches of one,
  and a batch of one that fails as a duplicate returns the first event.

Each statement also returns its organisations' balance, held and credit limit after its update
(RETURNING of the balance UPDATE; a hold's refused organisation: the row it locked), for the
process's view of their funds (holds.funds_seen; proxy/metering.py's optimistic admission).
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import nullcontext

import orjson
import psycopg
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import AutoField, DecimalField
from django.utils import timezone
from psycopg.conninfo import make_conninfo

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services.holds import (
    HeldFunds,
    HoldRequest,
    Settled,
    UsageRecord,
    funds_seen,
    new_hold,
    usage_description,
)
from ruapi import observability
from ruapi.db import database_unreachable, run_db

logger = logging.getLogger(__name__)

MAX_BATCH = 256  # items per statement
MAX_INFLIGHT = 2  # statements per kind at a time (and connections per kind and event loop)
CHECKOUT_TIMEOUT_S = 0.5  # the pool never has fewer connections than statements in flight unless it cannot connect


def _reporter(at: float, *, on_commit: bool):
    """What a statement sent at `at` saw of its organisations' funds, for holds.funds_seen: at once
    (the async pools' statements commit as they return), or when Django's transaction commits."""

    def report(funds: list[tuple]) -> None:
        def seen() -> None:
            for org_id, balance_nanos, held_nanos, credit_limit_nanos in funds:
                funds_seen(org_id, balance_nanos, held_nanos, credit_limit_nanos, at=at)

        if funds:
            transaction.on_commit(seen) if on_commit else seen()

    return report


class _Rows:
    """A model's rows as ONE json parameter: INSERT INTO <table> (<columns>) SELECT <columns> FROM
    json_to_recordset(%s::json) AS r(<column> <type>, ...), every concrete column of the model
    (so a new model field needs no change here; its default fills rows that do not name it).

    One orjson-encoded string instead of one typed array per column: psycopg's array dumpers
    (type detection per list) cost ~0.3 ms per statement, json_to_recordset costs Postgres little.
    """

    def __init__(self, model) -> None:
        quote = connection.ops.quote_name
        fields = [f for f in model._meta.local_concrete_fields if not isinstance(f, AutoField)]
        self.table = model._meta.db_table
        self.columns = ", ".join(quote(f.column) for f in fields)
        types = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
        self.recordset = f"json_to_recordset(%s::json) AS r({types})"
        self.insert_sql = f"INSERT INTO {self.table} ({self.columns}) SELECT {self.columns} FROM {self.recordset}"
        # (column, attribute, kind, default): "now" for auto_now(_add) timestamps, "str" for decimals.
        self._spec = [
            (
                f.column,
                f.attname,
                "now" if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
                else "str" if isinstance(f, DecimalField) else "",
                f.get_default(),
            )
            for f in fields
        ]  # fmt: skip

    def json(self, rows: Sequence[dict], *, now) -> str:
        out = []
        for values in rows:
            row = {}
            for column, attname, kind, default in self._spec:
                value = now if kind == "now" else values.get(attname, default)
                row[column] = str(value) if kind == "str" and value is not None else value
            out.append(row)
        return orjson.dumps(out).decode()


class _Statements:
    """The SQL and its parameters for a batch of holds or settlements (one or many items)."""

    def __init__(self) -> None:
        self.holds = _Rows(Hold)
        self.events = _Rows(UsageEvent)
        self.entries = _Rows(LedgerEntry)
        balance, holds = Balance._meta.db_table, Hold._meta.db_table
        # Besides the request ids of the holds written, one row per organisation with its balance,
        # held and credit limit after the update (before it, when its holds were refused).
        self.hold_sql = f"""
WITH req AS (
  SELECT * FROM {self.holds.recordset}
), total AS (
  SELECT org_id, SUM(amount_nanos)::bigint AS amount FROM req GROUP BY org_id
), locked AS (
  SELECT b.org_id, b.balance_nanos, b.held_nanos, b.credit_limit_nanos FROM {balance} b
  WHERE b.org_id = ANY (ARRAY(SELECT org_id FROM total)) ORDER BY b.org_id FOR NO KEY UPDATE
), reserved AS (
  UPDATE {balance} b SET held_nanos = b.held_nanos + total.amount, updated_at = %s
  FROM total JOIN locked USING (org_id)
  WHERE b.org_id = ANY (ARRAY(SELECT org_id FROM locked)) AND b.org_id = total.org_id
    AND b.balance_nanos + b.credit_limit_nanos >= b.held_nanos + total.amount
  RETURNING b.org_id, b.balance_nanos, b.held_nanos, b.credit_limit_nanos
), written AS (
  INSERT INTO {self.holds.table} ({self.holds.columns}) SELECT {self.holds.columns} FROM req
  WHERE org_id IN (SELECT org_id FROM reserved)
  RETURNING request_id
)
SELECT request_id, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint FROM written
UNION ALL
SELECT NULL, l.org_id, COALESCE(r.balance_nanos, l.balance_nanos), COALESCE(r.held_nanos, l.held_nanos),
  COALESCE(r.credit_limit_nanos, l.credit_limit_nanos)
FROM locked l LEFT JOIN reserved r USING (org_id)"""
        self.settle_sql = f"""
WITH s AS (
  SELECT * FROM json_to_recordset(%s::json) AS s(hold_id uuid, org_id bigint, cost bigint)
), prior AS (
  SELECT h.id, h.status FROM {holds} h WHERE h.id = ANY (ARRAY(SELECT hold_id FROM s)) AND h.status <> 'settled'
  ORDER BY h.id FOR NO KEY UPDATE
), marked AS (
  UPDATE {holds} h SET status = 'settled' FROM prior WHERE h.id = ANY (ARRAY(SELECT id FROM prior)) AND h.id = prior.id
  RETURNING h.id, CASE WHEN prior.status = 'pending' THEN h.amount_nanos ELSE 0 END AS released
), per_org AS (
  SELECT s.org_id, SUM(s.cost)::bigint AS cost, COALESCE(SUM(marked.released), 0)::bigint AS released
  FROM s LEFT JOIN marked ON marked.id = s.hold_id GROUP BY s.org_id
), locked AS (
  SELECT b.org_id FROM {balance} b WHERE b.org_id = ANY (ARRAY(SELECT org_id FROM s)) ORDER BY b.org_id
  FOR NO KEY UPDATE
), debited AS (
  UPDATE {balance} b SET held_nanos = b.held_nanos - per_org.released, balance_nanos = b.balance_nanos - per_org.cost,
  updated_at = %s FROM per_org JOIN locked USING (org_id)
  WHERE b.org_id = ANY (ARRAY(SELECT org_id FROM locked)) AND b.org_id = per_org.org_id
  RETURNING b.org_id, b.balance_nanos, b.held_nanos, b.credit_limit_nanos
), entries AS (
  {self.entries.insert_sql}
), events AS (
  {self.events.insert_sql} RETURNING id, request_id, created_at
)
SELECT id, request_id, created_at, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint FROM events
UNION ALL
SELECT NULL, NULL, NULL, org_id, balance_nanos, held_nanos, credit_limit_nanos FROM debited"""
        self.release_sql = f"""
WITH r AS (
  UPDATE {holds} SET status = 'released' WHERE id = %s AND status = 'pending' RETURNING org_id, amount_nanos
)
UPDATE {balance} b SET held_nanos = b.held_nanos - r.amount_nanos, updated_at = %s FROM r
WHERE b.org_id = ANY (ARRAY(SELECT org_id FROM r)) AND b.org_id = r.org_id
RETURNING b.org_id, b.balance_nanos, b.held_nanos, b.credit_limit_nanos"""
        self.event_sql = f"SELECT id, created_at FROM {UsageEvent._meta.db_table} WHERE request_id = %s"

    def hold(self, holds: Sequence[HeldFunds]) -> tuple[str, list]:
        now = timezone.now()
        rows = [{"id": h.id, "org_id": h.org_id, "request_id": h.request_id, "amount_nanos": h.amount_nanos,
                 "expires_at": h.expires_at} for h in holds]  # fmt: skip
        return self.hold_sql, [self.holds.json(rows, now=now), now]

    @staticmethod
    def admitted(holds: Sequence[HeldFunds], rows: list[tuple], report) -> list[HeldFunds | None]:
        """Each hold if written; for the others None: refused when alone, else to be decided alone.
        `report(funds)` gets the organisations' (org_id, balance, held, credit limit) rows."""
        written = {row[0] for row in rows if row[0] is not None}
        report([row[1:] for row in rows if row[0] is None])
        return [h if h.request_id in written else None for h in holds]

    def settle(self, items: Sequence[tuple[HeldFunds, UsageRecord]]) -> tuple[str, list]:
        now = timezone.now()
        settled = [{"hold_id": h.id, "org_id": h.org_id, "cost": u.cost_nanos} for h, u in items]
        entries = [
            {"org_id": h.org_id, "kind": LedgerEntry.Kind.USAGE, "amount_nanos": -u.cost_nanos,
             "request_id": u.request_id, "description": usage_description(u)}
            for h, u in items if u.cost_nanos
        ]  # fmt: skip
        events = [u.__dict__ for _, u in items]
        params = [orjson.dumps(settled).decode(), now, self.entries.json(entries, now=now),
                  self.events.json(events, now=now)]  # fmt: skip
        return self.settle_sql, params

    @staticmethod
    def settled(items: Sequence[tuple[HeldFunds, UsageRecord]], rows: list[tuple], report) -> list[Settled]:
        by_request = {row[1]: Settled(row[0], row[2]) for row in rows if row[1] is not None}
        report([row[3:] for row in rows if row[1] is None])
        return [by_request[u.request_id] for _, u in items]


class PgBackend:
    """The statements on Django's connection; `writer()` batches them on a server's event loop."""

    name = "postgres"

    def __init__(self) -> None:
        self._statements: _Statements | None = None
        self._writers: dict[int, tuple[asyncio.AbstractEventLoop, _Writer]] = {}

    @property
    def statements(self) -> _Statements:
        if self._statements is None:
            self._statements = _Statements()
        return self._statements

    # -- synchronous, on Django's connection --------------------------------------------------------
    def _execute(self, sql: str, params: list) -> list[tuple]:
        # Inside a caller's transaction a savepoint keeps a failed statement from aborting it; in
        # autocommit the statement is its own transaction.
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def holds_open(self, requests: Sequence[HoldRequest]) -> list[HeldFunds | None]:
        holds = [new_hold(request) for request in requests]
        return self._holds_write(holds)

    def _holds_write(self, holds: Sequence[HeldFunds]) -> list[HeldFunds | None]:
        try:
            report = _reporter(time.monotonic(), on_commit=True)
            results = self.statements.admitted(holds, self._execute(*self.statements.hold(holds)), report)
        except Exception:
            if len(holds) == 1:
                raise
            logger.warning("holds failed as a batch; deciding %d one by one", len(holds), exc_info=True)
            results = [None] * len(holds)
        if len(holds) == 1:
            return results
        return [result or self._holds_write([hold])[0] for hold, result in zip(holds, results, strict=True)]

    def holds_settle(self, items: Sequence[tuple[HeldFunds, UsageRecord]]) -> list[Settled]:
        try:
            report = _reporter(time.monotonic(), on_commit=True)
            return self.statements.settled(items, self._execute(*self.statements.settle(items)), report)
        except IntegrityError:
            if len(items) == 1:  # settled before (or by a racing call): the first event
                row = self._execute(self.statements.event_sql, [items[0][1].request_id])
                if not row:
                    raise
                return [Settled(*row[0])]
            return self._settle_alone(items)
        except Exception:
            if len(items) == 1:
                raise
            return self._settle_alone(items)

    def _settle_alone(self, items) -> list[Settled]:
        logger.warning("settlements failed as a batch; settling %d one by one", len(items), exc_info=True)
        return [self.holds_settle([item])[0] for item in items]

    def hold_release(self, hold_id: uuid.UUID) -> bool:
        report = _reporter(time.monotonic(), on_commit=True)
        rows = self._execute(self.statements.release_sql, [hold_id, timezone.now()])
        report(rows)
        return bool(rows)

    # -- batched, on a server's event loop ----------------------------------------------------------
    async def writer_open(self) -> None:
        loop = asyncio.get_running_loop()
        writer = _Writer(self)
        await writer.open()
        self._writers[id(loop)] = (loop, writer)

    async def writer_close(self) -> None:
        entry = self._writers.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].close()

    def writer(self) -> "_Writer | None":
        """This event loop's writer, or None (off the server's loops)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        entry = self._writers.get(id(loop))
        if entry is None or entry[0] is not loop:
            return None
        return entry[1]


class _Batcher:
    """A queue of (item, future) flushed by at most MAX_INFLIGHT tasks, up to MAX_BATCH items each."""

    def __init__(self, flush, kind: str) -> None:
        self._flush = flush
        self._depth = observability.LEDGER_QUEUE_DEPTH.labels(kind)
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


_ALONE = object()  # the future's result when the item is to be decided as a batch of one


class _Writer:
    """One server event loop's batched holds and settlements, on two small async connection pools.

    Holds commit asynchronously (no WAL flush wait: ~0.4 ms less before the upstream call). A hold
    is a reservation, not a movement of money: if a database crash loses its commit, the hold row
    and its held_nanos vanish together (the WAL replays whole transactions), and the request's
    settlement still debits its cost (a settlement whose hold is missing releases nothing) — nothing
    is lost or doubled. Settlements commit synchronously, and their WAL flush makes every earlier
    hold durable too. Hence two pools: the holds' connections are opened with synchronous_commit=off.
    """

    def __init__(self, backend: PgBackend) -> None:
        from psycopg_pool import AsyncConnectionPool

        settings_dict = connections["default"].settings_dict
        conninfo = make_conninfo(
            dbname=settings_dict["NAME"],
            user=settings_dict.get("USER") or None,
            password=settings_dict.get("PASSWORD") or None,
            host=settings_dict.get("HOST") or None,
            port=str(settings_dict.get("PORT") or "") or None,
            application_name="ruapi-ledger",
            connect_timeout="5",
        )
        self._backend = backend
        self._statements = backend.statements
        options = {"hold": "-c synchronous_commit=off", "settle": None}
        # min_size 0: no connection until the first request. While the database is gone the pools
        # cannot connect: a checkout gives up after CHECKOUT_TIMEOUT_S and its items are decided
        # alone through run_db, which fails fast (ruapi/db.py); once run_db has found the database
        # unreachable, items skip the pools altogether until it is back.
        self._pools = {
            kind: AsyncConnectionPool(
                make_conninfo(conninfo, options=option) if option else conninfo, min_size=0,
                max_size=MAX_INFLIGHT, kwargs={"autocommit": True}, timeout=CHECKOUT_TIMEOUT_S, open=False,
                name=f"ruapi-ledger-{kind}",
            )
            for kind, option in options.items()
        }  # fmt: skip
        # Statements and items written, and items decided alone (tests, benchmarks).
        self.stats = {"hold_batches": 0, "holds": 0, "settle_batches": 0, "settlements": 0, "one_by_one": 0}
        self._holds = _Batcher(self._flush_holds, "holds")
        self._settlements = _Batcher(self._flush_settlements, "settlements")

    async def open(self) -> None:
        for pool in self._pools.values():
            await pool.open(wait=False)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()

    async def hold(self, request: HoldRequest) -> HeldFunds | None:
        hold = new_hold(request)
        result = _ALONE if database_unreachable() else await self._holds.submit(hold)
        if result is _ALONE:
            [result] = await run_db(self._backend._holds_write, [hold])
        return result

    async def settle(self, hold: HeldFunds, usage: UsageRecord) -> Settled:
        result = _ALONE if database_unreachable() else await self._settlements.submit((hold, usage))
        if result is _ALONE:
            [result] = await run_db(self._backend.holds_settle, [(hold, usage)])
        return result

    async def _execute(self, kind: str, sql: str, params: list) -> list[tuple]:
        async with self._pools[kind].connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def execute(self, sql: str, params: list) -> list[tuple]:
        """One statement on this loop's settlement pool (synchronous commit, no extra connections):
        proxy.response_store sends its batched stored-response writes here."""
        return await self._execute("settle", sql, params)

    async def _flush_holds(self, batch: list[tuple[HeldFunds, asyncio.Future]]) -> None:
        holds = [hold for hold, _ in batch]
        try:
            report = _reporter(time.monotonic(), on_commit=False)
            rows = await self._execute("hold", *self._statements.hold(holds))
            results = self._statements.admitted(holds, rows, report)
        except Exception:
            logger.warning("batched holds failed; deciding %d holds alone", len(batch), exc_info=True)
            results = [_ALONE] * len(batch)
        else:
            self.stats["hold_batches"] += 1
            self.stats["holds"] += sum(r is not None for r in results)
            if len(batch) > 1:  # an organisation whose total did not fit: each of its holds alone
                results = [_ALONE if r is None else r for r in results]
        self.stats["one_by_one"] += sum(r is _ALONE for r in results)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _flush_settlements(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        try:
            report = _reporter(time.monotonic(), on_commit=False)
            rows = await self._execute("settle", *self._statements.settle(items))
            results = self._statements.settled(items, rows, report)
        except Exception as exc:
            if len(batch) > 1 or not isinstance(exc, psycopg.errors.UniqueViolation):
                logger.warning("batched settlement failed; settling %d alone", len(batch), exc_info=True)
            results = [_ALONE] * len(batch)
        else:
            self.stats["settle_batches"] += 1
            self.stats["settlements"] += len(results)
        self.stats["one_by_one"] += sum(r is _ALONE for r in results)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


# Public for proxy.response_store, which batches its writes with the same queue and row encoding.
Batcher = _Batcher
Rows = _Rows

__all__ = ["MAX_BATCH", "MAX_INFLIGHT", "Batcher", "PgBackend", "Rows"]
