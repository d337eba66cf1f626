"""The gateway's Responses-API state (PROTOCOLS-RESPONSES §4.1), per organisation.

- `responses_expand`: a create request's full input — the stored chain of `previous_response_id`
  (its expanded input and output, never its `instructions`), then the new input with every
  `item_reference` and id-only `reasoning` item resolved from the organisation's store.
- `responses_store_later`: after the response's last byte, persist it (unless `store: false`) in a
  task on the event loop, like the live usage feed: the request never waits for it and a failure is
  logged, never raised. A follow-up turn that arrives while its predecessor's write is still pending
  in this process waits for that write; one that reaches another process first retries its lookup
  briefly (`PREVIOUS_RETRY_DELAYS`) before answering `previous_response_not_found`.
- Reads and deletes behind GET/DELETE /v1/responses/{id} and its input_items (every one takes the
  organisation), and the retention purge (proxy.tasks.purge_stored_responses).

Every database call goes through ruapi.db.run_db (the gateway's ORM thread pool), except the writes
on a server's event loop (Postgres, the batched ledger writer running): those are queued, and each
flush stores every queued response and its items as ONE statement on the ledger writer's connections
(billing/services/holds_pg.py's Batcher). On Postgres a lone write off the loops runs that same
statement on Django's connection; SQLite writes through the ORM.
"""

import asyncio
import logging
import uuid
import weakref
from contextlib import nullcontext
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from proxy.models import StoredItem, StoredResponse
from proxy.translate.errors import NULL_CODE, ErrorKind, GatewayError
from ruapi.db import database_unreachable, run_db

logger = logging.getLogger(__name__)

RESPONSE_ID_PREFIX = "resp_"
# Ids the gateway gives stored input items that came without one (input_items pages by id, and an
# item_reference names one). `fco_`/`ctco_`/`item_` are gateway choices; the others are §5.1's.
ITEM_ID_PREFIXES = {
    "message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "custom_tool_call": "ctc_",
    "custom_tool_call_output": "ctco_", "reasoning": "rs_",
}  # fmt: skip
ENCRYPTED_REASONING = "reasoning.encrypted_content"
PREVIOUS_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4)  # seconds: a predecessor being written by another process
PENDING_WAIT_SECONDS = 5.0  # longest a follow-up waits for this process's pending writes of its organisation


# -- errors (O shape, §3) -------------------------------------------------------------------------------------
def previous_response_not_found(response_id: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, f"Previous response with id '{response_id}' not found.",
                        param="previous_response_id", code="previous_response_not_found")  # fmt: skip


def response_not_found(response_id: str) -> GatewayError:
    return GatewayError(ErrorKind.NOT_FOUND, f"Response with id '{response_id}' not found.", code=NULL_CODE)


def item_not_found(item_id: str) -> GatewayError:
    # The API's wording (vercel/ai#7543): the usual cause is an item of a `store: false` response.
    return GatewayError(
        ErrorKind.NOT_FOUND,
        f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to false. "
        "Try again with `store` set to true, or remove this item from your input.",
        param="input",
        code=NULL_CODE,
    )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param, code="invalid_type")


