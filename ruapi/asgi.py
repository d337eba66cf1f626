"""ASGI entry point: `ruapi.asgi:application` (HTTP and WebSocket).

HTTP under /v1/ goes to a Django handler built with settings.API_MIDDLEWARE only: the dashboard's
middleware is sync-style and would cost every proxied request several thread hops. That handler
also skips the per-request thread machinery of Django's ASGIHandler (ruapi/compat/django_asgi.py).
"""

import logging
import os
import tempfile

import orjson
from asgiref.sync import markcoroutinefunction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ruapi.settings")

from django.core.asgi import get_asgi_application

dashboard_app = get_asgi_application()  # sets Django up; import models only after this

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import RequestAborted, RequestDataTooBig  # noqa: E402

from proxy.translate.errors import ErrorKind, GatewayError, openai_error_body  # noqa: E402
from ruapi import db, lifecycle, observability  # noqa: E402
from ruapi.compat.django_asgi import LeanASGIHandler, read_body_bounded, use_script_prefix  # noqa: E402
from ruapi.observability import ObservedAPI  # noqa: E402
from ruapi.routing import websocket_urlpatterns  # noqa: E402

logger = logging.getLogger(__name__)


class AllowedHost:
    """ALLOWED_HOSTS for /v1, the outermost layer of its (otherwise empty) middleware stack.

    The dashboard gets it from CommonMiddleware's request.get_host(). /v1 builds no absolute URLs,
    but the setting is the operator's list of names this site answers to (DNS rebinding); a bad Host
    gets Django's usual 400 (DisallowedHost through convert_exception_to_response). A few µs.
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        request.get_host()
        return await self.get_response(request)


class PublicAPIHandler(LeanASGIHandler):
    """Django's ASGI handler for /v1: the lean API middleware stack, no per-request threads or request
    signals (ruapi/compat/django_asgi.py says why and what that relies on), and the caller admitted
    from its headers before its body is read (issue 12).

    /v1 never touches the ORM on the event-loop thread (every query goes through `ruapi.db.run_db`,
    which hands its connection back after each call), so the request signals' receivers have nothing
    to do here; Django's disconnect handling and exception conversion are kept (ninja's own handler
    answers protocol-shaped 500s before that).
    """

    def middleware(self) -> list[str]:
        return ["ruapi.asgi.AllowedHost", *settings.API_MIDDLEWARE]

    async def handle(self, scope, receive, send):
        """The request built from its headers, the caller authenticated before any of its body is read,
        and the body bounded; then served as Django does (LeanASGIHandler.serve)."""
        use_script_prefix(scope)
        # The body goes into Django's spooled file (in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, then
        # on disk), but only once the request was admitted, and never past RUAPI_MAX_BODY_BYTES.
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed with the request: request.close())
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        request, error_response = self.create_request(scope, body_file)  # the request reads no body yet
        if request is None:
            body_file.close()
            await self.send_refusal(error_response, send)
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
            await self.send_refusal(refusal, send)
            return
        # A client that hangs up cancels the view; a stream's `finally` then settles what was
        # produced and closes the upstream (proxy/exchange.py) before serve() returns.
        await self.serve(request, receive, send)


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
    writes (billing/services/holds.py); on exit, settlements and stored-response writes finish and upstream
    pools and ledger connections close."""
    from billing.services import holds
    from proxy.metering import settlements_drain
    from proxy.response_store import responses_store_drain
    from proxy.router import router
    from proxy.upstreams.http import close_sessions

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await holds.enable_for_running_loop()
            router.watch()  # the shared circuit-breaker state, read in the background (proxy/router.py)
            lifecycle.heap_freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await settlements_drain()  # settlements of answers already sent (proxy/metering.py)
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
