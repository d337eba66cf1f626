"""Django's ASGI request cycle without per-request threads (checked against Django 5.2.19).

Why: Django's `ASGIHandler.__call__` enters a `ThreadSensitiveContext` and dispatches
`request_started` / `request_finished` with `asend`, whose sync receivers (reset_queries,
close_old_connections, close_caches) and the final `sync_to_async(response.close)` each run in that
context's new one-thread executor — two OS threads started and joined per request (asgiref 3.13),
~0.5–1 ms of event-loop CPU and TTFB (bench/results/profile-S2.md, profile-S3.md). None of that has
work to do on /v1: it never touches the ORM on the event-loop thread (ruapi.db.run_db hands its
connection back after each call) and uses no Django cache. And /v1 reads a request's body only
after the caller was admitted from its headers (issue 12), which `ASGIHandler.handle` cannot do.

What this relies on (ruapi/tests/test_framework_assumptions.py checks each):

- ASGIHandler's undocumented methods `create_request(scope, body_file)` -> (request, error_response),
  `run_get_response(request)`, `send_response(response, send)` and `listen_for_disconnect(receive)`
  (raises RequestAborted on http.disconnect), with their current behaviour; `__call__`, `handle` and
  `read_body` are re-implemented here from their 5.2.19 source (fingerprints in COPIED_FROM).
- `get_script_prefix(scope)` in django.core.handlers.asgi.
- `HttpResponseBase._resource_closers`: what `close()` runs besides sending request_finished
  (file-likes, and `request.close` added by `BaseHandler.get_response_async`).
- `StreamingHttpResponse._iterator`: for an async stream, the view's own async iterator;
  `streaming_content` wraps it, and closing the wrapper does not close it (Django never calls
  `aclose`, as `_set_streaming_content` only registers a `close`).
"""

import asyncio
from contextlib import suppress

from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.test.utils import override_settings
from django.urls import set_script_prefix

# The Django code this module copies or whose behaviour it leans on: sha256 of its source (first 16
# hex digits) in the version checked. A mismatch means: compare the upstream change with this module.
COPIED_FROM = {
    "django.core.handlers.asgi.ASGIHandler.__call__": "f756809e9c9308dc",
    "django.core.handlers.asgi.ASGIHandler.handle": "98faeb5bef800331",
    "django.core.handlers.asgi.ASGIHandler.read_body": "cf4aa904631d5410",
    "django.core.handlers.asgi.ASGIHandler.listen_for_disconnect": "c729aa315c734f98",
    "django.core.handlers.asgi.ASGIHandler.run_get_response": "0234ea5fe09a5777",
    "django.core.handlers.asgi.ASGIHandler.create_request": "5eae59c6696013ff",
    "django.core.handlers.asgi.ASGIHandler.send_response": "77eda2b08689b44e",
    "django.core.handlers.asgi.get_script_prefix": "bd6e761a557ee4c5",
    "django.core.handlers.base.BaseHandler.get_response_async": "ad82c920df0cebbb",
    "django.http.response.HttpResponseBase.close": "84589f5b23acbb23",
    "django.http.response.StreamingHttpResponse._set_streaming_content": "c11520c56e73d757",
}


def use_script_prefix(scope) -> None:
    """As ASGIHandler.handle: URL reversing in this request uses the scope's root_path (or FORCE_SCRIPT_NAME)."""
    set_script_prefix(get_script_prefix(scope))


class LeanASGIHandler(ASGIHandler):
    """ASGIHandler with `middleware()` as its middleware stack, no ThreadSensitiveContext and no request
    signals. A subclass's `handle` builds the request (`create_request`, reading the body with
    `read_body_bounded` when it chooses) and hands it to `serve`."""

    def middleware(self) -> list[str]:
        """Dotted paths of the middleware, outermost first (instead of settings.MIDDLEWARE)."""
        return []

    def load_middleware(self, is_async=False):
        with override_settings(MIDDLEWARE=self.middleware()):
            super().load_middleware(is_async=is_async)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)  # no ThreadSensitiveContext (module docstring)

    async def serve(self, request, receive, send) -> None:
        """The rest of ASGIHandler.handle, for a request whose body was read.

        As Django: the response is produced and sent in a task while another waits for
        http.disconnect; a client that hangs up cancels the first, so a view still waiting for its
        upstream, or a stream between two chunks, stops there and its `finally` runs. Tasks, not
        threads. The request is closed (body file, uploads) in every case."""
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
                await asyncio.wait(tasks)  # a cancelled stream runs its `finally` first
            request.close()  # the body file and uploads, also when no response was made
        for task in tasks:
            # RequestAborted: the client went away. Anything else (an AssertionError for an
            # unexpected ASGI message, a stream that raised after the headers were sent) goes to
            # the server, as with Django.
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, RequestAborted):
                raise error

    async def respond(self, request, send) -> None:
        response = await self.run_get_response(request)
        try:
            await self.send_response(response, send)
        finally:
            # A disconnect usually cancels the stream while it awaits its upstream, and the
            # CancelledError unwinds every generator (their `finally` runs). If it lands in send()
            # instead, send_response only closes its own wrapper; close the view's iterator too,
            # now rather than when the garbage collector finalizes it. (An iterator wrapping
            # another must close that one itself, e.g. with aclosing.)
            aclose = getattr(async_stream_source(response), "aclose", None)
            if aclose is not None:
                await aclose()
            close_response(response)

    async def send_refusal(self, response, send) -> None:
        """Send a response made without running the view (a refusal, a bad request) and close it."""
        await self.send_response(response, send)
        close_response(response)


def async_stream_source(response):
    """The async iterator an async StreamingHttpResponse was given (not Django's make_bytes wrapper
    that `streaming_content` returns, whose closing does not close it); None for any other response."""
    if getattr(response, "streaming", False) and getattr(response, "is_async", False):
        return response._iterator
    return None


def close_response(response) -> None:
    """HttpResponseBase.close() without its request_finished signal (whose receivers need a thread).

    The closers are the response's file-likes and `request.close` (added by get_response_async):
    plain close() calls that don't block. A sync streaming iterator would be closed here as well,
    but /v1 streams are async generators (closed in `LeanASGIHandler.respond`).
    """
    for closer in response._resource_closers:
        with suppress(Exception):
            closer()
    response._resource_closers.clear()
    response.closed = True


async def read_body_bounded(receive, body_file, limit: int) -> None:
    """ASGIHandler.read_body into `body_file`, stopping with RequestDataTooBig as soon as more than
    `limit` bytes arrived (a chunked body declares no length): nothing past it is kept. RequestAborted
    when the client leaves first."""
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
