"""Rate limits and monthly spend caps of keys and organisations, checked at admission (hold_open).

Windows: fixed one-minute windows (UTC minute) for requests/minute and tokens/minute, one counter
per (scope, id, kind, minute). Fixed windows are one atomic INCRBY each, cheap and exact to test;
the known cost is a burst of up to 2x the limit across a minute boundary. TPM counts the request's
*estimated input tokens* at admission (what is known before the upstream answers).

Spend caps: the figure is "spent this month" read from the usage events (accounts.spend) and
kept in a counter that lives RUAPI_SPEND_CACHE_TTL seconds; every admitted request adds its hold
(maximum cost) to it. A request is refused (402) when figure + its hold would pass the cap. So
within one TTL window admissions are exact even under concurrency (the holds are counted
atomically); when the counter expires it is re-seeded from the settled spend. Bound: requests
still in flight when the counter is re-seeded are not counted in the new figure, so a cap can be
exceeded by at most the cost of requests in flight across a refresh.

All checks of one request run in ONE atomic step — a Lua script in Redis (REDIS_URL set, shared by
every process) or a locked dict in process (embedded default) — all-or-nothing: a refused request
consumes nothing.

Redis down: fail to local, not open and not closed. The check falls back to the in-process
limiter (limits then hold per process instead of globally) and Redis is not retried for
REDIS_RETRY_AFTER_S. Failing closed would turn a Redis outage into a full API outage; failing
fully open would drop spend caps, and money is already protected by balance holds in the DB.
"""

import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass
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

REDIS_RETRY_AFTER_S = 5.0
NEEDS_SEED = -1  # a spend counter that must be seeded with the spend figure from the database

# KEYS: counters. ARGV: per counter (amount, limit, ttl_ms, seed). Returns {0, value1, pttl1, ...}
# when every counter stays within its limit (and then adds the amounts), {i, current, pttl} for the
# first counter i that would pass its limit, or {-1, i} when counter i is missing and has no seed.
_LUA = """
local values = {}
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local amount, limit, seed = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 4])
  local current = redis.call('GET', KEYS[i])
  if current then
    current = tonumber(current)
  else
    if seed < 0 then return {-1, i} end
    current = seed
  end
  if current + amount > limit then return {i, current, redis.call('PTTL', KEYS[i])} end
  values[i] = current
end
local out = {0}
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local amount, ttl = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 3])
  local value
  if redis.call('EXISTS', KEYS[i]) == 1 then
    value = redis.call('INCRBY', KEYS[i], amount)
  else
    value = values[i] + amount
    redis.call('SET', KEYS[i], value, 'PX', ttl)
  end
  out[#out + 1] = value
  out[#out + 1] = redis.call('PTTL', KEYS[i])
end
return out
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
            for counter in counters:
                entry = self._values.get(counter.name)
                if entry is not None and entry[1] > now:
                    value, expires = entry
                else:
                    if counter.seed == NEEDS_SEED:
                        return NeedsSeed(counter)
                    value, expires = counter.seed, None
                if value + counter.amount > counter.limit:
                    reset = int((expires - now) * 1000) if expires is not None else counter.ttl_ms
                    return Refusal(counter, value, reset)
                current.append((value, expires))
            out = []
            for counter, (value, expires) in zip(counters, current, strict=True):
                expires = expires if expires is not None else now + counter.ttl_ms / 1000
                self._values[counter.name] = (value + counter.amount, expires)
                out.append((counter, value + counter.amount, int((expires - now) * 1000)))
            return Admitted(tuple(out))

    def release(self, counters: list[Counter]) -> None:
        with self._lock:
            for counter in counters:
                entry = self._values.get(counter.name)
                if entry is not None:
                    self._values[counter.name] = (entry[0] - counter.amount, entry[1])

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


local_limiter = LocalLimiter()
_redis_state = {"down_until": 0.0}
_scripts: dict[int, object] = {}


async def _redis_check(counters: list[Counter]) -> Admitted | Refusal | NeedsSeed:
    client = shared_state.async_client()
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_LUA)
    args: list[int] = []
    for c in counters:
        args += [c.amount, c.limit, max(c.ttl_ms, 1), c.seed]
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


async def _redis_release(counters: list[Counter]) -> None:
    client = shared_state.async_client()
    pipe = client.pipeline(transaction=False)
    for counter in counters:
        pipe.decrby(counter.name, counter.amount)
    await pipe.execute()


def _use_redis() -> bool:
    return shared_state.redis_enabled() and time.monotonic() >= _redis_state["down_until"]


async def check_counters(counters: list[Counter]) -> Admitted | Refusal | NeedsSeed:
    """One atomic check-and-add over all counters, in Redis or (embedded / Redis down) in process."""
    if _use_redis():
        try:
            return await _redis_check(counters)
        except Exception as exc:  # connection refused, timeout, ...: see the module docstring
            _redis_state["down_until"] = time.monotonic() + REDIS_RETRY_AFTER_S
            logger.warning("rate limiter: Redis unavailable, limiting per process for %ss: %s",
                           REDIS_RETRY_AFTER_S, exc)  # fmt: skip
    return local_limiter.check(counters)


async def release_counters(counters: list[Counter]) -> None:
    """Give back what an admitted request reserved (it was refused later, e.g. by the balance)."""
    if not counters:
        return
    if _use_redis():
        try:
            await _redis_release(counters)
            return
        except Exception as exc:
            logger.warning("rate limiter: could not release counters in Redis: %s", exc)
            return
    local_limiter.release(counters)


# -- what to count for one request ----------------------------------------------------------------
def counters_for(key: KeyContext, *, tokens: int, hold_nanos: int, now: float | None = None) -> list[Counter]:
    """The counters this request touches: only the limits that are set on its key or organisation."""
    now = time.time() if now is None else now
    minute = int(now // 60)
    window_ttl_ms = int((60 - now % 60) * 1000) + 1000  # to the window's end, plus slack for clock skew
    month = datetime.fromtimestamp(now, UTC).strftime("%Y%m")
    spend_ttl_ms = int(settings.RUAPI_SPEND_CACHE_TTL * 1000)
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
            counters.append(Counter(f"{base}:spend:{month}", "spend", scope, hold_nanos, cap, spend_ttl_ms, NEEDS_SEED))
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


async def admit(key: KeyContext, *, tokens: int, hold_nanos: int) -> tuple[list[Counter], dict[str, str]]:
    """Count this request against its key's and organisation's limits, or raise 429 / 402.

    Returns the counters it consumed (to release the spend part if the balance hold fails) and
    the x-ratelimit-* headers for the response.
    """
    counters = counters_for(key, tokens=tokens, hold_nanos=hold_nanos)
    if not counters:
        return [], {}
    for _ in range(len(counters) + 1):
        result = await check_counters(counters)
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
    return counters, headers


async def _seeded(counter: Counter, key: KeyContext) -> Counter:
    api_key_id = key.key_id if counter.scope == "key" else None
    spent = await run_db(spend_month_nanos, org_id=key.org_id, api_key_id=api_key_id)
    return Counter(counter.name, counter.kind, counter.scope, counter.amount, counter.limit, counter.ttl_ms, spent)


def reset() -> None:
    """Forget in-process counters and the Redis back-off (tests)."""
    local_limiter.clear()
    _redis_state["down_until"] = 0.0
    _scripts.clear()
