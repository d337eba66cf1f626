"""Holds before the upstream call, settlement after it: the proxy's side of billing.

The hold is the most the request can cost (issue 12): its input at a bound no prompt can beat
(proxy.translate.usage.bound_prompt_tokens, capped by the model's context window), every choice's
maximum output (`n`), thinking budgets, media at their own bounds, tools that cost per call.
Settlement debits the actual cost from the upstream's own counts (or a marked estimate), releases
the rest, and writes the request's one usage event — before the response's last byte leaves.

The money rule: a request is never debited more than its hold. An upstream reporting more than the
request could have produced (beyond its caps) is billed the hold, and the usage event is marked
estimated and logged. As a hold is only granted when the balance (plus a postpaid credit limit)
covers it next to every other pending hold, no request and no burst of them, in any number of
processes, takes a balance below zero (below -credit limit) through usage. Spend caps follow the
same rule (proxy/limits.py).
"""

import asyncio
import logging
import threading
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from accounts.keycache import KeyContext
from billing.money import TokenCounts, TokenPrices, cost_for
from billing.services import BillingError, HeldFunds, InsufficientBalanceError, UsageRecord, ahold_open, ahold_settle
from billing.services.holds import backend, funds_available, hold_expires_at, release_when_written
from catalog.snapshot import ModelSpec, RouteSpec
from proxy import limits
from proxy.responses import Call
from proxy.translate.errors import ErrorKind, GatewayError
from proxy.translate.reasoning import EFFORT_BUDGETS, VISIBLE_RESERVE_TOKENS
from proxy.translate.usage import Usage, bound_prompt_tokens
from ruapi import observability
from usage.live import usage_event_publish

logger = logging.getLogger(__name__)

# Output tokens held (and, by the money rule, billed at most) per choice when neither the client nor
# the catalog caps the output: give every model its max_output_tokens in the catalog.
DEFAULT_OUTPUT_RESERVE = 4096
# Server tools the upstream runs and bills per call (web search, code execution, ...): how many calls
# a request may make when the client sets no `max_uses` (Anthropic's web search defaults to no limit;
# the gateway holds for this many and the money rule caps the rest).
SERVER_TOOL_CALLS_BOUND = 20
SERVER_TOOL_RESULT_TOKENS_BOUND = 20_000  # input one server tool call may add (search results, a fetched page)


def tokens_of(usage: Usage) -> TokenCounts:
    return TokenCounts(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        web_search_requests=usage.web_search_requests,
        web_fetch_requests=usage.web_fetch_requests,
    )


def usage_cost(usage: Usage, prices: TokenPrices) -> int:
    return cost_for(tokens_of(usage), prices)


def chat_hold_nanos(
    spec: ModelSpec,
    *,
    input_tokens: int,
    max_output_tokens: int | None,
    choices: int = 1,
    thinking_tokens: int = 0,
    thinking_in_cap: bool = False,
    tools_nanos: int = 0,
) -> int:
    """Most a chat request can cost: the input at the dearer of input / cache-write prices, plus every
    choice's maximum output (`chat_output_bound`), plus what its server tools may cost."""
    output = chat_output_bound(
        spec, max_output_tokens, thinking_tokens=thinking_tokens, thinking_in_cap=thinking_in_cap
    )
    prices = spec.prices
    input_price = max(prices.input_nanos_per_mtok, prices.cache_write_nanos_per_mtok)
    return (
        cost_for(
            TokenCounts(input_tokens=input_tokens, output_tokens=output * max(choices, 1)),
            TokenPrices(input_nanos_per_mtok=input_price, output_nanos_per_mtok=prices.output_nanos_per_mtok),
        )
        + tools_nanos
    )


