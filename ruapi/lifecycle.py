"""Graceful shutdown of a gateway process: draining, the grace period, readiness (issue 17).

On SIGTERM uvicorn stops accepting connections, asks every open connection to finish
(`GuardedHttpToolsProtocol.shutdown`, ruapi/server.py, which calls `drain_begin`), waits up to its
`--timeout-graceful-shutdown` for the requests in flight, then cancels what is left.

From the first of those calls this process is draining: `/readyz` answers 503 at once (an
orchestrator stops sending it traffic), and every stream in flight gets RUAPI_SHUTDOWN_GRACE_SECONDS
to finish by itself. A stream still running then ends with its protocol's error event (an
"overloaded, retry" error: the SDKs retry it elsewhere) and is billed for what it produced, its
hold settled — through the same path as an upstream that failed mid-stream (proxy/sse.py
`with_keepalive` raises it while the relay waits for the upstream). Non-streamed requests still
running at uvicorn's own timeout are cancelled like a client disconnect (their hold released).
Keep uvicorn's `--timeout-graceful-shutdown` a few seconds above the grace so the error events
go out before uvicorn cancels anything.
"""

from __future__ import annotations

import asyncio
import gc
import time

from ruapi import observability

_state: dict = {"since": None}
_deadlines: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}


def heap_freeze() -> None:
    """At the end of a worker's start-up: collect once, then move every object alive (modules, settings,
    the URL resolver, the catalog…) into the permanent generation. The collector never walks them
    again, so no full collection scans Django's start-up heap in the middle of a request (tail latency).
    Objects created later are collected as usual."""
    gc.collect()
    gc.freeze()


def is_draining() -> bool:
    return _state["since"] is not None


def drain_begin() -> None:
    """Called once shutdown starts (idempotent): readiness false, the grace period starts."""
    if _state["since"] is not None:
        return
    _state["since"] = time.monotonic()
    observability.draining(True)
    from django.conf import settings

    grace = float(getattr(settings, "RUAPI_SHUTDOWN_GRACE_SECONDS", 25.0))
    for key, (loop, future) in list(_deadlines.items()):
        # A loop that has ended since it registered (an earlier server in this process, a finished
        # test loop) has nothing left to stop: forget it instead of failing the drain.
        if loop.is_closed():
            _deadlines.pop(key, None)
            continue
        try:
            loop.call_soon_threadsafe(_arm, loop, future, grace)
        except RuntimeError:  # closed between the check and the call
            _deadlines.pop(key, None)


def _arm(loop: asyncio.AbstractEventLoop, future: asyncio.Future, grace: float) -> None:
    loop.call_later(grace, lambda: future.done() or future.set_result(None))


def grace_over() -> asyncio.Future:
    """A future of the running loop that completes when the grace period of a shutdown is over."""
    loop = asyncio.get_running_loop()
    entry = _deadlines.get(id(loop))
    if entry is None or entry[0] is not loop:
        future = loop.create_future()
        _deadlines[id(loop)] = (loop, future)
        if _state["since"] is not None:
            from django.conf import settings

            remaining = float(getattr(settings, "RUAPI_SHUTDOWN_GRACE_SECONDS", 25.0)) - (
                time.monotonic() - _state["since"]
            )
            _arm(loop, future, max(remaining, 0.0))
        return future
    return entry[1]


def reset() -> None:
    """Forget a shutdown (tests)."""
    _state["since"] = None
    _deadlines.clear()
    observability.draining(False)
