"""ASGI entry point: `ruapi.asgi:application` (HTTP and WebSocket).

HTTP under /v1/ goes to a Django handler built with settings.API_MIDDLEWARE only: the dashboard's
middleware is sync-style and would cost every proxied request several thread hops. That handler
also skips the per-request thread machinery of Django's ASGIHandler (see PublicAPIHandler).
"""

import asyncio
import logging
import os
import tempfile
from contextlib import suppress

import orjson

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ruapi.settings")

from django.core.asgi import get_asgi_application

dashboard_app = get_asgi_application()  # sets Django up; import models only after this

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import RequestAborted, RequestDataTooBig  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from proxy.translate.errors import ErrorKind, GatewayError, openai_error_body  # noqa: E402
from ruapi import db, lifecycle, observability  # noqa: E402
from ruapi.observability import ObservedAPI  # noqa: E402
from ruapi.routing import websocket_urlpatterns  # noqa: E402

logger = logging.getLogger(__name__)


class PublicAPIHandler(ASGIHandler):
    """Django's ASGI handler with the lean API middleware stack and no per-request threads.

    Django's `ASGIHandler.__call__` enters a `ThreadSensitiveContext` and dispatches
    `request_started` / `request_finished` with `asend`, whose sync receivers (reset_queries,
    close_old_connections, close_caches) and the final `sync_to_async(response.close)` each run in
    that context's new one-thread executor — two OS threads started and joined per request (asgiref
    3.13), ~0.5–1 ms of event-loop CPU and TTFB (bench/results/profile-S2.md, profile-S3.md).

    None of that has work to do here: /v1 never touches the ORM on the event-loop thread (every
    query goes through `ruapi.db.run_db`, which hands its connection back after each call), so the
    loop thread has no connection to check or queries to reset, and no Django cache either. So this
    handler reads the body, builds the `ASGIRequest` and awaits `get_response_async` like Django, but
    without the context and the signals; it keeps Django's disconnect handling and its exception
    conversion (ninja's own handler answers protocol-shaped 500s before that).
    """

    def load_middleware(self, is_async=False):
        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)
        # ALLOWED_HOSTS: the dashboard gets it from CommonMiddleware's request.get_host(); /v1 has no
        # middleware, so check it here as the outermost layer (a few µs). /v1 builds no absolute
        # URLs, but the setting is the operator's list of names this site answers to (DNS
        # rebinding), and a bad Host gets Django's usual 400 through convert_exception_to_response.
        inner = self._middleware_chain

        async def validate_host(request):
            request.get_host()
            return await inner(request)

        self._middleware_chain = convert_exception_to_response(validate_host)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)  # no ThreadSensitiveContext (see the class docstring)

    async def handle(self, scope, receive, send):
        """ASGIHandler.handle minus request_started/request_finished and sync_to_async(close), with the
        caller authenticated from its headers before any of its body is read, and the body bounded."""
        set_script_prefix(get_script_prefix(scope))
        # The body goes into Django's spooled file (in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, then
        # on disk), but only once the request was admitted, and never past RUAPI_MAX_BODY_BYTES.
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed with the request: request.close())
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        request, error_response = self.create_request(scope, body_file)  # the request reads no body yet
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            close_response(error_response)
            return
        refusal = await admit_before_body(request)
        if refusal is None:
            try:
                await read_body_bounded(receive, body_file, settings.RUAPI_MAX_BODY_BYTES)
            except RequestAborted:  # the client left before the body was complete
                request.close()
                return
            except RequestDataTooBig:
                refusal = body_refusal(request, GatewayError(ErrorKind.REQUEST_TOO_LARGE, "Request body is too large."))
        if refusal is not None:
            # Answered without reading the rest of the body: `connection: close`, and the server
            # (ruapi/server.py) closes a connection whose request body was not read to its end.
            refusal["connection"] = "close"
            request.close()
            await self.send_response(refusal, send)
            close_response(refusal)
            return
        # As Django: the response is produced and sent in a task while another waits for
        # http.disconnect; a client that hangs up cancels the first, so a view still waiting for
        # its upstream, or a stream between two chunks, stops there and its `finally` runs (the
        # stream settles what was produced and closes the upstream). Tasks, not threads.
        tasks = (
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(self.respond(request, send)),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()  # a no-op for the one that finished
            if not all(task.done() for task in tasks):
                await asyncio.wait(tasks)  # a cancelled stream runs its `finally` (settlement) first
            request.close()  # the body file and uploads, also when no response was made
        for task in tasks:
            # RequestAborted: the client went away. Anything else (an AssertionError for an
            # unexpected ASGI message, a stream that raised after the headers were sent) goes to
            # the server, as with Django.
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, RequestAborted):
                raise error

    async def respond(self, request, send):
        response = await self.run_get_response(request)
        try:
            await self.send_response(response, send)
        finally:
            if response.streaming and response.is_async:
                # A disconnect usually cancels the stream while it awaits its upstream, and the
                # CancelledError unwinds every generator (their `finally` runs). If it lands in
                # send() instead, send_response only closes its own wrapper; close the view's
                # iterator too, now rather than when the garbage collector finalizes it. (An
                # iterator wrapping another must close that one itself, e.g. with aclosing.)
                aclose = getattr(getattr(response, "_iterator", None), "aclose", None)
                if aclose is not None:
                    await aclose()
            close_response(response)


