"""The limiter's atomic check, the same cases in process and in Redis (Lua)."""

import asyncio

import pytest
from django.conf import settings as django_settings

from accounts import shared_state
from accounts.keycache import KeyContext
from proxy import limits
from proxy.limits import NEEDS_SEED, Admitted, Counter, NeedsSeed, Refusal

pytestmark = [pytest.mark.embedded]


def _ctx(**kwargs) -> KeyContext:
    return KeyContext(key_id=7, key_prefix="sk-ru-x", org_id=3, org_slug="o", expires_at=None, has_limits=True, **kwargs)


@pytest.fixture(params=["local", "redis"])
def backend(request, settings):
    if request.param == "redis":
        if not django_settings.REDIS_URL:
            pytest.skip("needs REDIS_URL")
    else:
        settings.REDIS_URL = ""
    limits.reset()
    return request.param


def check(counters):
    return asyncio.run(limits.check_counters(counters))


def test_all_or_nothing(backend):
    # given: requests within limit, tokens over
    rpm = Counter(f"ruapi:rl:test:{backend}:rpm", "requests", "key", 1, 5, 60_000)
    tpm = Counter(f"ruapi:rl:test:{backend}:tpm", "tokens", "key", 100, 150, 60_000)
    # when
    first, second = check([rpm, tpm]), check([rpm, tpm])
    # then: the second is refused by tokens and consumed no request
    assert isinstance(first, Admitted)
    assert [(c.kind, v) for c, v, _ in first.values] == [("requests", 1), ("tokens", 100)]
    assert isinstance(second, Refusal) and second.counter.kind == "tokens" and second.current == 100
    third = check([rpm])
    assert isinstance(third, Admitted) and third.values[0][1] == 2
    if backend == "redis":  # it was Redis that counted, not the in-process fallback
        assert shared_state.sync_client().get(rpm.name) == b"2"
        assert limits.local_limiter._values == {}


def test_spend_counter_needs_a_seed_then_counts_from_it(backend):
    spend = Counter(f"ruapi:rl:test:{backend}:spend", "spend", "key", 40, 100, 60_000, NEEDS_SEED)
    assert isinstance(check([spend]), NeedsSeed)
    seeded = Counter(spend.name, "spend", "key", 40, 100, 60_000, 50)
    admitted = check([seeded])
    assert isinstance(admitted, Admitted) and admitted.values[0][1] == 90
    # later requests find the counter and need no seed
    refused = check([spend])
    assert isinstance(refused, Refusal) and refused.current == 90


def test_counters_for_only_touches_set_limits():
    counters = limits.counters_for(_ctx(key_rpm=3, org_spend_cap_nanos=10), tokens=50, hold_nanos=7, now=120.5)
    assert [(c.name, c.kind, c.amount, c.limit, c.seed, c.plus, c.refresh) for c in counters] == [
        ("ruapi:rl:key:7:rpm:2", "requests", 1, 3, 0, "", False),
        # the settled spend (re-read from the database) and the holds in flight, checked together
        ("ruapi:rl:org:3:spend:197001", "spend", 0, 10, NEEDS_SEED, "", False),
        ("ruapi:rl:org:3:inflight:197001", "spend", 7, 10, 0, "ruapi:rl:org:3:spend:197001", True),
    ]


def _spend_counters(backend: str, hold: int, *, seed: int) -> list[Counter]:
    settled = Counter(f"ruapi:rl:test:{backend}:spend", "spend", "key", 0, 100, 60_000, seed)
    inflight = Counter(f"ruapi:rl:test:{backend}:inflight", "spend", "key", hold, 100, 60_000, 0,
                       plus=settled.name, refresh=True)  # fmt: skip
    return [settled, inflight]


