"""What RuAPI assumes about Django's, uvicorn's and psycopg_pool's internals (ruapi/compat/), checked.

One test per assumption. A failure here after an upgrade means the upstream code RuAPI copies or
leans on changed: read the change, re-check the named module's docstring (what it relies on and
why), adapt it, then record the new fingerprint and version (ruapi/compat/__init__.py says how).
The last tests show the checks themselves fail on a broken stand-in.
"""

import asyncio
import contextlib
import inspect
import tempfile
from contextlib import aclosing

import django
import psycopg_pool
import pytest
import uvicorn
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import connections
from django.db.utils import ConnectionHandler
from django.http import HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ruapi.compat import django_asgi, django_db, drifted, uvicorn_http
from ruapi.server import GuardedHttpToolsProtocol

DJANGO_ASGI = f"ruapi/compat/django_asgi.py (checked against Django 5.2.19, installed {django.__version__})"
DJANGO_DB = (
    f"ruapi/compat/django_db.py (checked against Django 5.2.19 / psycopg_pool 3.3.3, installed "
    f"{django.__version__} / {psycopg_pool.__version__})"
)
UVICORN_HTTP = f"ruapi/compat/uvicorn_http.py and ruapi/server.py (checked against uvicorn 0.55.0, installed {uvicorn.__version__})"


def drift_message(module: str, changed: dict[str, str]) -> str:
    names = "\n".join(f"  {name}: now {actual}" for name, actual in changed.items())
    return (
        f"Upstream code that {module} copies or relies on has changed:\n{names}\n"
        "Compare each with the version checked, adapt the module if an assumption in its docstring no "
        "longer holds, then record the new fingerprints (ruapi.compat.fingerprint) and version."
    )


def signature_problems(cls, expected: dict[str, tuple[str, ...]], is_async: dict[str, bool]) -> list[str]:
    """Methods of `cls` missing, or whose parameters (after self) or sync/async kind differ."""
    problems = []
    for name, params in expected.items():
        method = getattr(cls, name, None)
        if method is None:
            problems.append(f"{cls.__name__}.{name} is gone")
            continue
        actual = tuple(inspect.signature(method).parameters)[1:]
        if actual != params:
            problems.append(f"{cls.__name__}.{name}{actual} instead of {params}")
        if name in is_async and inspect.iscoroutinefunction(method) != is_async[name]:
            problems.append(f"{cls.__name__}.{name} is {'no longer' if is_async[name] else 'now'} a coroutine")
    return problems


# -- Django's ASGI handler (ruapi/compat/django_asgi.py) -----------------------------------------------

ASGI_HANDLER_METHODS = {
    "create_request": ("scope", "body_file"),
    "run_get_response": ("request",),
    "send_response": ("response", "send"),
    "listen_for_disconnect": ("receive",),
    "load_middleware": ("is_async",),
}
ASGI_HANDLER_ASYNC = {
    "create_request": False,
    "run_get_response": True,
    "send_response": True,
    "listen_for_disconnect": True,
}


async def hello_view(request):
    return HttpResponse("hello")


urlpatterns = [path("v1/hello", hello_view)]


def http_scope(path_: str = "/v1/hello", root_path: str = "") -> dict:
    return {
        "type": "http", "method": "POST", "path": path_, "raw_path": path_.encode(), "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")], "scheme": "http", "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000), "root_path": root_path, "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip


def test_django_asgi_code_copied_is_unchanged():
    changed = drifted(django_asgi.COPIED_FROM)
    assert not changed, drift_message(DJANGO_ASGI, changed)


def test_django_asgi_handler_methods_keep_their_signatures():
    problems = signature_problems(ASGIHandler, ASGI_HANDLER_METHODS, ASGI_HANDLER_ASYNC)
    assert not problems, f"Django's ASGIHandler changed ({'; '.join(problems)}): revisit {DJANGO_ASGI}"


def test_django_create_request_reads_no_body_and_script_prefix_comes_from_the_scope():
    class Unread(tempfile.SpooledTemporaryFile):
        def read(self, *args):
            raise AssertionError("read")

    body_file = Unread(mode="w+b")
    body_file.write(b"not yet")
    request, error = LeanHandler().create_request(http_scope(), body_file)
    assert error is None and request is not None, f"create_request no longer returns (request, None): {DJANGO_ASGI}"
    assert request.method == "POST" and request._stream is body_file, (
        f"ASGIRequest no longer keeps the body file unread for later (issue 12's auth before the body): {DJANGO_ASGI}"
    )
    with override_settings(FORCE_SCRIPT_NAME=None):
        assert get_script_prefix(http_scope(root_path="/gw")) == "/gw", f"get_script_prefix changed: {DJANGO_ASGI}"


