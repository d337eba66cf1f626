"""Rate limits and monthly spend caps of keys and organisations, checked at admission (hold_open).

Windows: fixed one-minute windows (UTC minute) for requests/minute and tokens/minute, one counter
per (scope, id, kind, minute). Fixed windows are one atomic INCRBY each, cheap and exact to test;
the known cost is a burst of up to 2x the limit across a minute boundary. TPM counts the request's
*estimated input tokens* at admission (what is known before the upstream answers).

Spend caps (issue 12): a request is admitted when settled + in flight + its hold stays within the cap.
Two counters per capped key or organisation and month: "settled", the spend read from the usage events
(accounts.spend), kept RUAPI_SPEND_CACHE_TTL seconds and then re-read; and "in flight", the holds of
admitted requests not yet settled. Settlement (`spend_settle`) moves a request from one to the other:
its hold leaves "in flight", its cost (never more than the hold, proxy/metering.py) joins "settled".
So re-reading "settled" never forgets a request in flight, and the spend of a key or organisation
never passes its cap, however many requests run at once in however many processes. The figures err
only on the safe side: a request settled just before "settled" is re-read may count twice until the
next re-read, and the hold of a request whose process died counts as in flight until the counter has
been idle for RUAPI_HOLD_TTL (what the database's expiry task waits too) or the month ends.

All checks of one request run in ONE atomic step — a Lua script in Redis (REDIS_URL set, shared by
every process) or a locked dict in process (embedded default) — all-or-nothing: a refused request
consumes nothing.

Redis down: fail to local, not open and not closed. The check falls back to the in-process
limiter (limits then hold per process instead of globally) and Redis is not retried for
REDIS_RETRY_AFTER_S (accounts/shared_state.py RedisBackoff). Failing closed would turn a Redis
outage into a full API outage; failing fully open would drop spend caps, and money is already
protected by balance holds in the DB.
"""

import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from django.conf import settings

from accounts import shared_state
from accounts.keycache import KeyContext
from accounts.spend import spend_month_nanos
from billing.money import format_usd
from proxy.translate.errors import ErrorKind, GatewayError
from proxy.translate.usage import BYTES_PER_TOKEN
from ruapi.db import run_db

logger = logging.getLogger(__name__)

NEEDS_SEED = -1  # a spend counter that must be seeded with the spend figure from the database

# KEYS: counters. ARGV: per counter (amount, limit, ttl_ms, seed, plus, refresh): `plus` is 0 or the
# 1-based index of an earlier counter whose value counts against this one's limit too; refresh = 1
# pushes the TTL back on every add. Returns {0, value1, pttl1, ...} when every counter stays within
# its limit (and then adds the amounts), {i, current, pttl} for the first counter i that would pass
# its limit, or {-1, i} when counter i is missing and has no seed.
_ARGS_PER_COUNTER = 6
_LUA = """
local values = {}
for i = 1, #KEYS do
  local b = (i - 1) * 6
  local amount, limit, seed = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 4])
  local plus = tonumber(ARGV[b + 5])
  local current = redis.call('GET', KEYS[i])
  if current then
    current = tonumber(current)
  else
    if seed < 0 then return {-1, i} end
    current = seed
  end
  local total = current
  if plus > 0 then total = total + values[plus] end
  if total + amount > limit then return {i, total, redis.call('PTTL', KEYS[i])} end
  values[i] = current
end
local out = {0}
for i = 1, #KEYS do
  local b = (i - 1) * 6
  local amount, ttl, refresh = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 6])
  local value
  if redis.call('EXISTS', KEYS[i]) == 1 then
    value = redis.call('INCRBY', KEYS[i], amount)
    if refresh == 1 then redis.call('PEXPIRE', KEYS[i], ttl) end
  else
    value = values[i] + amount
    redis.call('SET', KEYS[i], value, 'PX', ttl)
  end
  out[#out + 1] = value
  out[#out + 1] = redis.call('PTTL', KEYS[i])
end
return out
"""
# KEYS: counters; ARGV: one delta each. Adds the delta to counters that exist (a missing one is
# re-read or re-seeded later: creating it here would make a counter without a TTL), never below 0.
_ADJUST_LUA = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local value = redis.call('INCRBY', KEYS[i], tonumber(ARGV[i]))
    if value < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Counter:
    name: str  # storage key
    kind: str  # "requests" | "tokens" | "spend"
    scope: str  # "key" | "org"
    amount: int
    limit: int
    ttl_ms: int
    seed: int = 0  # starting value when the counter does not exist; NEEDS_SEED for spend
    plus: str = ""  # the name of an earlier counter of the same check whose value counts against this limit too
    refresh: bool = False  # every add pushes the TTL back (in-flight spend), instead of a fixed window


