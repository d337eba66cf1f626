"""Run sync ORM work from async code.

Django's async ORM is a thread wrapper and transactions need sync code (ECOSYSTEM.md gotcha 5),
so the gateway calls sync service functions through `run_db`. They run in the loop's thread pool
(not one serialising thread) and hand their connection back afterwards: with the psycopg pool
that is a cheap check-in, and no worker thread keeps a connection that nobody closes.
"""

from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")


def _call_and_release(fn: Callable[..., T], /, *args, **kwargs) -> T:
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def run_db(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Await a sync database function in a worker thread."""
    return await sync_to_async(partial(_call_and_release, fn), thread_sensitive=False)(*args, **kwargs)
