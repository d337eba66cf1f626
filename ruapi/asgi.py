"""ASGI entry point: `ruapi.asgi:application` (HTTP and WebSocket).

HTTP under /v1/ goes to a Django handler built with settings.API_MIDDLEWARE only: the dashboard's
middleware is sync-style and would cost every proxied request several thread hops. That handler
also skips the per-request thread machinery of Django's ASGIHandler (see PublicAPIHandler).
"""

import asyncio
import os
from contextlib import suppress

import orjson

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ruapi.settings")

from django.core.asgi import get_asgi_application

dashboard_app = get_asgi_application()  # sets Django up; import models only after this

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from proxy.translate.errors import ErrorKind, GatewayError, openai_error_body  # noqa: E402
from ruapi.routing import websocket_urlpatterns  # noqa: E402


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
        """ASGIHandler.handle minus request_started/request_finished and sync_to_async(close)."""
        # Django's spooled body file; DATA_UPLOAD_MAX_MEMORY_SIZE is enforced when the pipeline
        # reads request.body (RequestDataTooBig, which it answers with a protocol-shaped 413).
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:  # the client left before the body was complete
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            close_response(error_response)
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


api_app = PublicAPIHandler()


async def http_app(scope, receive, send):
    app = api_app if scope["path"].startswith("/v1/") else dashboard_app
    await app(scope, receive, send)


async def lifespan_app(scope, receive, send):
    """Accept the server's lifespan protocol (Django itself rejects it): this loop batches its ledger
    writes (billing/services/batched.py); on exit, pending stored-response writes finish and upstream
    pools and ledger connections close."""
    from billing.services import batched
    from proxy.response_store import responses_store_drain
    from proxy.upstreams.http import close_sessions

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            batched.enable_for_running_loop()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await responses_store_drain()  # stored responses still being written (proxy/response_store.py)
            await close_sessions()
            await batched.close_for_running_loop()
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
