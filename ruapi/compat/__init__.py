"""Every use RuAPI makes of Django's, uvicorn's and psycopg_pool's undocumented internals, in one place.

Each module below is the only code that touches the internals it names; the rest of the gateway
calls its small functions/classes. ruapi/tests/test_framework_assumptions.py checks each assumption
(attributes, signatures, behaviour, and the source of the upstream code it copies or leans on against
a recorded fingerprint), so an upgrade that changes one fails there, naming the module to revisit.

Checked against Django 5.2.19, uvicorn 0.55.0 (httptools 0.9.0), psycopg 3.3.9 / psycopg_pool 3.3.3.

- `django_asgi`: `LeanASGIHandler`, Django's ASGIHandler without its per-request
  ThreadSensitiveContext and request_started/request_finished signals (two OS threads per request,
  ~0.5–1 ms of loop CPU and TTFB: bench/results/profile-S2.md, profile-S3.md), with the body read
  only after the caller was admitted (issue 12). Relies on ASGIHandler's create_request /
  send_response / run_get_response / listen_for_disconnect, on `HttpResponseBase._resource_closers`
  (closing a response without its signal) and `StreamingHttpResponse._iterator` (the view's own
  async generator, which Django never closes).
- `django_db`: replacing a psycopg pool that is still backing off after an outage
  (`DatabaseWrapper._connection_pools`; `close_pool()` would close it at once, under its waiting
  callers), and `DatabaseWrapper.pool` / `get_connection_params()` for the direct probe.
- `uvicorn_http`: `HttpToolsHooks`, uvicorn's httptools protocol class with the per-connection
  state ruapi/server.py reads under names of ours. uvicorn has no header/body deadlines or head size
  limit for httptools, and its --proxy-headers trusts 127.0.0.1 by default (ruapi/server.py).

When a check fails: read the upstream change, re-check the module's assumptions (its docstring),
adapt the module, then update the recorded fingerprint and the version above.
"""

import hashlib
import importlib
import inspect


def resolve(dotted: str):
    """`package.module.Class.attribute` -> the object (the longest importable module prefix first)."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            target = inspect.getattr_static(target, name)
            if isinstance(target, (staticmethod, classmethod)):
                target = target.__func__
            elif isinstance(target, property):
                target = target.fget
        return target
    raise ImportError(dotted)


def fingerprint(dotted: str) -> str:
    """sha256 (first 16 hex digits) of the source of the named function, method or class."""
    return hashlib.sha256(inspect.getsource(resolve(dotted)).encode()).hexdigest()[:16]


def drifted(recorded: dict[str, str]) -> dict[str, str]:
    """The entries of `recorded` ({dotted name: fingerprint}) whose upstream source changed (or vanished)."""
    changed = {}
    for dotted, expected in recorded.items():
        try:
            actual = fingerprint(dotted)
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            actual = f"unavailable ({exc.__class__.__name__}: {exc})"
        if actual != expected:
            changed[dotted] = actual
    return changed
