"""One authenticated, held-for request to the upstreams: the route loop shared by every endpoint.

A client that goes away (issue 12 item 2) cancels the task running the view (ruapi/asgi.py): wherever
the cancellation lands — waiting for the upstream's headers, reading its JSON body, before a stream's
first byte or in the middle of it — the upstream connection is closed at once and the request is
settled before the task ends: what reached the gateway is billed (a stream: what it relayed; a
request whose answer had not arrived: nothing, PROTOCOLS G7), the rest of the hold released, and the
usage event says `client_disconnected`. No hold waits for RUAPI_HOLD_TTL.

An optimistic hold (proxy/metering.py PendingHold) is confirmed once the upstream's headers are in —
before a body is read or a response built, so before any byte of the answer — and before any
settlement. Refused (402) while the upstream call is still waiting, it cancels that call at once;
refused after, it closes the reply. One exception: a complete (non-streamed) answer whose settlement
overlaps it need not wait for a hold still being written when the upstream's headers come — its
settlement confirms the hold, or holds the answer's actual cost if it was refused
(`PendingHold.confirmed_at_settlement`, metering `_hold_after_answer`). A request that ends before
its hold is written discards it: released once written, its spend-cap reservation given back, no
usage event (as a client that left during a hold today).
"""

import asyncio
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

from accounts.keycache import KeyContext
from billing.services import HeldFunds
from catalog.snapshot import ModelSpec, RouteSpec
from proxy import metering
from proxy.responses import Call, error_response
from proxy.router import Router, Slot, router
from proxy.translate.errors import ErrorKind, GatewayError, upstream_http_error
from ruapi import observability
from ruapi.compat.django_asgi import async_stream_source

HOLD_TTL_MARGIN_SECONDS = 60  # a request ends this long before its hold could expire (at most a tenth of the TTL)


def retry_after_seconds(headers) -> int | None:
    value = headers.get("retry-after")
    if value and value.strip().isdigit():
        return int(value.strip())
    return None


