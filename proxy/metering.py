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
from dataclasses import dataclass

from accounts.keycache import KeyContext
from billing.models import UsageEvent
from billing.money import TokenCounts, TokenPrices, cost_for
from billing.services import HeldFunds, InsufficientBalanceError, UsageRecord, ahold_open, ahold_settle
from catalog.snapshot import ModelSpec, RouteSpec
from proxy import limits
from proxy.responses import Call
from proxy.translate.errors import ErrorKind, GatewayError
from proxy.translate.reasoning import EFFORT_BUDGETS, VISIBLE_RESERVE_TOKENS
from proxy.translate.usage import Usage, bound_prompt_tokens
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


async def hold_open(call: Call, key: KeyContext, amount_nanos: int, *, tokens: int | None = None) -> HeldFunds:
    """Admit the request or refuse it: rate limits (429) and spend caps (402) from proxy/limits.py,
    then reserve its maximum cost or refuse it with 402 (PROTOCOLS §5.4).

    `tokens`: the request's estimated input tokens for TPM limits (estimated from the body if None).
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
    try:
        # A client that leaves while its hold is being written: the boundary releases it once written.
        hold = await ahold_open(org_id=key.org_id, request_id=call.request_id, amount_nanos=amount_nanos)
    except BaseException as exc:
        # Not spent after all (no balance, the database is gone, the client left): give the
        # reservation back to the spend caps.
        await asyncio.shield(limits.spend_settle(ticket, 0))
        if isinstance(exc, InsufficientBalanceError):
            raise GatewayError(ErrorKind.BILLING, str(exc), should_retry=False) from exc
        raise
    call.spend_ticket = ticket  # settle() hands it back to the spend caps (Call is a plain dataclass)
    return hold


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


async def settle(call: Call, key: KeyContext, hold: HeldFunds, spec: ModelSpec, outcome: Outcome) -> int:
    """Debit and record once; shielded so a cancelled (disconnected) request still completes it.

    Returns what was debited: `outcome.cost_nanos` capped at the hold (`billable_nanos`).
    """
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
    await asyncio.shield(_settle_and_publish(record, hold, key, getattr(call, "spend_ticket", None)))
    return cost


async def _settle_and_publish(record, hold: HeldFunds, key: KeyContext, ticket: limits.SpendTicket | None) -> None:
    settled = await ahold_settle(hold=hold, usage=record)
    # After the commit: the spend caps re-read from the database can no longer miss this cost.
    await limits.spend_settle(ticket, record.cost_nanos)
    # The live feed (issue 6): a fire-and-forget group_send after the commit; never awaited here.
    event = UsageEvent(id=settled.event_id, created_at=settled.created_at, **record.__dict__)  # not saved: shown
    usage_event_publish(event, key_prefix=key.key_prefix)