@dataclass(frozen=True, slots=True)
class Refusal:
    counter: Counter
    current: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Admitted:
    values: tuple[tuple[Counter, int, int], ...]  # (counter, value after this request, ms to reset)


@dataclass(frozen=True, slots=True)
class NeedsSeed:
    counter: Counter


# -- in-process limiter -------------------------------------------------------------------------
class LocalLimiter:
    """The same all-or-nothing check over a dict; a lock because several event loops may share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[int, float]] = {}  # name -> (value, expires at, monotonic)

    def check(self, counters: list[Counter]) -> Admitted | Refusal | NeedsSeed:
        now = time.monotonic()
        with self._lock:
            if len(self._values) > 50_000:
                self._values = {k: v for k, v in self._values.items() if v[1] > now}
            current: list[tuple[int, float | None]] = []
            seen: dict[str, int] = {}
            for counter in counters:
                entry = self._values.get(counter.name)
                if entry is not None and entry[1] > now:
                    value, expires = entry
                else:
                    if counter.seed == NEEDS_SEED:
                        return NeedsSeed(counter)
                    value, expires = counter.seed, None
                total = value + seen.get(counter.plus, 0)
                if total + counter.amount > counter.limit:
                    reset = int((expires - now) * 1000) if expires is not None else counter.ttl_ms
                    return Refusal(counter, total, reset)
                current.append((value, expires))
                seen[counter.name] = value
            out = []
            for counter, (value, expires) in zip(counters, current, strict=True):
                if expires is None or counter.refresh:
                    expires = now + counter.ttl_ms / 1000
                self._values[counter.name] = (value + counter.amount, expires)
                out.append((counter, value + counter.amount, int((expires - now) * 1000)))
            return Admitted(tuple(out))

    def adjust(self, deltas: list[tuple[Counter, int]]) -> None:
        """Add each delta to its counter if it exists, never below 0 (as _ADJUST_LUA)."""
        now = time.monotonic()
        with self._lock:
            for counter, delta in deltas:
                entry = self._values.get(counter.name)
                if entry is not None and entry[1] > now:
                    self._values[counter.name] = (max(entry[0] + delta, 0), entry[1])

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


local_limiter = LocalLimiter()
_redis = shared_state.RedisBackoff("rate limiter", "limiting per process")
_scripts: dict[tuple[int, str], object] = {}


def _script(client, source: str):
    script = _scripts.get((id(client), source))
    if script is None:
        script = _scripts[(id(client), source)] = client.register_script(source)
    return script


async def _redis_check(counters: list[Counter]) -> Admitted | Refusal | NeedsSeed:
    client = shared_state.async_client()
    script = _script(client, _LUA)
    names = [c.name for c in counters]
    args: list[int] = []
    for c in counters:
        plus = names.index(c.plus) + 1 if c.plus in names else 0
        args += [c.amount, c.limit, max(c.ttl_ms, 1), c.seed, plus, int(c.refresh)]
    result = [int(x) for x in await script(keys=[c.name for c in counters], args=args)]
    if result[0] == 0:
        values = tuple(
            (c, result[1 + 2 * i], result[2 + 2 * i] if result[2 + 2 * i] > 0 else c.ttl_ms)
            for i, c in enumerate(counters)
        )
        return Admitted(values)
    if result[0] == -1:
        return NeedsSeed(counters[result[1] - 1])
    counter = counters[result[0] - 1]
    return Refusal(counter, result[1], result[2] if result[2] > 0 else counter.ttl_ms)


async def _redis_adjust(deltas: list[tuple[Counter, int]]) -> None:
    client = shared_state.async_client()
    await _script(client, _ADJUST_LUA)(keys=[c.name for c, _ in deltas], args=[d for _, d in deltas])


def _use_redis() -> bool:
    return _redis.usable()


async def check_counters(counters: list[Counter]) -> Admitted | Refusal | NeedsSeed:
    """One atomic check-and-add over all counters, in Redis or (embedded / Redis down) in process."""
    result, _ = await _check_counters(counters)
    return result


async def _check_counters(counters: list[Counter]) -> tuple[Admitted | Refusal | NeedsSeed, bool]:
    """The check, and whether Redis made it (later adjustments must go to the same place)."""
    if _use_redis():
        try:
            return await _redis_check(counters), True
        except Exception as exc:  # connection refused, timeout, ...: see the module docstring
            _redis.failed(exc)
    return local_limiter.check(counters), False


@dataclass(frozen=True, slots=True)
class SpendTicket:
    """The spend counters one admitted request touched, and where they live (Redis or this process)."""

    counters: tuple[Counter, ...]
    in_redis: bool

    def deltas(self, cost_nanos: int) -> list[tuple[Counter, int]]:
        """Settlement: each in-flight counter gives the hold back, its settled counter takes the cost."""
        return [(c, -c.amount) if c.plus else (c, cost_nanos) for c in self.counters]


async def spend_settle(ticket: "SpendTicket | None", cost_nanos: int) -> None:
    """Move a request's hold out of its in-flight spend and its cost into the settled spend.

    A refused request (no balance) settles with cost 0. Never raises: a failure leaves the counters
    too high until they are re-read or expire (the safe side).
    """
    if ticket is None or not ticket.counters:
        return
    deltas = ticket.deltas(cost_nanos)
    if ticket.in_redis:
        try:
            await _redis_adjust(deltas)
        except Exception as exc:
            logger.warning("rate limiter: could not settle spend counters in Redis: %s", exc)
        return
    local_limiter.adjust(deltas)


# -- what to count for one request ----------------------------------------------------------------
def counters_for(key: KeyContext, *, tokens: int, hold_nanos: int, now: float | None = None) -> list[Counter]:
    """The counters this request touches: only the limits that are set on its key or organisation."""
    now = time.time() if now is None else now
    minute = int(now // 60)
    window_ttl_ms = int((60 - now % 60) * 1000) + 1000  # to the window's end, plus slack for clock skew
    month = datetime.fromtimestamp(now, UTC).strftime("%Y%m")
    spend_ttl_ms = int(settings.RUAPI_SPEND_CACHE_TTL * 1000)
    inflight_ttl_ms = int(settings.RUAPI_HOLD_TTL * 1000)
    counters = []
    for scope, ident, rpm, tpm, cap in (
        ("key", key.key_id, key.key_rpm, key.key_tpm, key.key_spend_cap_nanos),
        ("org", key.org_id, key.org_rpm, key.org_tpm, key.org_spend_cap_nanos),
    ):
        base = f"ruapi:rl:{scope}:{ident}"
        if rpm is not None:
            counters.append(Counter(f"{base}:rpm:{minute}", "requests", scope, 1, rpm, window_ttl_ms))
        if tpm is not None:
            counters.append(Counter(f"{base}:tpm:{minute}", "tokens", scope, max(tokens, 0), tpm, window_ttl_ms))
        if cap is not None:
            settled = Counter(f"{base}:spend:{month}", "spend", scope, 0, cap, spend_ttl_ms, NEEDS_SEED)
            inflight = Counter(f"{base}:inflight:{month}", "spend", scope, hold_nanos, cap, inflight_ttl_ms,
                               plus=settled.name, refresh=True)  # fmt: skip
            counters += [settled, inflight]
    return counters


def ratelimit_headers(admitted: Admitted | Refusal, counters: list[Counter]) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the tightest applicable limit."""
    headers: dict[str, str] = {}
    if isinstance(admitted, Refusal):
        states = [(admitted.counter, admitted.counter.limit, admitted.reset_ms)]
        # Other windows of the same kind were not touched; report the refused one.
    else:
        states = list(admitted.values)
    for kind in ("requests", "tokens"):
        best = None
        for counter, value, reset_ms in states:
            if counter.kind != kind:
                continue
            remaining = max(counter.limit - value, 0)
            if best is None or remaining < best[1]:
                best = (counter.limit, remaining, reset_ms)
        if best is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(best[0])
            headers[f"x-ratelimit-remaining-{kind}"] = str(best[1])
            headers[f"x-ratelimit-reset-{kind}"] = f"{math.ceil(best[2] / 1000)}s"
    return headers


