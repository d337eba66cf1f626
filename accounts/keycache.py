"""API key -> KeyContext, cached in process: the hot path does no database query in steady state.

Bound on revocation: the revoking process forgets the key at once (`invalidate`); every other
process re-reads it after at most RUAPI_KEY_CACHE_TTL seconds.
"""

import time
from dataclasses import dataclass

from django.conf import settings

from accounts.models import ApiKey
from ruapi.db import run_db

_MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class KeyContext:
    key_id: int
    key_prefix: str
    org_id: int
    org_slug: str
    expires_at: float | None  # unix seconds


_cache: dict[str, tuple[KeyContext | None, float]] = {}


def _load(key_hash: str) -> KeyContext | None:
    row = (
        ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True, org__is_active=True)
        .values("id", "prefix", "org_id", "org__slug", "expires_at")
        .first()
    )
    if row is None:
        return None
    return KeyContext(
        key_id=row["id"],
        key_prefix=row["prefix"],
        org_id=row["org_id"],
        org_slug=row["org__slug"],
        expires_at=row["expires_at"].timestamp() if row["expires_at"] else None,
    )


async def key_context_lookup(key_hash: str) -> KeyContext | None:
    """The active key for this hash, or None (unknown, revoked, expired, or org inactive)."""
    now = time.monotonic()
    entry = _cache.get(key_hash)
    if entry is None or entry[1] <= now:
        context = await run_db(_load, key_hash)
        if len(_cache) >= _MAX_ENTRIES:
            _cache.clear()
        # Unknown keys are cached too, so guessing keys cannot hammer the database.
        _cache[key_hash] = (context, now + settings.RUAPI_KEY_CACHE_TTL)
    else:
        context = entry[0]
    if context is not None and context.expires_at is not None and context.expires_at <= time.time():
        return None
    return context


def invalidate(key_hash: str | None = None) -> None:
    """Forget one cached key (or all of them)."""
    if key_hash is None:
        _cache.clear()
    else:
        _cache.pop(key_hash, None)