class LeanHandler(django_asgi.LeanASGIHandler):
    pass


@pytest.mark.asyncio
async def test_django_get_response_async_registers_request_close_and_no_signal_runs():
    """close_response() must close what Django's close() closes (request.close among them), minus the signal."""
    fired = []

    def receiver(**kwargs):
        fired.append(kwargs)

    with override_settings(ROOT_URLCONF=__name__), tempfile.SpooledTemporaryFile(mode="w+b") as body_file:
        handler = LeanHandler()
        request, _ = handler.create_request(http_scope(), body_file)
        response = await handler.run_get_response(request)
    assert request.close in response._resource_closers, (
        f"get_response_async no longer registers request.close in response._resource_closers: {DJANGO_ASGI}"
    )
    closed = []
    response._resource_closers.append(lambda: closed.append(True))
    signals.request_finished.connect(receiver)
    try:
        django_asgi.close_response(response)
    finally:
        signals.request_finished.disconnect(receiver)
    assert closed == [True] and response._resource_closers == [] and response.closed, DJANGO_ASGI
    assert fired == []


@pytest.mark.asyncio
async def test_django_listen_for_disconnect_raises_request_aborted():
    async def receive():
        return {"type": "http.disconnect"}

    with pytest.raises(RequestAborted):
        await LeanHandler().listen_for_disconnect(receive)


@pytest.mark.asyncio
async def test_django_streaming_response_keeps_the_views_async_iterator_unclosed():
    """The view's generator is `_iterator`; streaming_content wraps it and closing the wrapper (as
    send_response does) does not close the generator, nor does Django register its aclose."""
    finished = []

    async def view_stream():
        try:
            yield b"one"
            yield b"two"
        finally:
            finished.append(True)

    stream = view_stream()
    response = StreamingHttpResponse(stream)
    assert django_asgi.async_stream_source(response) is stream, (
        f"StreamingHttpResponse._iterator is no longer the view's async iterator: {DJANGO_ASGI}"
    )
    assert not any(getattr(closer, "__self__", None) is stream for closer in response._resource_closers)
    async with aclosing(response.streaming_content) as wrapper:
        assert await anext(wrapper) == b"one"
    assert finished == [], f"closing streaming_content now closes the view's iterator: simplify {DJANGO_ASGI}"
    await stream.aclose()
    assert finished == [True]
    assert django_asgi.async_stream_source(HttpResponse("x")) is None
    assert django_asgi.async_stream_source(StreamingHttpResponse(iter([b"x"]))) is None


# -- Django's psycopg pool (ruapi/compat/django_db.py) ---------------------------------------------------

PROBE_ALIAS = "ruapi_compat_probe"


def pool_shape_problems(wrapper_class) -> list[str]:
    """DatabaseWrapper keeps one pool per alias in a class-level dict that `pool` fills and reads."""
    pools = wrapper_class.__dict__.get("_connection_pools")
    if not isinstance(pools, dict):
        return [f"{wrapper_class.__name__}._connection_pools is not a class-level dict"]
    settings_dict = ConnectionHandler().configure_settings(
        {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "ruapi_compat", "OPTIONS": {"pool": True}}}
    )["default"]  # every key Django fills in; no connection is made
    problems = []
    first, other_thread = wrapper_class(settings_dict, PROBE_ALIAS), wrapper_class(settings_dict, PROBE_ALIAS)
    try:
        pool = django_db.pool_of(first)
        if not isinstance(pool, psycopg_pool.ConnectionPool) or pools.get(PROBE_ALIAS) is not pool:
            problems.append("`pool` no longer stores a ConnectionPool under the alias in _connection_pools")
        if django_db.pool_of(other_thread) is not pool:
            problems.append("wrappers of one alias no longer share its pool")
        if not django_db.forget_pool(first, pool) or PROBE_ALIAS in pools:
            problems.append("removing the alias from _connection_pools did not work")
        if django_db.pool_of(first) is pool:
            problems.append("`pool` did not create a new pool once the alias was removed")
        if django_db.forget_pool(first, pool):
            problems.append("forget_pool removed a pool that was no longer Django's")
        if django_db.direct_connect_params(first).get("dbname") != "ruapi_compat":
            problems.append("get_connection_params() no longer gives psycopg.connect() keyword arguments")
    finally:
        pools.pop(PROBE_ALIAS, None)
    return problems