class Exchange:
    """Subclasses say how to build the upstream request (`convert`), send it, and answer (`respond`).

    Routes are tried in the router's order; a connect error, a timeout, a 429 or a 5xx falls back
    to the next route — always before any byte reached the client (PROTOCOLS G4) — and counts
    against the route's circuit breaker. Routes at their concurrency/RPM cap are skipped.
    """

    is_stream = False
    router: Router = router
    CLIENT_GONE_STATUS = 499  # the usage event's status for a client that left before any answer (nginx's)

    def __init__(self, call: Call, key: KeyContext, spec: ModelSpec, hold: HeldFunds | metering.PendingHold) -> None:
        self.call = call
        self.key = key
        self.spec = spec
        self.hold = hold
        self.settled = False  # set by settle(): a request is settled once
        self._reply = None  # the upstream reply of the current attempt, closed if the client leaves
        self._route: RouteSpec | None = None
        self._attempts = 0

    def routes(self) -> list[RouteSpec]:
        return self.router.plan(self.spec)

    def convert(self, route: RouteSpec):
        raise NotImplementedError

    async def send(self, route: RouteSpec, conversion):
        raise NotImplementedError

    async def respond(self, reply, route: RouteSpec, conversion, attempts: int) -> HttpResponse:
        raise NotImplementedError

    async def run(self) -> HttpResponse:
        """The route loop; a cancellation (the client left) settles before it propagates, and a request
        still waiting for its answer when its hold could expire is ended (see `seconds_left`)."""
        deadline = asyncio.timeout(self.seconds_left())
        try:
            async with deadline:
                return await self._run()
        except TimeoutError:
            if not deadline.expired():
                await self.abandon()
                raise
            return await self.out_of_time()
        except BaseException:  # asyncio.CancelledError above all; a bug too must not leave the hold
            await self.abandon()
            raise

    def seconds_left(self) -> float:
        """Time this request may still run: its hold must be settled before the expiry task may release
        it (RUAPI_HOLD_TTL, counted here from the request's start, before the hold was made), or the debit
        could land on money the organisation was free to spend again (issue 12). Less a margin: a
        tenth of the TTL, at most HOLD_TTL_MARGIN_SECONDS."""
        ttl = settings.RUAPI_HOLD_TTL
        margin = min(HOLD_TTL_MARGIN_SECONDS, ttl / 10)
        return max(ttl - margin - (time.perf_counter() - self.call.started), 0.0)

    async def out_of_time(self) -> HttpResponse:
        """The answer did not come before the hold could expire: cancel the upstream, bill nothing."""
        if self._reply is not None:
            self._reply.close()
        error = GatewayError(ErrorKind.TIMEOUT, "The upstream did not answer within the gateway's time limit.")
        if self.settled:
            return error_response(self.call, error)
        return await self.fail(error, route=self._route, attempts=self._attempts)

    async def abandon(self) -> None:
        """The client is gone before an answer was made: close the upstream, settle what was produced."""
        if self._reply is not None:
            self._reply.close()
        if self.settled:
            return
        if isinstance(self.hold, metering.PendingHold):  # nothing of the answer was produced yet
            written = self.hold.written()
            if written is None:  # still being written (released once written), refused or failed
                self.hold.discard()
                self.settled = True  # nothing to settle
                return
            self.hold = written
        outcome = metering.Outcome(
            status_code=self.CLIENT_GONE_STATUS,
            error_type="client_disconnected",
            route=self._route,
            attempts=self._attempts,
            is_stream=self.is_stream,
        )
        await asyncio.shield(self.settle(outcome))

    async def _run(self) -> HttpResponse:
        routes = self.routes()
        if not routes:
            error = GatewayError(ErrorKind.UPSTREAM_ERROR, f"No provider is available for `{self.spec.name}`.")
            return await self.fail(error, route=None, attempts=0)
        error: GatewayError | None = None
        attempts = 0
        last_route: RouteSpec | None = None
        for route in routes:
            slot = await self.router.claim(route)
            if slot is None:  # at its concurrency or RPM cap in this process
                continue
            attempts += 1
            last_route = self._route = route
            self._attempts = attempts
            try:
                conversion = self.convert(route)
            except GatewayError as exc:  # the client's request cannot be expressed upstream
                slot.release()
                return await self.fail(exc, route=route, attempts=attempts)
            sent_at = time.perf_counter()
            try:
                with observability.attempt_span(route, attempts):
                    reply = self._reply = await self._send(route, conversion)
            except metering.HoldRefused as exc:  # the upstream call was cancelled
                slot.release()
                return self.refused(exc)
            except GatewayError as exc:  # connect error or timeout: nothing reached the client yet
                self.call.upstream_seconds += time.perf_counter() - sent_at
                self.router.failed(route)
                slot.release()
                error = exc
                continue
            except BaseException:  # the client left while the upstream had not answered
                slot.release()
                raise
            self.call.upstream_seconds += reply.headers_at - reply.started
            if not reply.ok:
                try:
                    payload = await reply.json()
                except BaseException:
                    slot.release()
                    raise
                self.call.upstream_seconds += time.perf_counter() - reply.headers_at
                error = upstream_http_error(
                    reply.status, payload, route.provider.protocol, retry_after=retry_after_seconds(reply.headers),
                    request=getattr(self, "body", None), secrets=route.provider.api_keys,
                )  # fmt: skip
                slot.release()
                if reply.status == 429 or reply.status >= 500:
                    self.router.failed(route)
                    continue
                return await self.fail(error, route=route, attempts=attempts)
            self.router.succeeded(route)
            try:
                if not self.hold_confirmed_at_settlement():
                    await self.confirm_hold()  # no byte of the answer is read or sent before
            except metering.HoldRefused as exc:
                reply.close()
                slot.release()
                return self.refused(exc)
            except BaseException:
                slot.release()
                raise
            try:
                response = await self.respond(reply, route, conversion, attempts)
            except BaseException:
                slot.release()
                raise
            return self._release_when_done(response, slot, attempts)
        if error is None:  # every route was at its cap: nothing was tried
            error = GatewayError(
                ErrorKind.RATE_LIMIT, f"Every provider of `{self.spec.name}` is at capacity; retry shortly.",
                retry_after=1,
            )  # fmt: skip
        return await self.fail(error, route=last_route, attempts=attempts)

    async def _send(self, route: RouteSpec, conversion):
        """`send`; while an optimistic hold is being written its refusal cancels the call at once and
        is raised here (HoldRefused, or the database's error) instead of the cancellation."""
        pending = self.hold if isinstance(self.hold, metering.PendingHold) and not self.hold.done() else None
        if pending is None:
            return await self.send(route, conversion)
        sending = asyncio.ensure_future(self.send(route, conversion))

        def stop(task: asyncio.Task) -> None:
            if pending.written() is None:
                sending.cancel()

        pending.task.add_done_callback(stop)
        try:
            return await sending  # a cancellation of this task (the client left) cancels `sending` too
        except asyncio.CancelledError:
            if sending.cancelled() and pending.done() and not asyncio.current_task().cancelling():
                await pending.confirm()  # raises why the hold was not written
            raise
        finally:
            pending.task.remove_done_callback(stop)

    def hold_confirmed_at_settlement(self) -> bool:
        """A complete answer may be read and sent while its optimistic hold is still being written
        (metering.PendingHold.confirmed_at_settlement); a stream is confirmed before its first byte."""
        pending = isinstance(self.hold, metering.PendingHold)
        return pending and not self.is_stream and self.hold.confirmed_at_settlement()

    async def confirm_hold(self) -> None:
        """An optimistic hold is awaited (normally written long before); raises HoldRefused or the
        database's error as a hold that is not written."""
        if isinstance(self.hold, metering.PendingHold):
            self.hold = await self.hold.confirm()

    def refused(self, error: metering.HoldRefused) -> HttpResponse:
        """The optimistic hold was refused: 402 as for a refused hold; nothing was held, so nothing is
        settled or recorded (a refused hold writes no usage event)."""
        self.settled = True
        return error_response(self.call, error)

    def _release_when_done(self, response: HttpResponse, slot: Slot, attempts: int) -> HttpResponse:
        """Hold the route's concurrency slot until the body is sent (a stream holds it while it runs)."""
        response["x-ruapi-attempts"] = str(attempts)
        if isinstance(response, StreamingHttpResponse) and response.is_async:
            # The view's own generator (whose `finally` settles a started stream) besides Django's
            # make_bytes wrapper around it: closing the wrapper does not close what it iterates.
            source = async_stream_source(response)
            response.streaming_content = StreamGuard(response.streaming_content, source, slot, self)
        else:
            slot.release()
        return response

    async def fail(self, error: GatewayError, *, route: RouteSpec | None, attempts: int) -> HttpResponse:
        """Nothing was produced: release the hold (cost 0), record the failure, answer the error."""
        try:
            await self.confirm_hold()
        except metering.HoldRefused as exc:  # refused rather than failed upstream: the refusal's 402
            return self.refused(exc)
        outcome = metering.Outcome(
            status_code=error.status_for(self.call.protocol),
            error_type=str(error.kind),
            route=route,
            attempts=attempts,
            is_stream=self.is_stream,
        )
        await self.settle(outcome)
        response = error_response(self.call, error)
        response["x-ruapi-attempts"] = str(attempts)
        return response

    async def settle(self, outcome: metering.Outcome, *, overlap: bool = False) -> int:
        """Settle this request once (metering.settle); returns what was debited. `overlap`: the caller
        sends a complete answer next, which may leave while the settlement commits."""
        self.settled = True
        if not overlap:  # an overlapping settlement confirms a hold still being written (metering.settle)
            await self.confirm_hold()  # a guard: every other path confirmed it already (`_run`, `fail`, `abandon`)
        return await metering.settle(self.call, self.key, self.hold, self.spec, outcome, overlap=overlap)

    async def read_json(self, reply, route: RouteSpec, attempts: int) -> dict | None:
        """A 2xx JSON body, or None after answering the failure (malformed or an error body)."""
        data = await reply.json()
        self.call.upstream_seconds += time.perf_counter() - reply.headers_at
        if data is None or isinstance(data.get("error"), dict) or data.get("type") == "error":
            return None
        if not self.is_answer(data, route):  # valid JSON, but not a reply of this kind (nothing to bill)
            return None
        return data

    def is_answer(self, data: dict, route: RouteSpec) -> bool:
        """Whether a 2xx JSON object is a reply of the kind asked for (subclasses check their shape)."""
        return True

    def unreadable(self, reply) -> GatewayError:
        """What the client is told about a 2xx body that could not be used: why it could not be read
        (too large, timed out, broken — set by the reply), else an invalid response."""
        return getattr(reply, "error", None) or self.invalid_reply()

    def invalid_reply(self) -> GatewayError:
        return GatewayError(ErrorKind.UPSTREAM_ERROR, "The upstream provider sent an invalid response.")


