"""Which route serves a request: priority, weight, circuit breaker and per-route caps.

All of this state is per gateway process, in memory, on purpose: it needs no round trip on the
hot path, and every process learns about a failing upstream from its own traffic within
RUAPI_ROUTE_FAILURE_THRESHOLD requests. The caps (`max_concurrency`, `rpm_limit` on a route)
are therefore per process too: with N web processes a route sees at most N × the cap.

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

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from catalog.snapshot import ModelSpec, RouteSpec

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

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.state.in_flight -= 1
        if self.probe:
            self.state.probing = False  # an inconclusive probe (e.g. a client error) lets the next one try


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

    def acquire(self, route: RouteSpec) -> Slot | None:
        """Admit one attempt on this route, or None when its concurrency or RPM cap is reached."""
        state = self.state(route)
        now = self.clock()
        while state.starts and state.starts[0] <= now - RPM_WINDOW_SECONDS:
            state.starts.popleft()
        if route.max_concurrency is not None and state.in_flight >= route.max_concurrency:
            return None
        if route.rpm_limit is not None and len(state.starts) >= route.rpm_limit:
            return None
        state.in_flight += 1
        state.starts.append(now)
        probe = bool(state.open_until) and now >= state.open_until and not state.probing
        if probe:
            state.probing = True
        return Slot(self, state, probe=probe)

    def succeeded(self, route: RouteSpec) -> None:
        state = self.state(route)
        state.failures, state.open_until, state.probing = 0, 0.0, False

    def failed(self, route: RouteSpec) -> None:
        state = self.state(route)
        state.failures += 1
        state.probing = False
        if state.failures >= settings.RUAPI_ROUTE_FAILURE_THRESHOLD:
            state.open_until = self.clock() + settings.RUAPI_ROUTE_COOLDOWN_SECONDS

    def reset(self) -> None:
        """Forget all state (tests)."""
        self.states.clear()


# This process's router: the breaker and caps must see every request of the process.
router = Router()