def close_response(response) -> None:
    """HttpResponseBase.close() without its request_finished signal (whose receivers need a thread).

    The closers are the response's file-likes and `request.close` (added by get_response_async):
    plain close() calls that don't block. A sync streaming iterator would be closed here as well,
    but /v1 streams are async generators (closed in `respond`).
    """
    for closer in response._resource_closers:
        with suppress(Exception):
            closer()
    response._resource_closers.clear()
    response.closed = True


def has_body(scope) -> bool:
    """The request announces a body: chunked, or a Content-Length other than 0."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


def body_refusal(request, error: GatewayError):
    """An error answered before (or instead of) reading the body, in the caller's protocol shape."""
    from proxy.api import protocol_of
    from proxy.responses import Call, error_response

    return error_response(Call(request, protocol_of(request), endpoint="admission"), error)


async def admit_before_body(request):
    """Auth first (issue 12): a request with a body is authenticated from its headers, and a declared
    Content-Length over RUAPI_MAX_BODY_BYTES refused, before one byte of the body is read. Returns
    the refusal, or None; the KeyContext found is kept in the scope for proxy.auth.authenticate.

    Nothing new on the hot path: a valid cached key is a dict lookup, as in the handlers (which then
    reuse the context). Requests without a body (GET /v1/models, /v1/docs) are left to the handlers.
    """
    from proxy.auth import authenticate

    scope = request.scope
    if scope.get("ruapi.key_context") is not None or not has_body(scope):
        return None  # in-process callers (the playground) carry their context; no body, nothing to guard
    path = scope["path"]
    # The same headers the endpoints accept: x-api-key on /v1/messages* and /v1/models* (PROTOCOLS §0.1).
    allow_x_api_key = path.startswith(("/v1/messages", "/v1/models"))
    try:
        scope["ruapi.key_context"] = await authenticate(request, allow_x_api_key=allow_x_api_key)
    except GatewayError as exc:
        return body_refusal(request, exc)
    except Exception:  # e.g. the database is unreachable for an uncached key: the same 500 as the views'
        logger.exception("authentication failed before the body of %s", path)
        error = GatewayError(ErrorKind.API_ERROR, "The gateway failed to process the request.")
        return body_refusal(request, error)
    length = request.META.get("CONTENT_LENGTH", "")
    if length.isdigit() and int(length) > settings.RUAPI_MAX_BODY_BYTES:
        return body_refusal(request, GatewayError(ErrorKind.REQUEST_TOO_LARGE, "Request body is too large."))
    return None


async def read_body_bounded(receive, body_file, limit: int) -> None:
    """Django's ASGIHandler.read_body into `body_file`, stopping with RequestDataTooBig as soon as more
    than `limit` bytes arrived (a chunked body declares no length): nothing past it is kept."""
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise RequestDataTooBig()
        if chunk:
            body_file.write(chunk)
        if not message.get("more_body", False):
            break
    body_file.seek(0)


