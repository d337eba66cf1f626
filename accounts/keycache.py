"""API key -> KeyContext, cached in process: the hot path does no database query in steady state.

The context carries everything admission needs (limits, allowed models, IP allowlist, the
organisation's limits), so enforcement in proxy/limits.py needs no query either.

Bound on revocation (and on any change to a key's or organisation's limits):
- the process that made the change forgets its cached keys at once (`invalidate`, after commit);
- with REDIS_URL set, the change also bumps a version in Redis (`publish_change`); every process
  reads that version at most once per RUAPI_KEY_VERSION_CHECK_INTERVAL (1 s) on the hot path and
  drops its whole key cache when it moved — so a revocation is effective everywhere within ~1 s;
- whatever happens to Redis, no process trusts a cached key longer than RUAPI_KEY_CACHE_TTL (5 s).

It also holds the per-process verdicts of the failed-key throttle (proxy/auththrottle.py counts
the failures): client addresses refused without any lookup until a time, so that check costs one
dict lookup and no I/O on the hot path.
"""

import ipaddress
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings

from accounts import shared_state
from accounts.models import ApiKey
from ruapi.db import run_db
from ruapi.singleflight import SingleFlight

logger = logging.getLogger(__name__)

_MAX_ENTRIES = 100_000
VERSION_KEY = "ruapi:keys:version"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class KeyContext:
    key_id: int
    key_prefix: str
    org_id: int
    org_slug: str
    expires_at: float | None  # unix seconds
    allowed_models: frozenset[str] | None = None  # None: every model
    ip_allowlist: tuple[IPNetwork, ...] = ()  # empty: any address
    key_rpm: int | None = None
    key_tpm: int | None = None
    key_spend_cap_nanos: int | None = None
    org_rpm: int | None = None
    org_tpm: int | None = None
    org_spend_cap_nanos: int | None = None
    has_limits: bool = field(default=False)  # any rate limit or cap: admission must ask proxy/limits


_cache: dict[str, tuple[KeyContext | None, float]] = {}
_loads = SingleFlight()  # concurrent lookups of one uncached key share one load
_generation = [0]  # bumped by every invalidation: a load that started before it is not cached
_version_state = {"seen": None, "next_check": 0.0}