def test_django_db_code_relied_on_is_unchanged():
    changed = drifted(django_db.COPIED_FROM)
    assert not changed, drift_message(DJANGO_DB, changed)


def test_django_connection_pools_shape():
    from django.db.backends.postgresql.base import DatabaseWrapper

    problems = pool_shape_problems(DatabaseWrapper)
    assert not problems, f"Django's connection pool handling changed ({'; '.join(problems)}): revisit {DJANGO_DB}"


@pytest.mark.django_db
def test_django_connections_of_a_forgotten_pool_go_back_to_it():
    """A connection taken from a pool that is then replaced goes back to that pool, not the new one."""
    default = connections["default"]
    if default.vendor != "postgresql":
        pytest.skip("the psycopg pool needs Postgres")
    settings_dict = {**default.settings_dict, "OPTIONS": {**default.settings_dict.get("OPTIONS", {})}}
    settings_dict["OPTIONS"]["pool"] = {"min_size": 0, "max_size": 1, "timeout": 5}
    wrapper = type(default)(settings_dict, PROBE_ALIAS)
    old = django_db.pool_of(wrapper)
    try:
        wrapper.ensure_connection()
        assert django_db.forget_pool(wrapper, old)
        wrapper.close()
        assert old.get_stats().get("pool_available") == 1, (
            f"a connection from a replaced pool no longer goes back to it (DatabaseWrapper._close): {DJANGO_DB}"
        )
        new = django_db.pool_of(wrapper)
        assert new is not old and new.get_stats().get("pool_size", 0) == 0
    finally:
        old.close()
        type(default)._connection_pools.pop(PROBE_ALIAS, None)


def test_psycopg_pool_public_api_used_by_ruapi_db():
    stats_keys = {psycopg_pool.base.BasePool._CONNECTIONS_ERRORS, psycopg_pool.base.BasePool._POOL_AVAILABLE}
    assert stats_keys == {"connections_errors", "pool_available"}, f"psycopg_pool's stats keys changed: {DJANGO_DB}"
    for name in ("getconn", "putconn", "close", "get_stats", "check_connection"):
        assert callable(getattr(psycopg_pool.ConnectionPool, name, None)), f"ConnectionPool.{name} is gone: {DJANGO_DB}"
    assert "timeout" in inspect.signature(psycopg_pool.ConnectionPool.getconn).parameters, DJANGO_DB


# -- uvicorn's httptools protocol (ruapi/compat/uvicorn_http.py) -----------------------------------------


def hook_problems(base, guard) -> list[str]:
    """The hooks the guard overrides still exist on uvicorn's class, with the parameters it accepts."""
    problems = signature_problems(base, uvicorn_http.OVERRIDDEN, {})
    problems += [
        f"{guard.__name__} does not override {name}" for name in uvicorn_http.OVERRIDDEN if name not in guard.__dict__
    ]
    init = tuple(inspect.signature(base.__init__).parameters)[1:]
    if init != ("config", "server_state", "app_state", "_loop"):
        problems.append(f"{base.__name__}.__init__{init}")
    return problems


def test_uvicorn_code_relied_on_is_unchanged():
    changed = drifted(uvicorn_http.COPIED_FROM)
    assert not changed, drift_message(UVICORN_HTTP, changed)


def test_uvicorn_hooks_overridden_exist_with_compatible_signatures():
    problems = hook_problems(HttpToolsProtocol, GuardedHttpToolsProtocol)
    assert not problems, f"uvicorn's HttpToolsProtocol changed ({'; '.join(problems)}): revisit {UVICORN_HTTP}"


class FakeTransport(asyncio.Transport):
    def __init__(self, protocol=None):
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.protocol = protocol
        self.reading = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("10.0.0.7", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data):
        self.written += data

    def close(self):
        self.closing = True

    def is_closing(self):
        return self.closing

    def get_protocol(self):
        return self.protocol

    def set_protocol(self, protocol):
        self.protocol = protocol

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True