# -- pure helpers (no Django, no I/O) ----------------------------------------------------------------------------
def input_items_normalise(value: object) -> list[dict]:
    """A create request's `input` as items: a string is one user message; message items get their
    `type` (the AI SDK omits it) and string content becomes parts. The caller's dicts are not changed."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise _invalid("Invalid type for 'input': expected a string or an array of input items.", "input")
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _invalid(f"Invalid type for 'input[{index}]': expected an object.", f"input[{index}]")
        kind = item.get("type")
        if kind is None and "role" in item:
            item = {"type": "message", **item}
            kind = "message"
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            text_part = {"type": part, "text": item["content"]}
            if part == "output_text":
                text_part["annotations"] = []
            item = {**item, "content": [text_part]}
        elif kind == "item_reference" and not isinstance(item.get("id"), str):
            raise _invalid(f"Invalid type for 'input[{index}].id': expected a string.", f"input[{index}].id")
        items.append(item)
    return items


def _is_id_only_reasoning(item: dict) -> bool:
    """A reasoning item the store may complete: it has an id but no ciphertext (§1.2)."""
    return item.get("type") == "reasoning" and isinstance(item.get("id"), str) and not item.get("encrypted_content")


def referenced_ids(items: list[dict]) -> set[str]:
    """Ids the store must be asked for: item references and id-only reasoning items."""
    return {item["id"] for item in items if item.get("type") == "item_reference" or _is_id_only_reasoning(item)}


def items_resolve(items: list[dict], stored: dict[str, dict]) -> list[dict]:
    """References replaced by the stored items; an unknown reference is a 404, an unknown id-only
    reasoning item stays as it is (a converted route drops it, §4.1)."""
    resolved = []
    for item in items:
        if item.get("type") == "item_reference":
            found = stored.get(item["id"])
            if found is None:
                raise item_not_found(item["id"])
            resolved.append(found)
        elif _is_id_only_reasoning(item) and stored.get(item["id"], {}).get("type") == "reasoning":
            resolved.append(stored[item["id"]])
        else:
            resolved.append(item)
    return resolved


def items_with_ids(items: list[dict], new_id=lambda prefix: prefix + uuid.uuid4().hex) -> list[dict]:
    """Every item with an `id`: the ones that came without get a fresh one of their type."""
    return [
        item if isinstance(item.get("id"), str) and item["id"]
        else {**item, "id": new_id(ITEM_ID_PREFIXES.get(item.get("type"), "item_"))}
        for item in items
    ]  # fmt: skip


def without_encrypted_reasoning(items: list, include: set[str]) -> list:
    """Reasoning items without `encrypted_content` unless the reader included it (§5.6: the store keeps
    the envelope whether or not the client asked for it)."""
    if ENCRYPTED_REASONING in include:
        return items
    return [
        {k: v for k, v in item.items() if k != "encrypted_content"}
        if isinstance(item, dict) and item.get("type") == "reasoning" else item
        for item in items
    ]  # fmt: skip


# -- expansion -------------------------------------------------------------------------------------------------------
def _lookup(*, org_id: int, previous_id: str | None, item_ids: set[str], now: datetime):
    """(the previous response's input + output or None when asked for, {item id: stored item})."""
    chain = None
    if previous_id is not None:
        row = (
            StoredResponse.objects.filter(org_id=org_id, id=previous_id, expires_at__gt=now)
            .values_list("input_items_json", "response_json")
            .first()
        )
        if row is not None:
            output = orjson.loads(row[1]).get("output") or []
            chain = orjson.loads(row[0]) + [item for item in output if isinstance(item, dict)]
    stored = {}
    if item_ids:
        rows = StoredItem.objects.filter(org_id=org_id, item_id__in=item_ids, response__expires_at__gt=now)
        stored = {item_id: orjson.loads(text) for item_id, text in rows.values_list("item_id", "item_json")}
    return chain, stored


async def responses_expand(*, org_id: int, body: dict) -> list[dict]:
    """The full input item list of a create request (§4.1); 400 `previous_response_not_found`, 404 for an
    unknown item reference. No database call when there is nothing to look up."""
    items = input_items_normalise(body.get("input"))
    previous_id = body.get("previous_response_id")
    if previous_id is not None and not isinstance(previous_id, str):
        raise _invalid("Invalid type for 'previous_response_id': expected a string.", "previous_response_id")
    wanted = referenced_ids(items)
    if previous_id is None and not wanted:
        return items
    if previous_id is not None and not previous_id.startswith(RESPONSE_ID_PREFIX):
        raise previous_response_not_found(previous_id)  # never one of ours: no lookup, no retries
    await _wait_for_pending_writes(org_id)
    chain, stored = await run_db(_lookup, org_id=org_id, previous_id=previous_id, item_ids=wanted,
                                 now=timezone.now())  # fmt: skip
    if previous_id is not None and chain is None:
        # Written just now by another process (the client sent its next turn at once)? Look again briefly.
        for delay in PREVIOUS_RETRY_DELAYS:
            await asyncio.sleep(delay)
            chain, stored = await run_db(_lookup, org_id=org_id, previous_id=previous_id, item_ids=wanted,
                                         now=timezone.now())  # fmt: skip
            if chain is not None:
                break
        else:
            raise previous_response_not_found(previous_id)
    return (chain or []) + items_resolve(items, stored)


# -- storing, off the request's path -----------------------------------------------------------------------------
_pending: dict[asyncio.Future, int] = {}  # write (task or batched future) -> organisation, until done


def responses_store_later(
    *, org_id: int, api_key_id: int | None, request: dict, input_items: list[dict], response: dict
) -> None:
    """Persist the response after its last byte, unless the request said `store: false`: queued for this
    server loop's batched writer, else a task on the running loop, else at once (never awaited by the
    request; failures logged)."""
    if request.get("store") is False:
        return
    arguments = {"org_id": org_id, "api_key_id": api_key_id, "request": request, "input_items": input_items,
                 "response": response}  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _save_logged(**arguments)
        return
    writer = _store_writer()
    if writer is not None:
        try:
            row = _prepared(**arguments)
        except Exception:
            logger.exception("storing response %r failed", response.get("id"))
            return
        future = writer.submit(row)
    else:
        future = loop.create_task(_save(arguments))
    _pending[future] = org_id
    future.add_done_callback(_forget)


def _forget(future: asyncio.Future) -> None:
    _pending.pop(future, None)
    if not future.cancelled() and future.exception() is not None:  # a flush that broke off (tasks log their own)
        logger.error("storing a response failed", exc_info=future.exception())


async def _save(arguments: dict) -> None:
    try:
        await run_db(response_store_save, **arguments)
    except Exception:
        logger.exception("storing response %r failed", arguments["response"].get("id"))


def _save_logged(**arguments) -> None:
    try:
        response_store_save(**arguments)
    except Exception:
        logger.exception("storing response %r failed", arguments["response"].get("id"))


def _pending_writes(org_id: int | None = None) -> list[asyncio.Future]:
    loop = asyncio.get_running_loop()
    return [f for f, org in _pending.items() if f.get_loop() is loop and (org_id is None or org == org_id)]


async def _wait_for_pending_writes(org_id: int) -> None:
    """This organisation's writes still queued in this process: a follow-up turn may name them."""
    futures = _pending_writes(org_id)
    if futures:
        await asyncio.wait(futures, timeout=PENDING_WAIT_SECONDS)


async def responses_store_drain() -> None:
    """Wait for every write queued on this loop (the server's shutdown, tests)."""
    futures = _pending_writes()
    if futures:
        await asyncio.wait(futures)


class _Prepared:
    """One response to store: its row and its items' rows (one per item id, the last wins)."""

    __slots__ = ("items", "response")

    def __init__(self, response: dict, items: list[dict]) -> None:
        self.response = response
        self.items = items


def _prepared(
    *, org_id: int, api_key_id: int | None, request: dict, input_items: list[dict], response: dict,
    now: datetime | None = None,
) -> _Prepared:  # fmt: skip
    response_id = response.get("id")
    if not isinstance(response_id, str) or not response_id.startswith(RESPONSE_ID_PREFIX):
        raise ValueError("a stored response needs its resp_ id")
    now = now or timezone.now()
    items = items_with_ids([item for item in input_items if isinstance(item, dict)])
    output = [item for item in response.get("output") or [] if isinstance(item, dict)]
    index = {}
    for item in items + output:  # one row per id (Postgres' ON CONFLICT may touch a row once); the last wins
        if isinstance(item.get("id"), str) and len(item["id"]) <= 200 and item.get("type") != "item_reference":
            index[item["id"]] = item
    row = {
        "id": response_id, "org_id": org_id, "api_key_id": api_key_id,
        "model": str(response.get("model") or request.get("model") or "")[:200], "created_at": now,
        "expires_at": now + timedelta(days=settings.RUAPI_RESPONSES_RETENTION_DAYS),
        "response_json": orjson.dumps(response).decode(), "input_items_json": orjson.dumps(items).decode(),
    }  # fmt: skip
    item_rows = [
        {"org_id": org_id, "item_id": item_id, "response_id": response_id, "item_type": str(item.get("type"))[:64],
         "item_json": orjson.dumps(item).decode()}
        for item_id, item in index.items()
    ]  # fmt: skip
    return _Prepared(row, item_rows)


class _StoreSql:
    """Postgres: any number of responses and their items as ONE statement (a data-modifying CTE, the rows
    as two json parameters, billing/services/holds_pg.Rows). Items are deduplicated across the batch by
    (organisation, item id), the last wins, as storing the responses one after the other would do.
    A taken response id fails the whole statement (unique violation), like the ORM's create."""

    def __init__(self) -> None:
        from billing.services.holds_pg import Rows

        self.responses = Rows(StoredResponse)
        self.items = Rows(StoredItem)
        quote = connection.ops.quote_name
        updated = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in ("response_id", "item_type", "item_json"))
        self.sql = f"""
WITH stored AS (
  {self.responses.insert_sql}
)
{self.items.insert_sql}
ON CONFLICT ({quote("org_id")}, {quote("item_id")}) DO UPDATE SET {updated}
RETURNING {quote("response_id")}"""

    def statement(self, batch: list[_Prepared]) -> tuple[str, list]:
        items = {}
        for prepared in batch:
            for row in prepared.items:
                items.pop((row["org_id"], row["item_id"]), None)  # the last wins, in the order written
                items[(row["org_id"], row["item_id"])] = row
        now = None  # every column is given; no auto_now fields
        return self.sql, [self.responses.json([p.response for p in batch], now=now),
                          self.items.json(list(items.values()), now=now)]  # fmt: skip