def parse_networks(entries: list[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


_FIELDS = (
    "id", "prefix", "org_id", "org__slug", "expires_at", "allowed_models", "ip_allowlist",
    "rpm_limit", "tpm_limit", "monthly_spend_cap_nanos",
    "org__rpm_limit", "org__tpm_limit", "org__monthly_spend_cap_nanos",
)  # fmt: skip


def _load(key_hash: str) -> KeyContext | None:
    row = (
        ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True, org__is_active=True)
        .values(*_FIELDS)
        .first()
    )
    if row is None:
        return None
    limits = (
        row["rpm_limit"], row["tpm_limit"], row["monthly_spend_cap_nanos"],
        row["org__rpm_limit"], row["org__tpm_limit"], row["org__monthly_spend_cap_nanos"],
    )  # fmt: skip
    return KeyContext(
        key_id=row["id"],
        key_prefix=row["prefix"],
        org_id=row["org_id"],
        org_slug=row["org__slug"],
        expires_at=row["expires_at"].timestamp() if row["expires_at"] else None,
        allowed_models=frozenset(row["allowed_models"]) if row["allowed_models"] else None,
        ip_allowlist=parse_networks(row["ip_allowlist"] or []),
        key_rpm=limits[0],
        key_tpm=limits[1],
        key_spend_cap_nanos=limits[2],
        org_rpm=limits[3],
        org_tpm=limits[4],
        org_spend_cap_nanos=limits[5],
        has_limits=any(limit is not None for limit in limits),
    )


async def _follow_remote_changes() -> None:
    """Drop the cache when another process published a key change (at most one GET per interval)."""
    now = time.monotonic()
    if now < _version_state["next_check"]:
        return
    _version_state["next_check"] = now + settings.RUAPI_KEY_VERSION_CHECK_INTERVAL
    try:
        version = await shared_state.async_client().get(VERSION_KEY)
    except Exception as exc:  # Redis down: the TTL bound still holds
        logger.warning("key version check failed, relying on RUAPI_KEY_CACHE_TTL: %s", exc)
        return
    if version != _version_state["seen"]:
        _version_state["seen"] = version
        _forget_keys()


async def key_context_lookup(key_hash: str) -> KeyContext | None:
    """The active key for this hash, or None (unknown, revoked, expired, or org inactive)."""
    if shared_state.redis_enabled():
        await _follow_remote_changes()
    now = time.monotonic()
    entry = _cache.get(key_hash)
    if entry is None or entry[1] <= now:
        context = await _loads.run((_generation[0], key_hash), lambda: _load_and_cache(key_hash))
    else:
        context = entry[0]
    if context is not None and context.expires_at is not None and context.expires_at <= time.time():
        return None
    return context


async def _load_and_cache(key_hash: str) -> KeyContext | None:
    generation = _generation[0]
    context = await run_db(_load, key_hash)
    if generation == _generation[0]:  # not invalidated meanwhile (the load may have read the old row)
        if len(_cache) >= _MAX_ENTRIES:
            _cache.clear()
        # Unknown keys are cached too, so guessing keys cannot hammer the database.
        _cache[key_hash] = (context, time.monotonic() + settings.RUAPI_KEY_CACHE_TTL)
    return context


def _forget_keys(key_hash: str | None = None) -> None:
    _generation[0] += 1
    _loads.forget()
    if key_hash is None:
        _cache.clear()
    else:
        _cache.pop(key_hash, None)


def invalidate(key_hash: str | None = None) -> None:
    """Forget one cached key (or all of them, and the blocked-client verdicts) in this process.

    A forgotten verdict costs one more lookup at most: the failure counter itself (Redis or
    proxy/limits.py's in-process limiter) is not cleared, so the client's next failure blocks it again.
    """
    _forget_keys(key_hash)
    if key_hash is None:
        _blocked_clients.clear()


# -- failed-authentication throttle: this process's verdicts ---------------------------------------
_blocked_clients: dict[str, float] = {}  # client bucket (proxy/auththrottle.py) -> monotonic end of its block


def client_block_remaining(bucket: str) -> float:
    """Seconds this client is still refused without a lookup (0: not blocked). No I/O."""
    until = _blocked_clients.get(bucket)
    if until is None:
        return 0.0
    remaining = until - time.monotonic()
    if remaining <= 0:
        _blocked_clients.pop(bucket, None)
        return 0.0
    return remaining


def client_block(bucket: str, seconds: float) -> None:
    """Refuse this client's keys without a lookup for `seconds` (its failure window's rest)."""
    now = time.monotonic()
    if len(_blocked_clients) >= _MAX_ENTRIES:
        for name in [name for name, until in _blocked_clients.items() if until <= now]:
            del _blocked_clients[name]
        if len(_blocked_clients) >= _MAX_ENTRIES:
            _blocked_clients.clear()
    _blocked_clients[bucket] = now + seconds


def any_client_blocked() -> bool:
    return bool(_blocked_clients)


def publish_change(key_hash: str | None = None) -> None:
    """A key (or, with None, every key of some organisation) changed: this process forgets it now,
    every other process within RUAPI_KEY_VERSION_CHECK_INTERVAL (Redis) or RUAPI_KEY_CACHE_TTL.

    Call after commit (transaction.on_commit), or another process could re-read the old row.
    """
    invalidate(key_hash)
    if shared_state.redis_enabled():
        try:
            shared_state.sync_client().incr(VERSION_KEY)
        except Exception as exc:  # the change is committed; the TTL bound still applies
            logger.warning("could not publish a key change to Redis: %s", exc)
