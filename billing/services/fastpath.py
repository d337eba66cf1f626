"""Postgres: hold and settle as ONE statement each (data-modifying CTEs, autocommit).

The ORM versions in ledger.py take a transaction and 2 (hold) or 5–6 (settle) round trips; on the
gateway's hot path that was most of the CPU per request (bench/results/profile-S2.md). One
statement is atomic by itself, holds the balance row's lock only while it runs, and keeps every
guarantee of the ORM path: the sufficient-balance test stays in the UPDATE's WHERE, and the
unique constraints on the usage event and the usage ledger entry make a second settle of the same
request fail as a whole (the caller then returns the first event). SQLite has no data-modifying
CTEs, so it keeps the ORM path.
"""

from contextlib import nullcontext
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import AutoField
from django.db.models.sql import InsertQuery
from django.utils import timezone

from billing.models import Balance, Hold, LedgerEntry, UsageEvent


def is_available() -> bool:
    return connection.vendor == "postgresql"


def _statement_scope():
    """Inside a caller's transaction, a savepoint keeps a refused statement from aborting it;
    in autocommit (the gateway) the statement is its own transaction and needs nothing."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def _insert_sql(obj) -> tuple[str, list]:
    """The INSERT Django would run for `obj` (so new model fields need no change here)."""
    fields = [f for f in obj._meta.local_concrete_fields if not isinstance(f, AutoField)]
    for field in fields:
        field.pre_save(obj, add=True)  # auto_now_add timestamps
    query = InsertQuery(type(obj))
    query.insert_values(fields, [obj])
    [(sql, params)] = query.get_compiler(connection=connection).as_sql()
    return sql, list(params)


def hold_create(*, org_id: int, request_id: str, amount_nanos: int) -> Hold | None:
    """Reserve in one statement; None when the balance (plus credit limit) cannot cover it."""
    hold = Hold(
        org_id=org_id,
        request_id=request_id,
        amount_nanos=amount_nanos,
        status=Hold.Status.PENDING,
        expires_at=timezone.now() + timedelta(seconds=settings.RUAPI_HOLD_TTL),
    )
    insert_sql, insert_params = _insert_sql(hold)
    # INSERT ... VALUES (...) becomes INSERT ... SELECT ... FROM reserved: no row reserved, no hold.
    head, _, values = insert_sql.partition(" VALUES ")
    sql = (
        f"WITH reserved AS (UPDATE {Balance._meta.db_table} SET held_nanos = held_nanos + %s, updated_at = %s "
        "WHERE org_id = %s AND balance_nanos + credit_limit_nanos >= held_nanos + %s RETURNING org_id) "
        f"{head} SELECT {values.strip()[1:-1]} FROM reserved RETURNING id"
    )
    params = [amount_nanos, timezone.now(), org_id, amount_nanos, *insert_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    hold._state.adding = False
    return hold


def hold_settle(*, hold: Hold, event: UsageEvent, cost_nanos: int) -> UsageEvent:
    """Release the hold, debit the cost, append the ledger entry and write the event: one statement.

    Raises IntegrityError when this request was already settled (nothing is changed then).
    """
    ctes = [
        f"h AS (UPDATE {Hold._meta.db_table} SET status = 'settled' WHERE id = %s AND status = 'pending' "
        "RETURNING amount_nanos)",
        f"b AS (UPDATE {Balance._meta.db_table} "
        "SET held_nanos = held_nanos - COALESCE((SELECT amount_nanos FROM h), 0), "
        "balance_nanos = balance_nanos - %s, updated_at = %s WHERE org_id = %s)",
    ]
    params: list = [hold.pk, cost_nanos, timezone.now(), hold.org_id]
    if cost_nanos:
        entry = LedgerEntry(
            org_id=hold.org_id,
            kind=LedgerEntry.Kind.USAGE,
            amount_nanos=-cost_nanos,
            request_id=event.request_id,
            description=f"{event.model} ({event.endpoint})",
        )
        ledger_sql, ledger_params = _insert_sql(entry)
        ctes.append(f"l AS ({ledger_sql})")
        params += ledger_params
    event_sql, event_params = _insert_sql(event)
    sql = "WITH " + ", ".join(ctes) + f" {event_sql} RETURNING id"
    with _statement_scope(), connection.cursor() as cursor:
        cursor.execute(sql, [*params, *event_params])
        event.pk = cursor.fetchone()[0]
    event._state.adding = False
    return event