def chat_output_bound(
    spec: ModelSpec, max_output_tokens: int | None, *, thinking_tokens: int = 0, thinking_in_cap: bool = False
) -> int:
    """Most output tokens one choice can produce: the client's cap, else the largest default a route
    sends (provider option `default_max_tokens`), else the catalog's max output, else DEFAULT_OUTPUT_RESERVE;
    raised to fit a thinking budget the way the O→A translation raises max_tokens (§2.6) unless the
    budget is inside the cap already (`thinking_in_cap`: an A client, whose thinking Anthropic counts
    within max_tokens and requires below it); never above the catalog's max output (an upstream
    refuses more); plus the budget when a Gemini route may count thoughts apart from maxOutputTokens."""
    defaults = [r.provider.options.get("default_max_tokens") for r in spec.routes]
    defaults = [d for d in defaults if isinstance(d, int) and not isinstance(d, bool) and d > 0]
    output = max_output_tokens or max(defaults, default=0) or spec.max_output_tokens or DEFAULT_OUTPUT_RESERVE
    if thinking_tokens and not thinking_in_cap:
        output = max(output, thinking_tokens + VISIBLE_RESERVE_TOKENS)
    if spec.max_output_tokens:
        output = min(output, spec.max_output_tokens)
    if thinking_tokens and any(r.provider.protocol == "gemini" for r in spec.routes):
        output += thinking_tokens
    return output


def chat_input_bound(spec: ModelSpec, body: dict, *, body_bytes: int | None = None) -> int:
    """Most input tokens a chat request can be billed: the prompt bound plus what server tool results
    may add (SERVER_TOOL_RESULT_TOKENS_BOUND per call), capped by the context window."""
    calls = sum(count for _, count in server_tool_calls(body))
    bound = bound_prompt_tokens(body, body_bytes=body_bytes) + calls * SERVER_TOOL_RESULT_TOKENS_BOUND
    return min(bound, spec.context_window) if spec.context_window else bound


def thinking_budget(body: dict, protocol: str, spec: ModelSpec) -> int:
    """The thinking budget a request asks for (A `thinking.budget_tokens`, or O `reasoning_effort`
    mapped as the O→A translation maps it, or an O `thinking` extra): 0 when none."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
            return budget
    if protocol == "openai" and spec.thinking:
        return EFFORT_BUDGETS.get(body.get("reasoning_effort"), 0) if isinstance(
            body.get("reasoning_effort"), str) else 0  # fmt: skip
    return 0


def server_tool_calls(body: dict) -> list[tuple[str, int]]:
    """(type, most calls) of each server tool a request declares: A tools with a `type` other than a
    custom one (web search, web fetch, code execution; `max_uses` or SERVER_TOOL_CALLS_BOUND), and O
    `web_search_options`."""
    calls = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") in (None, "function", "custom"):
            continue
        uses = tool.get("max_uses")
        calls.append((str(tool.get("type")), uses if type(uses) is int and uses >= 0 else SERVER_TOOL_CALLS_BOUND))
    if isinstance(body.get("web_search_options"), dict):
        calls.append(("web_search_options", SERVER_TOOL_CALLS_BOUND))
    return calls


def server_tools_hold_nanos(spec: ModelSpec, body: dict) -> int:
    """Most the server tools of a request can cost (issue 14): every web search / web fetch call its
    tools allow (`max_uses`, else SERVER_TOOL_CALLS_BOUND) at the model's per-call price; 0 without."""
    searches = fetches = 0
    for kind, calls in server_tool_calls(body):
        if kind.startswith("web_search"):  # web_search_20250305, ..., and O `web_search_options`
            searches += calls
        elif kind.startswith("web_fetch"):
            fetches += calls
    if not searches and not fetches:
        return 0
    return cost_for(
        TokenCounts(web_search_requests=searches, web_fetch_requests=fetches),
        TokenPrices(
            web_search_nanos_per_kreq=spec.prices.web_search_nanos_per_kreq,
            web_fetch_nanos_per_kreq=spec.prices.web_fetch_nanos_per_kreq,
        ),
    )


