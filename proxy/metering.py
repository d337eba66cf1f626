"""Holds before the upstream call, settlement after it: the proxy's side of billing.

The hold is the request's maximum cost (estimated input + maximum output); settlement debits the
actual cost from the upstream's own counts (or a marked estimate), releases the rest, and writes
the request's one usage event — before the response's last byte leaves.
"""

import asyncio
from dataclasses import dataclass

from accounts.keycache import KeyContext
from billing.models import Hold
from billing.money import TokenCounts, TokenPrices, cost_for
from billing.services import InsufficientBalanceError, UsageRecord, balance_hold, batched, hold_settle
from catalog.snapshot import ModelSpec, RouteSpec
from proxy import limits
from proxy.responses import Call
from proxy.translate.errors import ErrorKind, GatewayError
from proxy.translate.usage import Usage
from ruapi.db import run_db
from usage.live import usage_event_publish

DEFAULT_OUTPUT_RESERVE = 4096  # output tokens held when neither the client nor the catalog caps them
# Server-tool uses held for a web_search / web_fetch tool declared without `max_uses` (issue 14). Anthropic sets no
# limit of its own; a request that uses more is still billed in full (the documented overspend bound).
DEFAULT_SERVER_TOOL_USES = 10


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


def chat_hold_nanos(spec: ModelSpec, *, input_tokens: int, max_output_tokens: int | None) -> int:
    """Most a chat request can cost: the input at the dearer of input / cache-write prices, plus max output."""
    output = max_output_tokens or spec.max_output_tokens or DEFAULT_OUTPUT_RESERVE
    if spec.max_output_tokens:
        output = min(output, spec.max_output_tokens)
    prices = spec.prices
    input_price = max(prices.input_nanos_per_mtok, prices.cache_write_nanos_per_mtok)
    return cost_for(
        TokenCounts(input_tokens=input_tokens, output_tokens=output),
        TokenPrices(input_nanos_per_mtok=input_price, output_nanos_per_mtok=prices.output_nanos_per_mtok),
    )


def server_tool_hold_nanos(spec: ModelSpec, body: dict) -> int:
    """Most the server tools of an A request can cost: each web_search / web_fetch tool's `max_uses` (else
    DEFAULT_SERVER_TOOL_USES) at the model's per-use price. 0 for requests without server tools."""
    counts = {"web_search": 0, "web_fetch": 0}
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        prefix = next((name for name in counts if isinstance(kind, str) and kind.startswith(name + "_")), None)
        if prefix is None:
            continue
        uses = tool.get("max_uses")
        counts[prefix] += uses if type(uses) is int and uses >= 0 else DEFAULT_SERVER_TOOL_USES
    if not any(counts.values()):
        return 0
    return cost_for(
        TokenCounts(web_search_requests=counts["web_search"], web_fetch_requests=counts["web_fetch"]),
        TokenPrices(
            web_search_nanos_per_kreq=spec.prices.web_search_nanos_per_kreq,
            web_fetch_nanos_per_kreq=spec.prices.web_fetch_nanos_per_kreq,
        ),
    )


async def hold_open(call: Call, key: KeyContext, amount_nanos: int, *, tokens: int | None = None) -> Hold:
    """Admit the request or refuse it: rate limits (429) and spend caps (402) from proxy/limits.py,
    then reserve its maximum cost or refuse it with 402 (PROTOCOLS §5.4).

    `tokens`: the request's estimated input tokens for TPM limits (estimated from the body if None).
    """
    counters: list[limits.Counter] = []
    if key.has_limits:
        if tokens is None:
            tokens = limits.estimated_request_tokens(call.request)
        try:
            counters, headers = await limits.admit(key, tokens=tokens, hold_nanos=amount_nanos)
        except limits.LimitError as exc:
            call.extra_headers.update(exc.headers)
            raise
        call.extra_headers.update(headers)
    try:
        writer = batched.writer()
        if writer is not None:
            return await writer.hold(org_id=key.org_id, request_id=call.request_id, amount_nanos=amount_nanos)
        return await run_db(balance_hold, org_id=key.org_id, request_id=call.request_id, amount_nanos=amount_nanos)
    except InsufficientBalanceError as exc:
        # Not spent after all: give the reservation back to the spend caps.
        await limits.release_counters([c for c in counters if c.kind == "spend"])
        raise GatewayError(ErrorKind.BILLING, str(exc), should_retry=False) from exc


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


async def settle(call: Call, key: KeyContext, hold: Hold, spec: ModelSpec, outcome: Outcome) -> None:
    """Debit and record once; shielded so a cancelled (disconnected) request still completes it."""
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
        cost_nanos=outcome.cost_nanos,
        attempts=outcome.attempts,
        latency_ms=call.elapsed_ms(),
        ttfb_ms=outcome.ttfb_ms,
        # Set only by in-process callers (the dashboard playground, usage/playground.py): a
        # network client cannot put anything in the ASGI scope.
        source=scope.get("ruapi.usage_source") or "api",
        user_id=scope.get("ruapi.user_id"),
    )
    await asyncio.shield(_settle_and_publish(record, hold, key))


async def _settle_and_publish(record, hold: Hold, key: KeyContext) -> None:
    writer = batched.writer()
    if writer is not None:
        event = await writer.settle(hold=hold, usage=record)
    else:
        event = await run_db(hold_settle, hold=hold, usage=record)
    # The live feed (issue 6): a fire-and-forget group_send after the commit; never awaited here.
    usage_event_publish(event, key_prefix=key.key_prefix)
