"""Django's psycopg connection pool, as ruapi/db.py's outage handling needs it (checked against
Django 5.2.19, psycopg 3.3.9, psycopg_pool 3.3.3).

Why: after a long outage psycopg_pool keeps waiting out its reconnect back-off while the database
is already back; ruapi/db.py then gives new calls a fresh pool and closes the old one only after
its timeout, so the callers already waiting on it keep their chance. Django's only public handle,
`close_pool()`, closes the pool at once (failing those callers) and has no "new pool" counterpart.

What this relies on (ruapi/tests/test_framework_assumptions.py checks each):

- `DatabaseWrapper._connection_pools`: a dict on the postgresql DatabaseWrapper class, shared by
  every thread's wrapper, {alias: psycopg_pool.ConnectionPool}; `DatabaseWrapper.pool` creates the
  alias's pool (not opened) when the alias is missing, and returns the cached one otherwise.
- `DatabaseWrapper._close` gives a connection back to the pool it came from (`connection._pool`,
  set by psycopg_pool), not to `self.pool`: connections taken from a replaced pool go home.
- `DatabaseWrapper.get_connection_params()`: psycopg.connect() keyword arguments for the alias.
- psycopg_pool's public API: `get_stats()` keys "connections_errors" / "pool_available",
  `timeout`, `getconn(timeout=)`, `putconn`, `close()`, `ConnectionPool.check_connection`.
"""

COPIED_FROM = {
    "django.db.backends.postgresql.base.DatabaseWrapper.pool": "e5c2654fdf2d5090",
    "django.db.backends.postgresql.base.DatabaseWrapper.close_pool": "9680149e647d7fdf",
    "django.db.backends.postgresql.base.DatabaseWrapper._close": "8e39d0e91862198c",
}


def pool_of(connection):
    """The alias's psycopg pool (created, not opened, on first use); None when not pooled."""
    return connection.pool


def direct_connect_params(connection) -> dict:
    """psycopg.connect() keyword arguments for the connection's alias (as the pool uses)."""
    return connection.get_connection_params()


def forget_pool(connection, pool) -> bool:
    """Make the alias's next connection open a new pool, if `pool` is still Django's pool for it.

    `pool` itself is left open (the caller closes it when its waiting callers are done); its
    connections still in use go back to it. False when another thread replaced it already."""
    pools = connection._connection_pools  # the class's dict, as DatabaseWrapper.pool reads it
    if pools.get(connection.alias) is not pool:
        return False
    try:
        del pools[connection.alias]
    except KeyError:  # another thread forgot it in between: only one wins
        return False
    return True
