"""Run sync ORM work from async code.

Django's async ORM is a thread wrapper and transactions need sync code (ECOSYSTEM.md gotcha 5),
so the gateway calls sync service functions through `run_db`. They run in a dedicated thread pool
(not one serialising thread, and not the loop's default executor, which has only min(32, cpus + 4)
threads and is shared with everything else that uses run_in_executor) and hand their connection
back afterwards: with the psycopg pool that is a cheap check-in, and no worker thread keeps a
connection that nobody closes.

When Postgres goes away (restart, failover, killed backends) and comes back, three things are
handled here (proxy/tests/reliability/test_infra_faults.py takes the database away under load and idle):

- Dead pooled connections. The psycopg pool hands out idle connections unchecked (no `check`
  callback unless CONN_HEALTH_CHECKS, and that one sleeps with back-off between two bad
  connections), so every idle connection the server killed would fail one request after the
  database is back. A connection a call checks out is discarded if the server has hung up on it
  (`_discard_dead_connection`), before any statement is sent, so taking another is safe. Cost in
  the normal case: one zero-timeout poll() per checkout.
- Calls piling up. A call waits up to the pool's timeout (10 s) for a connection, and these
  threads are as many as the pool's connections: while the database is down, calls would queue
  here behind calls that each wait the whole timeout, for ever longer. So once there is a sign
  that the database is gone (a connection it dropped, a call that lost its connection or timed
  out waiting for one), one call per PROBE_INTERVAL_S tries a direct connection, and calls fail at
  once while that fails and the pool has no live connection either (`_check_database`):
  fail-closed and fast, and the callers answer their clients at once (a 500 in their protocol's
  shape). A database that only refuses new connections while the pool's still work fails nothing.
- A pool still backing off. While Postgres refuses connections the pool retries each missing
  connection with exponential back-off (1, 2, 4, 8 … s, until `reconnect_timeout`) and keeps
  waiting that out after the database is back: after a long outage, no connection for about as
  long again. When the direct connection works again but the pool, after connection errors, has
  none to give, new calls get a fresh pool; the old one is closed after its own timeout (Django has
  no public API for that: ruapi/compat/django_db.py).
"""

import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, close_old_connections, connections
from django.db.backends.signals import connection_created

from ruapi.compat import django_db

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
PROBE_INTERVAL_S = 1.0
# suspect: a sign that the database is gone; unreachable: the last probe found it unreachable.
_pool_state = {"suspect": False, "unreachable": False, "next_probe": 0.0}
_pool_probe_lock = threading.Lock()
_local = threading.local()  # in_call: inside a run_db call; replaced: dead connections replaced so far


def database_unreachable() -> bool:
    """Whether this process's last probe found the database unreachable (readiness, ruapi/asgi.py)."""
    return bool(_pool_state["unreachable"])


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


def _server_hung_up(raw) -> bool:
    """Whether an idle psycopg connection is dead. An idle connection has nothing to read: if its
    socket is readable, the server sent something while it was idle — almost always its goodbye
    (FATAL 57P01 and EOF) — so only then is it checked with a round trip."""
    if raw.closed:
        return True
    try:
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return False
    except (OSError, ValueError):
        return True
    from psycopg_pool import ConnectionPool

    try:
        ConnectionPool.check_connection(raw)
    except Exception:
        return True
    return False


def _pooled(connection) -> bool:
    return connection.vendor == "postgresql" and bool(connection.settings_dict.get("OPTIONS", {}).get("pool"))


def _check_database(connection) -> None:
    """The database may be gone: raise at once while it is unreachable.

    One call per PROBE_INTERVAL_S checks (`_probe`); the others wait for its verdict (a second at
    most) and go by the last one. Only while there is a sign of trouble: normally never called.
    """
    with _pool_probe_lock:
        now = time.monotonic()
        if now >= _pool_state["next_probe"]:
            _pool_state["next_probe"] = now + PROBE_INTERVAL_S
            _probe(connection)
    if _pool_state["unreachable"]:
        raise OperationalError("the database is unreachable (a direct connection just failed)")


