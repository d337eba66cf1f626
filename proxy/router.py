"""Which route serves a request: priority, weight, circuit breaker and per-route caps.

The state lives in process memory (no round trip on the hot path) and, when REDIS_URL is set, is
shared by every gateway process and replica (`SharedRouter`, issue 17):
- route caps (`max_concurrency`, `rpm_limit`) are global: one Lua script per attempt on a capped
  route admits it against counters in Redis (a lease per in-flight attempt, a sliding one-minute
  log of starts); routes without caps never touch Redis;
- the circuit breaker is global: a failure is counted in Redis too, and the route opened there is
  seen by every process within RUAPI_ROUTE_STATE_CHECK_INTERVAL (each process reads the set of
  open routes at most that often, in the background, never on a request's path);
- Redis unreachable: the same logic per process (caps per process, breaker per process) until
  Redis answers again (retried after 5 s), as the rate limits do (proxy/limits.py).

Circuit breaker, per route:
- closed: tried in its normal place; RUAPI_ROUTE_FAILURE_THRESHOLD consecutive failures
  (connect error, timeout, 429 or 5xx before any byte reached the client) open it;
- open: for RUAPI_ROUTE_COOLDOWN_SECONDS it is tried only after every other route (a model
  whose only route is open still gets an attempt rather than a certain error);
- half-open: after the cool-down, one request probes it in its normal place; success closes
  the circuit, failure opens it for another cool-down.
Providers whose last admin "test connection" failed are likewise tried after the healthy ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from accounts import shared_state
from catalog.snapshot import ModelSpec, RouteSpec
from ruapi import observability

logger = logging.getLogger(__name__)

RPM_WINDOW_SECONDS = 60.0


@dataclass
class RouteState:
    failures: int = 0  # consecutive
    open_until: float = 0.0  # monotonic seconds; 0: closed
    probing: bool = False  # a half-open probe is in flight
    in_flight: int = 0
    starts: deque[float] = field(default_factory=deque)  # request starts within the RPM window


@dataclass
class Slot:
    """A route's admission for one attempt; `release()` exactly once when the attempt is over."""

    router: Router
    state: RouteState
    probe: bool = False
    released: bool = False
    lease: tuple[str, str] | None = None  # (Redis key, member) of a shared concurrency lease

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.state.in_flight -= 1
        if self.probe:
            self.state.probing = False  # an inconclusive probe (e.g. a client error) lets the next one try
        if self.lease is not None:
            self.router.lease_return(self.lease)


def route_key(route: RouteSpec) -> tuple[int, str]:
    """Routes are identified by provider and upstream model, so a catalog rebuild keeps their state."""
    return route.provider.id, route.upstream_model


class Router:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng
        self.states: dict[tuple[int, str], RouteState] = {}

    def state(self, route: RouteSpec) -> RouteState:
        return self.states.setdefault(route_key(route), RouteState())

    def is_cooling(self, route: RouteSpec) -> bool:
        """Open, or half-open with its probe already in flight: not to be tried in its normal place."""
        state = self.states.get(route_key(route))
        if state is None or not state.open_until:
            return False
        return self.clock() < state.open_until or state.probing

    def plan(self, spec: ModelSpec) -> list[RouteSpec]:
        """The model's routes in try order: ready ones (priority, then weighted), unhealthy, cooling."""
        ready, unhealthy, cooling = [], [], []
        for route in spec.ordered_routes(self.rng):
            if self.is_cooling(route):
                cooling.append(route)
            elif not route.provider.is_healthy:
                unhealthy.append(route)
            else:
                ready.append(route)
        return ready + unhealthy + cooling

    async def claim(self, route: RouteSpec) -> Slot | None:
        """`acquire` for the route loop (the shared router may ask Redis)."""
        return self.acquire(route)

    def lease_return(self, lease: tuple[str, str]) -> None:
        """Give a shared concurrency lease back (only the shared router hands them out)."""

    def acquire(self, route: RouteSpec) -> Slot | None:
        """Admit one attempt on this route, or None when its concurrency or RPM cap is reached."""
        state = self.state(route)
        now = self.clock()
        while state.starts and state.starts[0] <= now - RPM_WINDOW_SECONDS:
            state.starts.popleft()
        if (route.max_concurrency is not None and state.in_flight >= route.max_concurrency) or (
            route.rpm_limit is not None and len(state.starts) >= route.rpm_limit
        ):
            observability.route_capped(route)
            return None
        state.in_flight += 1
        state.starts.append(now)
        probe = bool(state.open_until) and now >= state.open_until and not state.probing
        if probe:
            state.probing = True
        return Slot(self, state, probe=probe)

    def succeeded(self, route: RouteSpec) -> None:
        state = self.state(route)
        was_open = bool(state.open_until)
        state.failures, state.open_until, state.probing = 0, 0.0, False
        if was_open:
            observability.breaker_state(route, is_open=False)

    def failed(self, route: RouteSpec) -> None:
        state = self.state(route)
        state.failures += 1
        state.probing = False
        observability.upstream_failure(route)
        if state.failures >= settings.RUAPI_ROUTE_FAILURE_THRESHOLD:
            state.open_until = self.clock() + settings.RUAPI_ROUTE_COOLDOWN_SECONDS
            observability.breaker_state(route, is_open=True)

    def reset(self) -> None:
        """Forget all state (tests)."""
        self.states.clear()


