"""Redis connections for state shared by every process: key-change versions and limit counters.

Only used when REDIS_URL is set. Async clients are per event loop (a redis.asyncio connection
belongs to the loop that opened it; the test server and the app each run their own loop).
Short socket timeouts: the hot path would rather degrade (see proxy/limits.py) than wait.
"""

import asyncio
import logging
import time

import redis
import redis.asyncio as aioredis
from django.conf import settings

SOCKET_TIMEOUT_S = 0.5
REDIS_RETRY_AFTER_S = 5.0

logger = logging.getLogger(__name__)
_async_clients: dict[int, tuple[asyncio.AbstractEventLoop, aioredis.Redis]] = {}
_sync_client: redis.Redis | None = None


def redis_enabled() -> bool:
    return bool(settings.REDIS_URL)


def async_client() -> aioredis.Redis:
    """This event loop's client (created on first use)."""
    loop = asyncio.get_running_loop()
    entry = _async_clients.get(id(loop))
    if entry is None or entry[0] is not loop:  # the id of a closed loop can be reused by a new one
        if len(_async_clients) > 64:
            _async_clients.clear()
        client = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        entry = _async_clients[id(loop)] = (loop, client)
    return entry[1]


def sync_client() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
    return _sync_client


def reset_clients() -> None:
    """Forget clients (tests that switch REDIS_URL)."""
    global _sync_client
    _async_clients.clear()
    _sync_client = None


class RedisBackoff:
    """When a user of the shared state should try Redis. After a failure it works per process for
    REDIS_RETRY_AFTER_S (failing open, see proxy/limits.py) instead of waiting on a dead Redis at
    every request, then tries again."""

    def __init__(self, user: str, meanwhile: str) -> None:
        self.user, self.meanwhile = user, meanwhile  # for the log line: who, and what it does meanwhile
        self.down_until = 0.0

    def usable(self) -> bool:
        return redis_enabled() and time.monotonic() >= self.down_until

    def failed(self, exc: Exception) -> None:
        self.down_until = time.monotonic() + REDIS_RETRY_AFTER_S
        logger.warning("%s: Redis unavailable, %s for %ss: %s", self.user, self.meanwhile, REDIS_RETRY_AFTER_S, exc)

    def reset(self) -> None:
        self.down_until = 0.0