def _probe(connection) -> None:
    """Unreachable: a direct connection fails and the pool has no live connection to give either
    (a failing probe while the pool still works — the probe cannot, for whatever reason — fails
    nothing). Reachable again while the pool, after connection errors, has no connection to give:
    it is waiting out its back-off; new calls get a fresh pool, the old one is closed after its
    timeout (its waiting callers keep their chance)."""
    import psycopg

    pool = django_db.pool_of(connection)
    try:
        psycopg.connect(**{**django_db.direct_connect_params(connection), "connect_timeout": 1}).close()
    except Exception as exc:
        reachable = _pool_has_live_connection(pool)
        _pool_state.update(suspect=not reachable, unreachable=not reachable)
        if not reachable:
            logger.warning("the database is unreachable: %s", exc)
        return
    _pool_state.update(suspect=False, unreachable=False)
    stats = pool.get_stats()
    if not stats.get("connections_errors") or stats.get("pool_available"):
        return  # the pool never failed to connect, or has connections again
    if django_db.forget_pool(connection, pool):  # the next connection opens a new pool
        closer = threading.Timer(pool.timeout + 5, pool.close)
        closer.daemon = True
        closer.start()
        logger.warning("the database is back but the connection pool is still backing off: new pool")


def _pool_has_live_connection(pool) -> bool:
    """Whether the pool gives a live connection within 0.1 s (dead ones are discarded on the way)."""
    for _ in range(db_threads() + 1):
        try:
            raw = pool.getconn(timeout=0.1)
        except Exception:  # PoolTimeout; PoolClosed for a pool just replaced and not opened yet
            return False
        dead = _server_hung_up(raw)
        if dead:
            with contextlib.suppress(Exception):
                raw.close()
        pool.putconn(raw)
        if not dead:
            return True
    return False


def _discard_dead_connection(sender, connection, **kwargs) -> None:
    """connection_created, in a run_db call: if the server already hung up on the pooled connection
    just checked out, discard it and take another (Django's connect() again, which comes back here),
    before any statement was sent on it."""
    if not getattr(_local, "in_call", False) or not _pooled(connection):
        return
    raw = connection.connection
    if raw is None or not _server_hung_up(raw):
        return
    logger.warning("discarding a dead pooled database connection (the server closed it)")
    _pool_state["suspect"] = True
    with contextlib.suppress(Exception):
        raw.close()  # closed: the pool drops it when it comes back, and opens a replacement
    connection.close()
    depth = getattr(_local, "replaced", 0)
    if depth > db_threads():
        raise OperationalError("every pooled database connection was dead")
    _local.replaced = depth + 1
    try:
        _check_database(connection)
        connection.connect()
    finally:
        _local.replaced = depth


connection_created.connect(_discard_dead_connection, dispatch_uid="ruapi.db.discard_dead_connection")


def _lost_the_database(exc: Exception) -> bool:
    """The call failed for want of a connection: none within the pool's timeout, or it broke."""
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout) or isinstance(exc.__cause__, PoolTimeout):
        return True
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    raw = connections[DEFAULT_DB_ALIAS].connection
    return raw is None or raw.closed


def _call_and_release(fn: Callable[..., T], /, *args, **kwargs) -> T:
    connection = connections[DEFAULT_DB_ALIAS]
    pooled = _pooled(connection)
    _local.in_call = True
    try:
        if pooled and _pool_state["suspect"]:
            _check_database(connection)
        result = fn(*args, **kwargs)
        if _pool_state["suspect"] and connection.connection is not None:
            _pool_state.update(suspect=False, unreachable=False)  # a connection worked
        return result
    except Exception as exc:
        if pooled and _lost_the_database(exc):
            _pool_state["suspect"] = True
        raise
    finally:
        _local.in_call = False
        close_old_connections()


async def run_db(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Await a sync database function in a worker thread.

    sync_to_async (thread_sensitive=False) with our executor keeps asgiref's semantics as before:
    the call runs in a copy of the caller's contextvars (and asgiref Locals), changes are copied
    back, and async_to_sync inside it finds the event loop.
    """
    call = sync_to_async(partial(_call_and_release, fn), thread_sensitive=False, executor=db_executor())
    return await call(*args, **kwargs)