# -- admission ----------------------------------------------------------------------------------
def client_ip_allowed(key: KeyContext, remote_addr: str | None) -> bool:
    """Whether the peer address is in the key's allowlist (an empty list allows any address).

    The address is the ASGI peer: the TCP peer, or the X-Forwarded-For client when the peer is one
    of RUAPI_TRUSTED_PROXIES (ruapi/server.py; never otherwise, whatever uvicorn's flags say).
    """
    if not key.ip_allowlist:
        return True
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in key.ip_allowlist)


def estimated_request_tokens(request) -> int:
    """Input tokens of a JSON request as the gateway estimates them (≈ 4 UTF-8 bytes per token)."""
    if not (request.content_type or "").endswith("json"):
        return 0
    return math.ceil(len(request.body) / BYTES_PER_TOKEN)


class LimitError(GatewayError):
    """A refusal by a limit, carrying the x-ratelimit-* headers the response must show."""

    def __init__(self, kind: ErrorKind, message: str, *, headers: dict[str, str], **kwargs) -> None:
        super().__init__(kind, message, **kwargs)
        self.headers = headers


_SCOPE_NAMES = {"key": "API key", "org": "organisation"}
_KIND_NAMES = {"requests": "requests per minute", "tokens": "tokens per minute"}


async def admit(key: KeyContext, *, tokens: int, hold_nanos: int) -> tuple[SpendTicket | None, dict[str, str]]:
    """Count this request against its key's and organisation's limits, or raise 429 / 402.

    Returns its spend ticket (None without spend caps), which `spend_settle` must get once the
    request is settled or refused by the balance, and the x-ratelimit-* headers for the response.
    """
    counters = counters_for(key, tokens=tokens, hold_nanos=hold_nanos)
    if not counters:
        return None, {}
    for _ in range(len(counters) + 1):
        result, in_redis = await _check_counters(counters)
        if not isinstance(result, NeedsSeed):
            break
        counters = [await _seeded(c, key) if c.seed == NEEDS_SEED else c for c in counters]
    else:  # pragma: no cover - every spend counter was seeded above
        raise GatewayError(ErrorKind.API_ERROR, "Rate limiter did not settle.")
    headers = ratelimit_headers(result, counters)
    if isinstance(result, Refusal):
        counter = result.counter
        if counter.kind == "spend":
            raise LimitError(
                ErrorKind.BILLING,
                f"The {_SCOPE_NAMES[counter.scope]}'s monthly spend cap "
                f"(${format_usd(counter.limit)}) is reached; raise it in the dashboard or wait for next month.",
                code="spend_cap_reached",
                should_retry=False,
                headers=headers,
            )
        retry_after = max(1, math.ceil(result.reset_ms / 1000))
        if counter.kind == "tokens" and counter.amount > counter.limit:
            message = (f"This request (~{counter.amount} tokens) is larger than the {_SCOPE_NAMES[counter.scope]}'s "
                       f"limit of {counter.limit} tokens per minute.")  # fmt: skip
        else:
            message = (f"Rate limit reached: {counter.limit} {_KIND_NAMES[counter.kind]} for this "
                       f"{_SCOPE_NAMES[counter.scope]}. Try again in {retry_after}s.")  # fmt: skip
        raise LimitError(ErrorKind.RATE_LIMIT, message, retry_after=retry_after, headers=headers)
    spend = tuple(c for c in counters if c.kind == "spend")
    return (SpendTicket(spend, in_redis) if spend else None), headers


async def _seeded(counter: Counter, key: KeyContext) -> Counter:
    api_key_id = key.key_id if counter.scope == "key" else None
    spent = await run_db(spend_month_nanos, org_id=key.org_id, api_key_id=api_key_id)
    return replace(counter, seed=spent)


def reset() -> None:
    """Forget in-process counters and the Redis back-off (tests)."""
    local_limiter.clear()
    _redis.reset()
    _scripts.clear()