def test_spend_counts_settled_plus_in_flight_and_settlement_moves_one_to_the_other(backend):
    # given: 50 spent, and a request holding 30 in flight
    first = check(_spend_counters(backend, 30, seed=50))
    assert isinstance(first, Admitted) and [v for _, v, _ in first.values] == [50, 30]
    # when: another hold of 30 would pass the cap (50 + 30 + 30 > 100)
    refused = check(_spend_counters(backend, 30, seed=NEEDS_SEED))
    # then: refused, nothing added
    assert isinstance(refused, Refusal) and refused.current == 80 and refused.counter.name.endswith("inflight")
    # when: the first request settles at a cost of 10: its hold leaves "in flight", its cost joins "settled"
    ticket = limits.SpendTicket(tuple(_spend_counters(backend, 30, seed=NEEDS_SEED)), in_redis=backend == "redis")
    asyncio.run(limits.spend_settle(ticket, 10))
    # then: 60 spent, nothing in flight: a hold of 40 fits, one of 41 does not
    assert isinstance(check(_spend_counters(backend, 41, seed=NEEDS_SEED)), Refusal)
    admitted = check(_spend_counters(backend, 40, seed=NEEDS_SEED))
    assert isinstance(admitted, Admitted) and [v for _, v, _ in admitted.values] == [60, 40]


def test_a_re_read_of_the_settled_spend_keeps_the_holds_in_flight(backend):
    # given: a hold of 60 in flight, then the settled-spend counter expires (re-read from the database)
    assert isinstance(check(_spend_counters(backend, 60, seed=0)), Admitted)
    settled = _spend_counters(backend, 0, seed=0)[0]
    if backend == "redis":
        shared_state.sync_client().delete(settled.name)
    else:
        limits.local_limiter._values.pop(settled.name)
    # when: a request arrives and the settled figure is seeded again (the 60 is not settled yet)
    result = check(_spend_counters(backend, 50, seed=0))
    # then: the in-flight 60 still counts, so 50 more would pass the cap
    assert isinstance(result, Refusal) and result.current == 60


def test_spend_settle_never_creates_nor_drives_a_counter_below_zero(backend):
    ticket = limits.SpendTicket(tuple(_spend_counters(backend, 30, seed=0)), in_redis=backend == "redis")
    asyncio.run(limits.spend_settle(ticket, 10))  # nothing was admitted: the counters do not exist
    assert isinstance(check(_spend_counters(backend, 100, seed=0)), Admitted)  # still a clean slate
    asyncio.run(limits.spend_settle(limits.SpendTicket(tuple(_spend_counters(backend, 300, seed=0)),
                                                       in_redis=backend == "redis"), 0))  # fmt: skip
    result = check(_spend_counters(backend, 1, seed=0))
    assert isinstance(result, Admitted) and [v for _, v, _ in result.values] == [0, 1]


def test_redis_down_falls_back_to_in_process_limits(settings):
    # given: a Redis URL nobody listens on
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    shared_state.reset_clients()
    limits.reset()
    counter = Counter("ruapi:rl:test:down", "requests", "key", 1, 1, 60_000)
    try:
        # when / then: the limit still holds (per process)
        assert isinstance(check([counter]), Admitted)
        assert isinstance(check([counter]), Refusal)
    finally:
        shared_state.reset_clients()


@pytest.mark.parametrize(
    ("_case", "allowlist", "addr", "allowed"),
    [
        ("empty allows all", [], "203.0.113.9", True),
        ("exact v4", ["203.0.113.9"], "203.0.113.9", True),
        ("cidr v4", ["10.0.0.0/8"], "10.2.3.4", True),
        ("outside", ["10.0.0.0/8"], "11.0.0.1", False),
        ("v4-mapped v6 peer", ["127.0.0.1"], "::ffff:127.0.0.1", True),
        ("v6 cidr", ["2001:db8::/32"], "2001:db8::1", True),
        ("garbage peer", ["10.0.0.0/8"], "unix-socket", False),
    ],
)
def test_client_ip_allowed(_case, allowlist, addr, allowed):
    from accounts.keycache import parse_networks

    assert limits.client_ip_allowed(_ctx(ip_allowlist=parse_networks(allowlist)), addr) is allowed