def choices_of(body: dict) -> int:
    """O `n` (validated 1..16 at ingress): every choice is billed."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


async def hold_open(
    call: Call, key: KeyContext, amount_nanos: int, *, tokens: int | None = None, optimistic: bool = False
) -> "HeldFunds | PendingHold":
    """Admit the request or refuse it: rate limits (429) and spend caps (402) from proxy/limits.py,
    then reserve its maximum cost or refuse it with 402 (PROTOCOLS §5.4).

    `tokens`: the request's estimated input tokens for TPM limits (estimated from the body if None).
    `optimistic` (the chat pipelines): when the organisation is rich enough (`optimistic_admit`), the
    hold is written while the upstream call starts and a PendingHold comes back at once.
    """
    ticket: limits.SpendTicket | None = None
    if key.has_limits:
        if tokens is None:
            tokens = limits.estimated_request_tokens(call.request)
        try:
            ticket, headers = await limits.admit(key, tokens=tokens, hold_nanos=amount_nanos)
        except limits.LimitError as exc:
            call.extra_headers.update(exc.headers)
            raise
        call.extra_headers.update(headers)
    if optimistic and optimistic_admit(key.org_id, amount_nanos):
        return PendingHold(call, key, amount_nanos, ticket)
    return await _hold_write(call, key, amount_nanos, ticket)


async def _hold_write(
    call: Call, key: KeyContext, amount_nanos: int, ticket: limits.SpendTicket | None, *, refused=GatewayError
) -> HeldFunds:
    try:
        # A client that leaves while its hold is being written: the boundary releases it once written.
        hold = await ahold_open(org_id=key.org_id, request_id=call.request_id, amount_nanos=amount_nanos)
    except BaseException as exc:
        # Not spent after all (no balance, the database is gone, the client left): give the
        # reservation back to the spend caps.
        await asyncio.shield(limits.spend_settle(ticket, 0))
        if isinstance(exc, InsufficientBalanceError):
            raise refused(ErrorKind.BILLING, str(exc), should_retry=False) from exc
        raise
    call.spend_ticket = ticket  # settle() hands it back to the spend caps (Call is a plain dataclass)
    return hold


# -- optimistic admission (issue 15) -------------------------------------------------------------------
# A lone request need not wait for its hold's database round trip before its upstream call when its
# organisation is known to be rich: the hold is written while the upstream call starts, and
# confirmed before a stream's first byte and before any settlement (proxy/exchange.py); a complete
# answer whose settlement overlaps it leaves without waiting, its settlement confirming the hold
# (`_hold_after_answer`: refused, the answer's actual cost is held instead). The database still
# decides: a hold it refuses (other processes spent the funds within the view's age) while the
# upstream call runs cancels it and answers 402, debiting nothing; the reseller absorbs at most that
# upstream call. "Known to be rich": the funds this
# process last saw (billing.services.holds.funds_available, refreshed by every hold, settlement and
# release statement) at most RUAPI_OPTIMISTIC_HOLD_MAX_AGE seconds ago, less this process's
# optimistic holds still being written, are at least RUAPI_OPTIMISTIC_HOLD_FACTOR times the hold.


class HoldRefused(GatewayError):
    """An optimistic hold the database refused: the 402 of a refused hold, after the upstream call started."""


_writing: dict[int, int] = {}  # org_id -> nano-USD of this process's optimistic holds being written
_writing_lock = threading.Lock()
_tasks: set[asyncio.Task] = set()  # hold writes and give-backs in flight (a running task must be referenced)
stats = {"optimistic": 0, "refused": 0}  # optimistic holds started and refused in this process (tests)


def optimistic_admit(org_id: int, amount_nanos: int) -> bool:
    """Whether a hold may be written while the upstream call starts; if so it counts as being written."""
    factor = settings.RUAPI_OPTIMISTIC_HOLD_FACTOR
    if factor <= 0:
        return False
    available = funds_available(org_id, max_age=settings.RUAPI_OPTIMISTIC_HOLD_MAX_AGE)
    if available is None:
        return False
    with _writing_lock:
        writing = _writing.get(org_id, 0)
        if available - writing < factor * amount_nanos:
            return False
        _writing[org_id] = writing + amount_nanos
    stats["optimistic"] += 1
    return True


class PendingHold:
    """A hold being written while the upstream call starts. The exchange `confirm()`s it before any of
    the answer leaves and before settling, or `discard()`s it when the request ends before that."""

    def __init__(self, call: Call, key: KeyContext, amount_nanos: int, ticket: limits.SpendTicket | None) -> None:
        self.org_id = key.org_id
        self.request_id = call.request_id
        self.amount_nanos = amount_nanos
        self.ticket = ticket
        # No later than the written hold's own expiry (it is written after this).
        self.expires_at = hold_expires_at()
        self._call = call
        self.task = asyncio.get_running_loop().create_task(
            _hold_write(call, key, amount_nanos, ticket, refused=HoldRefused)
        )
        _tasks.add(self.task)
        self.task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        _tasks.discard(task)
        with _writing_lock:
            left = _writing.get(self.org_id, 0) - self.amount_nanos
            if left > 0:
                _writing[self.org_id] = left
            else:
                _writing.pop(self.org_id, None)
        if not task.cancelled() and isinstance(task.exception(), HoldRefused):
            stats["refused"] += 1
            observability.optimistic_hold_refused()
            logger.warning(
                "request %s: optimistic hold of %d nano-USD refused after its upstream call started "
                "(organisation %d spent elsewhere)", self.request_id, self.amount_nanos, self.org_id,
            )  # fmt: skip

    def done(self) -> bool:
        return self.task.done()

    def confirmed_at_settlement(self) -> bool:
        """Whether a complete answer may be built and sent before this hold is confirmed, its overlapped
        settlement confirming it (`_hold_after_answer`): while the hold is still being written, on a
        key without spend caps or rate limits (whose reservation the hold's refusal gives back), where
        settlements overlap answers."""
        return not self.task.done() and self.ticket is None and settlement_overlaps()

    async def confirm(self) -> HeldFunds:
        """The written hold; raises HoldRefused (402), or the database's error as a failed hold does.
        A caller cancelled meanwhile does not cancel the write (see `discard`)."""
        return await asyncio.shield(self.task)

    def written(self) -> HeldFunds | None:
        """The hold if it was written, None if it was refused or failed (then nothing is held)."""
        if not self.task.done() or self.task.cancelled() or self.task.exception() is not None:
            return None
        return self.task.result()

    def discard(self) -> None:
        """Nobody will use this hold (the client left, a failure): once written it is released and its
        spend-cap reservation given back; refused or failed, nothing is held and the reservation is
        already back (`_hold_write`)."""
        self.task.add_done_callback(release_when_written)
        self.task.add_done_callback(self._ticket_back)

    def _ticket_back(self, task: asyncio.Task) -> None:
        if self.written() is None:
            return
        back = asyncio.get_running_loop().create_task(limits.spend_settle(getattr(self._call, "spend_ticket", None), 0))
        _tasks.add(back)
        back.add_done_callback(_tasks.discard)


@dataclass
class Outcome:
    """What happened upstream, for the usage event."""

    status_code: int = 200
    usage: Usage | None = None
    cost_nanos: int = 0
    units: float = 0
    error_type: str = ""
    route: RouteSpec | None = None
    attempts: int = 1
    is_stream: bool = False
    ttfb_ms: int | None = None


def billable_nanos(call: Call, hold: HeldFunds, outcome: Outcome) -> int:
    """The money rule: the debit is the cost, never more than the hold. Above it (an upstream reporting
    beyond the request's caps, or a hold that missed a multiplier) the hold is billed, the usage is
    marked estimated and a warning names the request and the figures."""
    if outcome.cost_nanos <= hold.amount_nanos:
        return outcome.cost_nanos
    logger.warning(
        "request %s cost %d nano-USD, above its hold of %d: billed the hold (estimated)",
        call.request_id, outcome.cost_nanos, hold.amount_nanos,
    )  # fmt: skip
    if outcome.usage is not None:
        outcome.usage.estimated = True
    else:
        outcome.usage = Usage(estimated=True)
    outcome.cost_nanos = hold.amount_nanos
    return hold.amount_nanos


async def settle(
    call: Call,
    key: KeyContext,
    hold: "HeldFunds | PendingHold",
    spec: ModelSpec,
    outcome: Outcome,
    *,
    overlap: bool = False,
) -> int:
    """Debit and record once; shielded so a cancelled (disconnected) request still completes it.

    Returns what was debited: `outcome.cost_nanos` capped at the hold (`billable_nanos`).
    `overlap` (a complete, non-streamed answer about to be sent): see `settlement_overlaps`; its hold
    may still be being written (a PendingHold, see `_hold_after_answer`).
    """
    if isinstance(hold, PendingHold) and not (overlap and settlement_overlaps()):
        hold = await hold.confirm()
    cost = billable_nanos(call, hold, outcome)
    usage = outcome.usage or Usage()
    route = outcome.route
    scope = getattr(call.request, "scope", None) or {}
    record = UsageRecord(
        request_id=call.request_id,
        org_id=key.org_id,
        api_key_id=key.key_id,
        endpoint=call.endpoint,
        model=spec.name,
        client_protocol=call.protocol,
        status_code=outcome.status_code,
        provider=route.provider.name if route else "",
        upstream_model=route.upstream_model if route else "",
        upstream_protocol=route.provider.protocol if route else "",
        is_stream=outcome.is_stream,
        error_type=outcome.error_type,
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        web_search_requests=usage.web_search_requests,
        web_fetch_requests=usage.web_fetch_requests,
        units=outcome.units,
        is_estimated=usage.estimated,
        price_id=spec.price_id,
        cost_nanos=cost,
        attempts=outcome.attempts,
        latency_ms=call.elapsed_ms(),
        ttfb_ms=outcome.ttfb_ms,
        # Set only by in-process callers (the dashboard playground, usage/playground.py): a
        # network client cannot put anything in the ASGI scope.
        source=scope.get("ruapi.usage_source") or "api",
        user_id=scope.get("ruapi.user_id"),
    )
    call.usage_record, call.key_prefix = record, key.key_prefix  # for ruapi/observability.py
    ticket = getattr(call, "spend_ticket", None)
    if overlap and settlement_overlaps():
        task = asyncio.get_running_loop().create_task(_settle_overlapped(record, hold, key, ticket))
        _settling.add(task)
        task.add_done_callback(_settling.discard)
        return cost
    await asyncio.shield(_settle_and_publish(record, hold, key, ticket))
    return cost


async def _settle_and_publish(record, hold: HeldFunds, key: KeyContext, ticket: limits.SpendTicket | None) -> None:
    settled = await ahold_settle(hold=hold, usage=record)
    # After the commit: the spend caps re-read from the database can no longer miss this cost.
    await limits.spend_settle(ticket, record.cost_nanos)
    # The live feed (issue 6): a fire-and-forget group_send after the commit; never awaited here.
    usage_event_publish(record, created_at=settled.created_at, key_prefix=key.key_prefix)


# -- the settlement overlapping the answer (issue 15) ---------------------------------------------
# A complete (non-streamed) answer is sent while its settlement commits, instead of after it: the
# settlement's round trip (its statement, the WAL flush) is most of a lone request's added latency.
# What is computed before the answer leaves is exactly what is debited (`billable_nanos`, shown in
# the answer's usage and headers); the hold keeps reserving the money until the commit, so no
# request can overdraw because of the overlap. The settlement is the same idempotent statement:
# a failure (the database gone a moment) is retried until SETTLE_RETRY_SECONDS before the hold could
# expire; graceful shutdown waits up to 10 s for the settlements in flight (`settlements_drain`).
# The window: a process killed (SIGKILL, OOM, host crash) or a database crash in the ~millisecond
# between an answer's last byte and its settlement's commit leaves that request unbilled — its hold
# is released by the expiry task, the ledger still sums to the balance, the tenant is never debited
# twice or beyond a hold. At most the requests in flight in that process at that instant, each at
# most its hold (proxy/tests/integration/test_settlement_overlap.py kills a gateway to show it).
# RUAPI_SETTLE_BEFORE_RESPONSE=1 restores a debit durable before the answer's last byte.

_settling: set[asyncio.Task] = set()  # settlements overlapping their answers, until committed
SETTLE_RETRY_SECONDS = 60.0  # a failed overlapped settlement is retried until this long before its hold expires


def settlement_overlaps() -> bool:
    """Whether answers may be sent while their settlement commits: on the server's event loops (where
    the batched ledger writer runs) unless RUAPI_SETTLE_BEFORE_RESPONSE is set."""
    if settings.RUAPI_SETTLE_BEFORE_RESPONSE:
        return False
    return backend().writer() is not None


async def _settle_overlapped(
    record, hold: "HeldFunds | PendingHold", key: KeyContext, ticket: limits.SpendTicket | None
) -> None:
    delay = 0.05
    while True:
        try:
            if isinstance(hold, PendingHold):
                hold = await _hold_after_answer(hold, record)
                if hold is None:
                    return
            await _settle_and_publish(record, hold, key, ticket)
            return
        except Exception as exc:
            left = (hold.expires_at - timezone.now()).total_seconds() - SETTLE_RETRY_SECONDS
            if left <= 0 or isinstance(exc, BillingError):  # a refused amount: retrying cannot help
                observability.settlement_lost()
                logger.error(
                    "request %s: settlement of %d nano-USD given up (%s); not billed (the expiry task "
                    "releases hold %s)", record.request_id, record.cost_nanos,
                    "refused" if isinstance(exc, BillingError) else "failing until its hold's expiry",
                    getattr(hold, "id", "-"), exc_info=True,
                )  # fmt: skip
                return
            logger.warning("request %s: settlement failed, retrying in %.2fs", record.request_id, delay, exc_info=True)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


async def _hold_after_answer(pending: PendingHold, record: UsageRecord) -> HeldFunds | None:
    """The hold of a complete answer sent while its optimistic hold was still being written
    (`PendingHold.confirmed_at_settlement`): normally that hold, written long before. Refused (the
    organisation's funds were spent elsewhere within the view's age) or failed, the upstream has
    answered and the answer has left: the request holds what it actually cost instead — the same
    hold statement, so the same funds test — and is settled as usual. Refused again, the funds do not
    cover even that: the request is not billed (logged, counted in ruapi_settlements_lost_total) and
    nothing is debited, so no balance goes below its bound; the reseller absorbs that upstream call,
    as it absorbs the upstream call of an optimistic hold refused before the answer (at most the
    optimistic requests in flight when the funds went, each at most its cost). A database error is
    raised for `_settle_overlapped` to retry."""
    try:
        return await pending.confirm()
    except Exception as exc:
        why = "refused" if isinstance(exc, HoldRefused) else f"not written ({type(exc).__name__})"
    try:
        hold = await ahold_open(org_id=record.org_id, request_id=record.request_id, amount_nanos=record.cost_nanos)
    except InsufficientBalanceError:
        observability.settlement_lost()
        logger.error(
            "request %s: optimistic hold %s after the answer left, and the funds no longer cover its cost "
            "of %d nano-USD: not billed", record.request_id, why, record.cost_nanos,
        )  # fmt: skip
        return None
    logger.warning(
        "request %s: optimistic hold %s after the answer left; held its cost of %d nano-USD instead",
        record.request_id, why, record.cost_nanos,
    )  # fmt: skip
    return hold


def settlements_pending() -> list[asyncio.Task]:
    """This event loop's overlapped settlements not yet committed."""
    loop = asyncio.get_running_loop()
    return [task for task in _settling if task.get_loop() is loop]


async def settlements_drain(timeout: float = 10.0) -> None:
    """Shutdown: wait up to `timeout` seconds for this loop's overlapped settlements (normally a
    millisecond); one still failing then (the database gone) is given up, logged and counted."""
    pending = settlements_pending()
    if not pending:
        return
    _, left = await asyncio.wait(pending, timeout=timeout)
    for task in left:
        task.cancel()
        observability.settlement_lost()
    if left:
        logger.error("shutdown: %d settlements could not be committed within %.0fs; not billed", len(left), timeout)
