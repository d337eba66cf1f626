"""Concurrent awaiters of the same cache fill share one call (per event loop).

Without it, a cache entry that expires under load is rebuilt by every request that arrives before
the first rebuild finished: with 32 requests in flight per worker, 32 catalog builds or key loads
in the ORM thread pool every TTL (bench/results/profile-S2.md showed catalog_build at 5 % of CPU).
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class SingleFlight:
    def __init__(self) -> None:
        self._calls: dict[tuple[int, Hashable], asyncio.Task] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`'s result; callers that arrive while it runs on this loop await the same one.

        Shielded: one caller being cancelled (a client that left) does not cancel the others' call.
        """
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        task = self._calls.get(slot)
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(call())
            self._calls[slot] = task
            task.add_done_callback(lambda done: self._calls.pop(slot) if self._calls.get(slot) is done else None)
        return await asyncio.shield(task)

    def forget(self) -> None:
        """Later callers start a fresh call (after an invalidation: a call in flight may have read old data)."""
        self._calls.clear()
