"""PublicAPIHandler: Django's /v1 request cycle without per-request threads or request signals.

Driven directly over ASGI (no server) with a test URLconf, so each property is checked in
isolation; proxy/tests/integration/test_disconnect.py checks the disconnect path end to end.
"""

import asyncio
import contextvars
import threading

import pytest
from django.core import signals
from django.http import HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path

from ruapi.asgi import PublicAPIHandler
from ruapi.db import db_executor, db_threads, run_db

stream_events: dict[str, asyncio.Event] = {}


async def ok_view(request):
    return HttpResponse(f"{request.method} {len(request.body)}", content_type="text/plain")


async def boom_view(request):
    raise RuntimeError("boom")


async def stream_view(request):
    started, closed = stream_events["started"], stream_events["closed"]

    async def content():
        try:
            yield b"first"
            started.set()
            await asyncio.sleep(30)  # an upstream that goes quiet
            yield b"never"
        finally:
            closed.set()

    return StreamingHttpResponse(content(), content_type="text/event-stream")


urlpatterns = [
    path("v1/ok", ok_view),
    path("v1/boom", boom_view),
    path("v1/stream", stream_view),
]


def scope(path_: str, method: str = "GET", host: bytes = b"127.0.0.1") -> dict:
    return {
        "type": "http", "method": method, "path": path_, "raw_path": path_.encode(), "query_string": b"",
        "headers": [(b"host", host)], "scheme": "http", "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000), "root_path": "", "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip


class Client:
    """An ASGI server stand-in: one request body, then http.disconnect when told to."""

    def __init__(self, body: bytes = b""):
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})
        self.sent: list[dict] = []

    async def receive(self):
        return await self.inbox.get()

    async def send(self, message):
        self.sent.append(message)

    def hang_up(self):
        self.inbox.put_nowait({"type": "http.disconnect"})

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


@pytest.fixture
def handler():
    with override_settings(ROOT_URLCONF=__name__):
        yield PublicAPIHandler()


async def call(handler, client: Client, scope_: dict) -> None:
    task = asyncio.create_task(handler(scope_, client.receive, client.send))
    await asyncio.wait_for(asyncio.shield(task), 5)


@pytest.mark.asyncio
async def test_serves_without_request_signals_or_new_threads(handler):
    fired = []

    def receiver(**kwargs):
        fired.append(kwargs)

    signals.request_started.connect(receiver)
    signals.request_finished.connect(receiver)
    try:
        threads_before = threading.active_count()
        client = Client(b"hello")
        await call(handler, client, scope("/v1/ok", "POST"))
        threads_after = threading.active_count()
    finally:
        signals.request_started.disconnect(receiver)
        signals.request_finished.disconnect(receiver)
    assert client.status == 200
    assert client.body == b"POST 5"
    assert fired == []
    assert threads_after == threads_before


@pytest.mark.asyncio
async def test_disconnect_mid_stream_closes_the_generator(handler):
    stream_events.update(started=asyncio.Event(), closed=asyncio.Event())
    client = Client()
    task = asyncio.create_task(handler(scope("/v1/stream"), client.receive, client.send))
    await asyncio.wait_for(stream_events["started"].wait(), 5)
    assert client.status == 200
    assert client.sent[1] == {"type": "http.response.body", "body": b"first", "more_body": True}
    client.hang_up()
    await asyncio.wait_for(task, 2)  # the handler returns once the stream's `finally` has run
    assert stream_events["closed"].is_set()


@pytest.mark.asyncio
async def test_disallowed_host_is_a_400(handler):
    client = Client()
    await call(handler, client, scope("/v1/ok", host=b"evil.example"))
    assert client.status == 400


@pytest.mark.asyncio
async def test_an_exception_becomes_djangos_500(handler):
    client = Client()
    await call(handler, client, scope("/v1/boom"))
    assert client.status == 500


@pytest.mark.asyncio
async def test_head_is_answered_like_get(handler):
    client = Client()
    await call(handler, client, scope("/v1/ok", "HEAD"))
    assert client.status == 200
    assert client.body == b"HEAD 0"  # Django sends the body; the server drops it for HEAD


@pytest.mark.asyncio
async def test_disconnect_before_the_body_sends_nothing(handler):
    client = Client()
    client.inbox.get_nowait()
    client.hang_up()
    await call(handler, client, scope("/v1/ok", "POST"))
    assert client.sent == []


@pytest.mark.asyncio
async def test_run_db_uses_its_own_pool_and_the_callers_context():
    var = contextvars.ContextVar("var")
    var.set("caller")
    name, value = await run_db(lambda: (threading.current_thread().name, var.get()))
    assert name.startswith("ruapi-db")
    assert value == "caller"
    assert db_executor()._max_workers == db_threads()


def test_db_threads_follows_the_setting_then_the_pool_size(settings):
    settings.RUAPI_DB_THREADS = 3
    assert db_threads() == 3
    settings.RUAPI_DB_THREADS = None
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    assert db_threads() == (pool["max_size"] if isinstance(pool, dict) else 10)


@pytest.mark.integration
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_too_large_body_is_the_pipelines_413(gateway, settings, chunked):
    # A declared length is refused from the header; a chunked body when request.body raises
    # RequestDataTooBig (DATA_UPLOAD_MAX_MEMORY_SIZE), which the handler must leave to the pipeline.
    import httpx

    settings.RUAPI_MAX_BODY_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = b'{"model": "gpt-test", "messages": [], "pad": "' + b"x" * 2000 + b'"}'
    content = iter([body]) if chunked else body
    headers = {"authorization": f"Bearer {gateway.tenant.secret}", "content-type": "application/json"}
    with httpx.Client(base_url=gateway.server.url, timeout=10) as client:
        response = client.post("/v1/chat/completions", content=content, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["type"]
