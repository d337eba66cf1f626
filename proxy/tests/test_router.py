"""proxy.router: order, circuit breaker (closed → open → half-open), caps — with a fake clock."""

import random

import pytest

from billing.money import TokenPrices
from catalog.snapshot import ModelSpec, ProviderSpec, RouteSpec, UnitPrices
from proxy.router import Router

pytestmark = [pytest.mark.embedded]


def provider(pid: int, healthy: bool = True) -> ProviderSpec:
    return ProviderSpec(id=pid, name=f"p{pid}", kind="openai", base_url="http://x", is_healthy=healthy)


def spec(*routes: RouteSpec) -> ModelSpec:
    return ModelSpec(id=1, name="m", display_name="m", description="", mode="chat", context_window=None,
                     max_output_tokens=None, thinking="", supports_tools=True, supports_vision=False,
                     structured_output=False, created=0, price_id=None, prices=TokenPrices(),
                     unit_prices=UnitPrices(), routes=routes)  # fmt: skip


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


A = RouteSpec(provider(1), "a", 1, 1)
B = RouteSpec(provider(2), "b", 2, 1)


@pytest.fixture
def breaker(settings):
    settings.RUAPI_ROUTE_FAILURE_THRESHOLD = 2
    settings.RUAPI_ROUTE_COOLDOWN_SECONDS = 30
    clock = Clock()
    return Router(clock=clock, rng=random.Random(1)), clock


def test_priority_then_weight():
    heavy, light = RouteSpec(provider(1), "h", 1, 9), RouteSpec(provider(2), "l", 1, 1)
    router = Router(rng=random.Random(0))
    firsts = [router.plan(spec(heavy, light, B))[0].upstream_model for _ in range(200)]
    assert 150 < firsts.count("h") < 200
    assert all(router.plan(spec(heavy, light, B))[-1] is B for _ in range(20))


def test_unhealthy_provider_goes_last():
    sick = RouteSpec(provider(3, healthy=False), "s", 1, 1)
    assert Router().plan(spec(sick, B)) == [B, sick]


def test_breaker_opens_after_threshold_then_half_open_probe(breaker):
    router, clock = breaker
    router.failed(A)
    assert router.plan(spec(A, B)) == [A, B]  # one failure: still closed
    router.failed(A)
    assert router.plan(spec(A, B)) == [B, A]  # open: tried last
    clock.now += 31
    assert router.plan(spec(A, B)) == [A, B]  # half-open
    probe = router.acquire(A)
    assert probe.probe
    assert router.plan(spec(A, B)) == [B, A]  # while the probe is out, others go first
    router.failed(A)
    probe.release()
    assert router.plan(spec(A, B)) == [B, A]  # the probe failed: open again
    clock.now += 31
    router.acquire(A).release()
    router.succeeded(A)
    assert router.plan(spec(A, B)) == [A, B]
    assert router.state(A).failures == 0


def test_inconclusive_probe_lets_the_next_one_try(breaker):
    router, clock = breaker
    router.failed(A)
    router.failed(A)
    clock.now += 31
    router.acquire(A).release()  # e.g. the client's request was invalid: neither success nor failure
    assert router.acquire(A).probe


def test_concurrency_and_rpm_caps(breaker):
    router, clock = breaker
    capped = RouteSpec(provider(4), "c", 1, 1, max_concurrency=1, rpm_limit=2)
    first = router.acquire(capped)
    assert router.acquire(capped) is None  # one in flight
    first.release()
    first.release()  # idempotent
    router.acquire(capped).release()
    assert router.acquire(capped) is None  # two starts within the minute
    clock.now += 61
    assert router.acquire(capped) is not None