_sql: _StoreSql | None = None


def _store_sql() -> _StoreSql:
    global _sql
    if _sql is None:
        _sql = _StoreSql()
    return _sql


def _write(prepared: _Prepared) -> None:
    """One response on Django's connection: the batch statement on Postgres, the ORM elsewhere."""
    if connection.vendor == "postgresql":
        _write_sql(prepared)
    else:
        _write_orm(prepared)


def _write_sql(prepared: _Prepared) -> None:
    # Inside a caller's transaction a savepoint keeps a failed statement from aborting it.
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        cursor.execute(*_store_sql().statement([prepared]))


def _write_orm(prepared: _Prepared) -> None:
    with transaction.atomic():
        StoredResponse.objects.create(**prepared.response)
        StoredItem.objects.bulk_create(
            [StoredItem(**row) for row in prepared.items],
            batch_size=500,
            update_conflicts=True,
            unique_fields=["org", "item_id"],
            update_fields=["response", "item_type", "item_json"],
        )


def response_store_save(
    *, org_id: int, api_key_id: int | None, request: dict, input_items: list[dict], response: dict,
    now: datetime | None = None,
) -> StoredResponse:  # fmt: skip
    """Store one response (its object, its expanded input with an id on every item) and index its items.

    Raises ValueError for a response without a `resp_` id; IntegrityError when the id is taken.
    """
    prepared = _prepared(org_id=org_id, api_key_id=api_key_id, request=request, input_items=input_items,
                         response=response, now=now)  # fmt: skip
    _write(prepared)
    stored = StoredResponse(**prepared.response)
    stored._state.adding = False
    return stored