# -- shared across processes (Redis) ----------------------------------------------------------------
OPEN_ROUTES_KEY = "ruapi:routes:open"  # hash: route field -> open until (Redis clock, ms)

# KEYS: concurrency leases (zset member -> lease end ms), starts (zset member -> start ms).
# ARGV: concurrency cap (-1: none), RPM cap (-1: none), lease ms, member. 0 admitted, 1/2 at cap.
_CLAIM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local conc, rpm, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if conc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= conc then return 1 end
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[2]) >= rpm then return 2 end
end
if conc >= 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], lease)
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], 60000)
end
return 0
"""

# KEYS: consecutive-failure counter, OPEN_ROUTES_KEY. ARGV: threshold, cool-down ms, route field.
_FAILED_LUA = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if n >= tonumber(ARGV[1]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[2], ARGV[3], now + tonumber(ARGV[2]))
  redis.call('DEL', KEYS[1])
end
return n
"""

# KEYS: OPEN_ROUTES_KEY. Returns {now ms, field1, until1, ...} and prunes the expired fields.
_OPEN_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {now}
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"""


def route_field(route: RouteSpec) -> str:
    return f"{route.provider.id}:{route.upstream_model}"


class SharedRouter(Router):
    """The router with caps and breaker shared through Redis (module docstring); per process without it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.redis = shared_state.RedisBackoff("router", "caps and breaker per process")
        self.shared_open: dict[str, float] = {}  # route field -> open until (this process's monotonic clock)
        self.refresher: asyncio.Task | None = None
        self.background: set[asyncio.Task] = set()
        self._scripts: dict[int, tuple] = {}

    # -- Redis plumbing --------------------------------------------------------------------------
    def _redis_usable(self) -> bool:
        return self.redis.usable()

    def _redis_failed(self, exc: Exception) -> None:
        self.redis.failed(exc)

    def _client_and_scripts(self):
        client = shared_state.async_client()
        scripts = self._scripts.get(id(client))
        if scripts is None or scripts[0] is not client:
            scripts = self._scripts[id(client)] = (
                client,
                client.register_script(_CLAIM_LUA),
                client.register_script(_FAILED_LUA),
                client.register_script(_OPEN_LUA),
            )
        return scripts

    def _spawn(self, coroutine) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coroutine)
        except RuntimeError:  # no loop (sync tests): nothing shared to update
            coroutine.close()
            return
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- breaker ---------------------------------------------------------------------------------
    def is_cooling(self, route: RouteSpec) -> bool:
        if super().is_cooling(route):
            return True
        until = self.shared_open.get(route_field(route))
        return until is not None and self.clock() < until

    def watch(self) -> None:
        """Keep this process's copy of the shared open-circuit set fresh: one background task (started on
        the server's loop at start-up, ruapi/asgi.py) reads it every RUAPI_ROUTE_STATE_CHECK_INTERVAL. The
        set is per process, so one reader serves every loop; requests never start one themselves (a
        task left on a short-lived loop, e.g. a test's, would outlive it)."""
        if not settings.REDIS_URL:
            return
        if self.refresher is not None and not self.refresher.done():
            return
        try:
            self.refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        except RuntimeError:
            self.refresher = None

    async def _refresh_forever(self) -> None:
        while True:
            if self._redis_usable():
                await self._refresh()
            await asyncio.sleep(settings.RUAPI_ROUTE_STATE_CHECK_INTERVAL)

    async def _refresh(self) -> None:
        try:
            _client, _claim, _failed, open_script = self._client_and_scripts()
            result = await open_script(keys=[OPEN_ROUTES_KEY])
        except Exception as exc:
            self._redis_failed(exc)
            return
        redis_now = int(result[0])
        local_now = self.clock()
        fields = result[1:]
        self.shared_open = {
            (fields[i].decode() if isinstance(fields[i], bytes) else str(fields[i])): local_now
            + (int(fields[i + 1]) - redis_now) / 1000
            for i in range(0, len(fields), 2)
        }

    def failed(self, route: RouteSpec) -> None:
        super().failed(route)
        if self._redis_usable():
            self._spawn(self._shared_failed(route))

    async def _shared_failed(self, route: RouteSpec) -> None:
        field_name = route_field(route)
        cooldown_ms = int(settings.RUAPI_ROUTE_COOLDOWN_SECONDS * 1000)
        try:
            _client, _claim, failed_script, _open = self._client_and_scripts()
            count = int(
                await failed_script(
                    keys=[f"ruapi:route:{field_name}:failures", OPEN_ROUTES_KEY],
                    args=[settings.RUAPI_ROUTE_FAILURE_THRESHOLD, cooldown_ms, field_name],
                )
            )
        except Exception as exc:
            self._redis_failed(exc)
            return
        if count >= settings.RUAPI_ROUTE_FAILURE_THRESHOLD:
            self.shared_open[field_name] = self.clock() + cooldown_ms / 1000

    def succeeded(self, route: RouteSpec) -> None:
        state = self.states.get(route_key(route))
        field_name = route_field(route)
        shared = field_name in self.shared_open or bool(state and (state.failures or state.open_until))
        super().succeeded(route)
        if shared:
            self.shared_open.pop(field_name, None)
            if self._redis_usable():
                self._spawn(self._shared_succeeded(field_name))

    async def _shared_succeeded(self, field_name: str) -> None:
        try:
            client = self._client_and_scripts()[0]
            pipe = client.pipeline(transaction=False)
            pipe.delete(f"ruapi:route:{field_name}:failures")
            pipe.hdel(OPEN_ROUTES_KEY, field_name)
            await pipe.execute()
        except Exception as exc:
            self._redis_failed(exc)

    # -- caps ------------------------------------------------------------------------------------
    async def claim(self, route: RouteSpec) -> Slot | None:
        if (route.max_concurrency is None and route.rpm_limit is None) or not self._redis_usable():
            return self.acquire(route)
        field_name = route_field(route)
        member = uuid.uuid4().hex
        lease_ms = int(settings.RUAPI_ROUTE_SLOT_LEASE_SECONDS * 1000)
        try:
            _client, claim_script, _failed, _open = self._client_and_scripts()
            verdict = int(
                await claim_script(
                    keys=[f"ruapi:route:{field_name}:leases", f"ruapi:route:{field_name}:starts"],
                    args=[
                        -1 if route.max_concurrency is None else route.max_concurrency,
                        -1 if route.rpm_limit is None else route.rpm_limit,
                        lease_ms,
                        member,
                    ],
                )
            )
        except Exception as exc:
            self._redis_failed(exc)
            return self.acquire(route)
        if verdict:
            observability.route_capped(route)
            return None
        # Admitted globally: keep the local bookkeeping (in flight, probe) without its caps.
        state = self.state(route)
        state.in_flight += 1
        now = self.clock()
        probe = bool(state.open_until) and now >= state.open_until and not state.probing
        if probe:
            state.probing = True
        lease = (f"ruapi:route:{field_name}:leases", member) if route.max_concurrency is not None else None
        return Slot(self, state, probe=probe, lease=lease)

    def lease_return(self, lease: tuple[str, str]) -> None:
        self._spawn(self._lease_return(lease))

    async def _lease_return(self, lease: tuple[str, str]) -> None:
        try:
            await self._client_and_scripts()[0].zrem(*lease)
        except Exception as exc:  # the lease expires by itself (RUAPI_ROUTE_SLOT_LEASE_SECONDS)
            logger.warning("router: could not return a route lease: %s", exc)

    def reset(self) -> None:
        super().reset()
        self.shared_open.clear()
        self.redis.reset()


# This process's router: the breaker and caps must see every request of the process (and, with
# Redis, every other process's too).
router = SharedRouter()