@pytest.mark.asyncio
async def test_uvicorn_protocol_state_behaves_as_relied_on():
    """A real request through the guard's uvicorn base: each accessor reads what the guard expects."""
    seen = {}
    received, release, sent = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def app(scope, receive, send):
        seen["scope"] = scope
        seen["body"] = (await receive())["body"]
        received.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        sent.set()

    config = Config(app=app, http=GuardedHttpToolsProtocol, lifespan="off", log_level="warning")
    state = ServerState()
    state.default_headers = [(b"server", b"test")]
    protocol = GuardedHttpToolsProtocol(
        config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = FakeTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    assert protocol.peer_host() == "10.0.0.7", f"uvicorn's `client` changed: {UVICORN_HTTP}"
    assert not protocol.response_in_flight()
    protocol.data_received(
        b"POST /v1/x?q=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nContent-Length: 3\r\n\r\nabc"
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(received.wait(), 5)
    assert received.is_set(), f"the request never reached the application through uvicorn's cycle: {UVICORN_HTTP}"
    problems = []
    if protocol.request_target() != b"/v1/x?q=1":
        problems.append(f"url is {protocol.request_target()!r}")
    if protocol.request_headers() is not seen["scope"]["headers"]:
        problems.append("headers is no longer the scope's list (the X-Forwarded-For removal would not show)")
    if any(name == b"x-forwarded-for" for name, _ in seen["scope"]["headers"]):
        problems.append("X-Forwarded-For reached the application (headers edited after the task started?)")
    if seen["scope"]["client"] != ("10.0.0.7", 40000) or seen.get("body") != b"abc":
        problems.append(f"scope client/body: {seen['scope']['client']}, {seen.get('body')!r}")
    if not protocol.response_in_flight() or protocol.response_started() or protocol.app_paused_reading():
        problems.append("cycle.response_complete/response_started or flow.read_paused do not read as expected")
    refusal = protocol.plain_response(408, "slow")
    if not refusal.startswith(b"HTTP/1.1 408 Request Timeout\r\nserver: test\r\n") or not refusal.endswith(
        b"\r\n\r\nslow"
    ):
        problems.append(f"STATUS_LINE / default_headers: {refusal!r}")
    release.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sent.wait(), 5)
    if not protocol.response_complete() or not transport.written.startswith(b"HTTP/1.1 200"):
        problems.append("the response did not complete through uvicorn's cycle")
    protocol.set_client_host("192.0.2.1")
    if protocol.scope["client"] != ("192.0.2.1", 0):
        problems.append("scope is not the current request's scope")
    protocol.connection_lost(None)
    assert not problems, f"uvicorn's protocol state changed ({'; '.join(problems)}): revisit {UVICORN_HTTP}"


# -- the checks fail when the assumption breaks --------------------------------------------------------


def test_checks_detect_a_changed_or_removed_upstream_method(monkeypatch):
    async def read_body(self, receive):  # a "new Django" read_body
        return None

    monkeypatch.setattr(ASGIHandler, "read_body", read_body)
    monkeypatch.delattr(ASGIHandler, "listen_for_disconnect")
    changed = drifted(django_asgi.COPIED_FROM)
    assert set(changed) == {
        "django.core.handlers.asgi.ASGIHandler.read_body",
        "django.core.handlers.asgi.ASGIHandler.listen_for_disconnect",
    }
    assert changed["django.core.handlers.asgi.ASGIHandler.listen_for_disconnect"].startswith("unavailable")
    assert "listen_for_disconnect is gone" in signature_problems(ASGIHandler, ASGI_HANDLER_METHODS, {})[0]


def test_checks_detect_a_missing_connection_pools_attribute():
    from django.db.backends.postgresql.base import DatabaseWrapper

    class NewDjangoWrapper(DatabaseWrapper):  # pools kept somewhere else
        pass

    assert pool_shape_problems(NewDjangoWrapper) == ["NewDjangoWrapper._connection_pools is not a class-level dict"]


def test_checks_detect_a_renamed_or_reshaped_uvicorn_hook():
    class NewUvicorn(HttpToolsProtocol):
        on_body = None  # gone (e.g. renamed)

        def shutdown(self, reason):  # a new parameter
            pass

    problems = hook_problems(NewUvicorn, GuardedHttpToolsProtocol)
    assert "NewUvicorn.on_body is gone" in problems and "NewUvicorn.shutdown('reason',) instead of ()" in problems