api_app = PublicAPIHandler()
observed_api_app = ObservedAPI(api_app)


async def _plain(send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"cache-control", b"no-store")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def ops_app(scope, receive, send):
    """Probes and metrics, answered before Django (they must work while the database is away).

    /livez: the process serves HTTP. /readyz: it should get traffic — false once it drains
    (ruapi/lifecycle.py) or while it knows the database is unreachable (ruapi/db.py).
    /metrics: Prometheus (ruapi/observability.py; loopback, or the bearer RUAPI_METRICS_TOKEN).
    """
    path = scope["path"]
    if path == "/livez":
        return await _plain(send, 200, b'{"status":"ok"}')
    if path == "/readyz":
        if lifecycle.is_draining():
            return await _plain(send, 503, b'{"status":"draining"}')
        if db.database_unreachable():
            return await _plain(send, 503, b'{"status":"database unreachable"}')
        return await _plain(send, 200, b'{"status":"ready"}')
    if not observability.metrics_allowed(scope, settings.RUAPI_METRICS_TOKEN):
        return await _plain(send, 403, b'{"error":"metrics: loopback or Authorization: Bearer RUAPI_METRICS_TOKEN"}')
    body = await db.run_db(observability.render_metrics)
    await _plain(send, 200, body, b"text/plain; version=0.0.4; charset=utf-8")


OPS_PATHS = frozenset(["/livez", "/readyz", "/metrics"])


async def http_app(scope, receive, send):
    path = scope["path"]
    if path.startswith("/v1/"):
        await observed_api_app(scope, receive, send)
    elif path in OPS_PATHS:
        await ops_app(scope, receive, send)
    else:
        await dashboard_app(scope, receive, send)


async def lifespan_app(scope, receive, send):
    """Accept the server's lifespan protocol (Django itself rejects it): this loop batches its ledger
    writes (billing/services/holds.py); on exit, pending stored-response writes finish and upstream
    pools and ledger connections close."""
    from billing.services import holds
    from proxy.response_store import responses_store_drain
    from proxy.router import router
    from proxy.upstreams.http import close_sessions

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await holds.enable_for_running_loop()
            router.watch()  # the shared circuit-breaker state, read in the background (proxy/router.py)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await responses_store_drain()  # stored responses still being written (proxy/response_store.py)
            await close_sessions()
            await holds.close_for_running_loop()
            observability.process_exited()
            await send({"type": "lifespan.shutdown.complete"})
            return


class ResponsesUpgradeRefusal:
    """WebSocket upgrades on the Responses API's paths get 426; every other path goes to `application`.

    Codex CLI's first attempt is `GET {base}/responses` with `Upgrade: websocket`. On a 426 it falls
    back to POST + SSE at once; a refused handshake (403), a reset or a timeout first spends its
    retry budget (PROTOCOLS-RESPONSES §4.2). So the answer is 426 with an O-shape error body and
    `Connection: close`, sent with the ASGI WebSocket Denial Response extension (uvicorn has it); a
    server without the extension can only refuse before accept, which its client sees as 403.
    Answered before the origin check and the session lookup: a fixed answer that shows nothing.
    """

    PATHS = frozenset({"/v1/responses", "/responses"})

    def __init__(self, application) -> None:
        self.application = application  # ruapi.tests.isolation.websocket_routes walks through this

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if path not in self.PATHS and path.rstrip("/") not in self.PATHS:
            return await self.application(scope, receive, send)
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close"})
            return
        error = GatewayError(
            ErrorKind.INVALID_REQUEST,
            "WebSocket transport is not supported here: send POST /v1/responses (with `stream: true` for "
            "Server-Sent Events).",
            code="websocket_not_supported",
            status=426,
        )
        body = orjson.dumps(openai_error_body(error))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        await send({"type": "websocket.http.response.start", "status": 426, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": ResponsesUpgradeRefusal(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
        "lifespan": lifespan_app,
    }
)
