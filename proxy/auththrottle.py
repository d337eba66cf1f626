"""Brute-force protection for gateway keys: failed key authentications are counted per client address.

A client address that presented RUAPI_AUTH_FAIL_LIMIT invalid keys (unknown, revoked, expired or
malformed) within one fixed window of RUAPI_AUTH_FAIL_WINDOW seconds is refused for the rest of
that window with 429 + Retry-After, in the caller's protocol shape, *before* its key is even hashed
or looked up, whatever key it presents, valid ones included: a blocked address is blocked, so a
guessing client cannot tell a hit from a miss while it is blocked. A request without any key is
not counted (it guesses nothing).

Cost: only failures are counted (one atomic check-and-add through proxy/limits.py: the Lua script
in Redis when REDIS_URL is set, shared by every process, else the in-process limiter; Redis down:
in process, like the rate limits). A successful authentication does no extra I/O: the "is this
address blocked" question is a dict lookup in accounts/keycache.py, where each process keeps the
verdicts it reached itself. So with N gateway processes an address gets at most LIMIT + N - 1
lookups per window (each other process refuses it after its own first failure over the limit),
and, as with the rate limits' fixed windows, up to twice that across a window boundary.

The address is the ASGI peer (REMOTE_ADDR): the TCP peer, or the client X-Forwarded-For names when
the peer is one of RUAPI_TRUSTED_PROXIES (ruapi/server.py). Behind a reverse proxy list it there,
or every client shares the proxy's address and one guesser blocks them all; a forwarded header
from any other peer is ignored, so a client cannot rotate its address past the throttle.
IPv6 addresses are counted per /64 (one subscriber's usual allocation); IPv4-mapped ones as IPv4.
"""

import ipaddress
import math
import time

from django.conf import settings

from accounts import keycache
from proxy.limits import Admitted, Counter, Refusal, check_counters
from proxy.translate.errors import ErrorKind, GatewayError

COUNTER_PREFIX = "ruapi:rl:authfail"  # under ruapi:rl: like every other limiter counter


def client_bucket(remote_addr: str | None) -> str:
    """The unit failures are counted in: the IPv4 address, or the IPv6 /64."""
    raw = (remote_addr or "").split("%")[0]
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw or "unknown"
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def enabled() -> bool:
    return settings.RUAPI_AUTH_FAIL_LIMIT > 0


def throttled(retry_after: float) -> GatewayError:
    seconds = max(1, math.ceil(retry_after))
    return GatewayError(
        ErrorKind.RATE_LIMIT,
        f"Too many invalid API keys from your address; try again in {seconds}s.",
        code="too_many_auth_failures",
        retry_after=seconds,
    )


def check_blocked(remote_addr: str | None) -> None:
    """Raise the 429 when this process has blocked the client's address. No I/O: a dict lookup,
    and none at all (not even parsing the address) while no address is blocked."""
    if not keycache.any_client_blocked():
        return
    remaining = keycache.client_block_remaining(client_bucket(remote_addr))
    if remaining > 0:
        raise throttled(remaining)


def failure_counter(bucket: str, *, now: float | None = None) -> Counter:
    now = time.time() if now is None else now
    window = max(settings.RUAPI_AUTH_FAIL_WINDOW, 1.0)
    index = int(now // window)
    ttl_ms = int((window - now % window) * 1000) + 1000  # to the window's end, plus slack for clock skew
    name = f"{COUNTER_PREFIX}:{bucket}:{index}"
    return Counter(name, "requests", "ip", 1, settings.RUAPI_AUTH_FAIL_LIMIT, ttl_ms)


async def record_failure(remote_addr: str | None) -> None:
    """Count one failed authentication; raise the 429 when the address was already over its limit.

    The failure that reaches the limit is still answered 401 (it was checked), and blocks the
    address in this process for the rest of the window; later ones never reach a lookup here.
    """
    if not enabled():
        return
    bucket = client_bucket(remote_addr)
    result = await check_counters([failure_counter(bucket)])
    if isinstance(result, Refusal):  # already at the limit (e.g. counted by another process)
        seconds = max(result.reset_ms, 1) / 1000
        keycache.client_block(bucket, seconds)
        raise throttled(seconds)
    if isinstance(result, Admitted):
        counter, value, reset_ms = result.values[0]
        if value >= counter.limit:
            keycache.client_block(bucket, max(reset_ms, 1) / 1000)