class _StoreWriter:
    """One server loop's batched writes: queued by responses_store_later, sent as one statement per
    flush on the ledger writer's connections (billing/services/holds_pg: the same Batcher, at most
    MAX_INFLIGHT statements at a time, no timer). A failed batch is written response by response
    through run_db, so one bad row (a taken id, a deleted organisation) costs only itself."""

    def __init__(self, ledger) -> None:
        from billing.services.holds_pg import Batcher

        self._ledger = weakref.ref(ledger)  # not a strong one: it is this writer's key in _writers
        self._batcher = Batcher(self._flush, "responses")
        self.stats = {"batches": 0, "responses": 0, "one_by_one": 0}

    def submit(self, prepared: _Prepared) -> asyncio.Future:
        return self._batcher.submit(prepared)

    async def _flush(self, batch: list[tuple[_Prepared, asyncio.Future]]) -> None:
        rows = [prepared for prepared, _ in batch]
        ledger = self._ledger()
        failed = ledger is None or database_unreachable()
        if not failed:
            try:
                await ledger.execute(*_store_sql().statement(rows))
            except Exception:
                logger.warning("batched store of %d responses failed; storing them one by one", len(batch),
                               exc_info=True)  # fmt: skip
                failed = True
            else:
                self.stats["batches"] += 1
                self.stats["responses"] += len(batch)
        if failed:
            self.stats["one_by_one"] += len(batch)
            results = [await _write_alone(prepared) for prepared in rows]  # in order: the first of an id wins
        else:
            results = [None] * len(batch)
        for (prepared, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("storing response %r failed", prepared.response["id"], exc_info=result)
            if not future.done():
                future.set_result(None)


async def _write_alone(prepared: _Prepared) -> Exception | None:
    try:
        await run_db(_write, prepared)
    except Exception as exc:
        return exc
    return None


_writers: "weakref.WeakKeyDictionary[object, _StoreWriter]" = weakref.WeakKeyDictionary()


def _store_writer() -> _StoreWriter | None:
    """This server loop's batched writer (Postgres, the ledger's writer running), or None: then a task
    stores the response through run_db."""
    from billing.services import holds

    ledger = holds.backend().writer()
    if ledger is None:
        return None
    writer = _writers.get(ledger)
    if writer is None:
        writer = _writers[ledger] = _StoreWriter(ledger)
    return writer


# -- reads and deletes (tenant-scoped) ---------------------------------------------------------------------------
def response_store_get(*, org_id: int, response_id: str, now: datetime | None = None) -> StoredResponse | None:
    """The organisation's stored response, unless expired."""
    return StoredResponse.objects.filter(org_id=org_id, id=response_id, expires_at__gt=now or timezone.now()).first()


def response_store_delete(*, org_id: int, response_id: str, now: datetime | None = None) -> bool:
    """Delete the organisation's stored response (and its items); False when there is none to delete."""
    rows = StoredResponse.objects.filter(org_id=org_id, id=response_id, expires_at__gt=now or timezone.now())
    return rows.delete()[0] > 0


def response_store_purge_expired(*, now: datetime | None = None, batch_size: int = 1000) -> int:
    """Delete expired stored responses (and their items) in batches of `batch_size`; returns the number
    of responses deleted. Each batch is its own transaction, so a long purge never holds many locks."""
    now = now or timezone.now()
    deleted = 0
    while True:
        ids = list(StoredResponse.objects.filter(expires_at__lte=now).order_by("expires_at")
                   .values_list("id", flat=True)[:batch_size])  # fmt: skip
        if not ids:
            return deleted
        with transaction.atomic():
            StoredItem.objects.filter(response_id__in=ids).delete()
            deleted += StoredResponse.objects.filter(id__in=ids).delete()[1].get(StoredResponse._meta.label, 0)
