"""Run sync ORM work from async code.

Django's async ORM is a thread wrapper and transactions need sync code (ECOSYSTEM.md gotcha 5),
so the gateway calls sync service functions through `run_db`. They run in a dedicated thread pool
(not one serialising thread, and not the loop's default executor, which has only min(32, cpus + 4)
threads and is shared with everything else that uses run_in_executor) and hand their connection
back afterwards: with the psycopg pool that is a cheap check-in, and no worker thread keeps a
connection that nobody closes.
"""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def db_threads() -> int:
    """settings.RUAPI_DB_THREADS, else the connection pool's size, else 10.

    One thread per pooled connection: each call holds at most one connection (its thread's), so
    more threads than connections would only queue inside the pool (and time out after its
    `timeout`), fewer would leave connections idle while calls queue here.
    """
    configured = getattr(settings, "RUAPI_DB_THREADS", None)
    if configured:
        return int(configured)
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict) and pool.get("max_size"):
        return int(pool["max_size"])
    return 10


def db_executor() -> ThreadPoolExecutor:
    """The process's ORM thread pool, created on first use (after settings, in each worker process)."""
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=db_threads(), thread_name_prefix="ruapi-db")
    return _executor


def _call_and_release(fn: Callable[..., T], /, *args, **kwargs) -> T:
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def run_db(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Await a sync database function in a worker thread.

    sync_to_async (thread_sensitive=False) with our executor keeps asgiref's semantics as before:
    the call runs in a copy of the caller's contextvars (and asgiref Locals), changes are copied
    back, and async_to_sync inside it finds the event loop.
    """
    call = sync_to_async(partial(_call_and_release, fn), thread_sensitive=False, executor=db_executor())
    return await call(*args, **kwargs)