class StreamGuard:
    """A streamed body that releases its route slot when it ends, and settles its request even when it
    is closed before it started: a client that left between the response's creation and its first
    chunk (ruapi/asgi.py closes the iterator then) never runs the stream's own `finally`, which is
    where a started stream bills what it relayed."""

    def __init__(self, content: AsyncIterator[bytes], source: AsyncIterator, slot: Slot, exchange: Exchange) -> None:
        self._content = content
        self._source = source
        self._slot = slot
        self._exchange = exchange
        self._deadline = asyncio.get_running_loop().time() + exchange.seconds_left()

    def __aiter__(self) -> "StreamGuard":
        return self

    async def __anext__(self) -> bytes:
        deadline = asyncio.timeout_at(self._deadline)
        try:
            async with deadline:
                return await anext(self._content)
        except TimeoutError:
            # Still streaming when its hold could expire (Exchange.seconds_left): the cancellation ran the
            # stream's `finally`, which billed what was relayed; the client sees a cut stream.
            await self.aclose()
            if deadline.expired():
                raise StopAsyncIteration from None
            raise
        except BaseException:  # the end (StopAsyncIteration), a failure or a cancellation
            await self.aclose()
            raise

    async def aclose(self) -> None:
        try:
            for iterator in (self._content, self._source):
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
        finally:
            self._slot.release()
            if not self._exchange.settled:
                await self._exchange.abandon()
