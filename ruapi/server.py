"""The HTTP protocol the gateway's uvicorn runs: uvicorn's httptools protocol plus the limits it lacks.

    uvicorn ruapi.asgi:application --loop uvloop --http ruapi.server:GuardedHttpToolsProtocol

What stock uvicorn (0.54, `--http httptools`) does with a hostile client, measured on raw sockets
(proxy/tests/reliability/test_server_limits.py):

- no limit on the size of a request head: httptools buffers a 20 MB header line and the request
  is served (`h11_max_incomplete_event_size` applies to h11 only);
- no deadline for a request head: a client that sends one header byte a second (slowloris), or
  connects and sends nothing, holds its connection forever — `timeout_keep_alive` only runs
  between two requests of a connection;
- no deadline for a request body either: a body trickled a byte at a time holds the connection
  and the request's task for as long as the client likes.

GuardedHttpToolsProtocol adds, per connection and with no task of its own (loop.call_later handles
only: one head timer per connection that re-arms itself, and a body timer only for slow bodies):

- RUAPI_HEADER_TIMEOUT: a request head must be complete within that many seconds of the
  connection being made (or, on a kept-alive connection, of the first byte of the next request);
  past it the connection gets 408 (or is just closed if nothing arrived) and is closed;
- RUAPI_MAX_HEADER_BYTES: a head that grows past it gets 431 and the connection is closed (counted
  per read of the socket while the head is incomplete; when one large read completes the head, the
  head itself is measured before the request is served);
- RUAPI_BODY_TIMEOUT / RUAPI_BODY_MIN_RATE: a body still incomplete after the bytes at hand must
  deliver RUAPI_BODY_MIN_RATE x RUAPI_BODY_TIMEOUT bytes (or its end) within every
  RUAPI_BODY_TIMEOUT seconds — a slow but steady upload keeps going, one that stalls or trickles
  is cut off within RUAPI_BODY_TIMEOUT seconds of its last full window: 408 and close. (Before
  issue 12 each byte received bought 1/RUAPI_BODY_MIN_RATE seconds more, so a client that sent
  30 MB at once had earned 8 hours of silence.) A request whose body arrives with its head, as
  nearly every API call does, never arms this timer;
- a response sent before its request's body was read to the end (the /v1 handler refuses a
  missing key or an oversized body from the headers, ruapi/asgi.py) closes the connection: the
  rest of the body is never read;
- RUAPI_MAX_BODY_BYTES outside /v1 (the dashboard; /v1 answers in its callers' protocol shape
  itself): a declared Content-Length over it is 413 at once, a chunked body 413 once past it;
- RUAPI_TRUSTED_PROXIES: X-Forwarded-For is used only when the peer is one of these addresses or
  networks (default: none); otherwise it is removed before the application (and uvicorn's
  --proxy-headers middleware, which trusts 127.0.0.1 by default) sees it, so the key-guessing
  throttle and IP allowlists count the real peer whatever flags uvicorn was started with.

A response in flight is never interrupted by these timers: a head deadline that falls while the
previous request's response is still being sent is pushed back.
"""

from __future__ import annotations

import functools
import ipaddress
from asyncio import TimerHandle, Transport

from ruapi.compat.uvicorn_http import HttpToolsHooks

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _setting(name: str, default: float) -> float:
    """The Django setting (so tests can override it), or the default outside Django."""
    from django.conf import settings

    return getattr(settings, name, default) if settings.configured else default


@functools.lru_cache(maxsize=8)
def trusted_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """RUAPI_TRUSTED_PROXIES parsed: addresses or CIDR networks (a bad entry fails loudly)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    raw = value.strip()
    if raw.startswith("[") and "]" in raw:  # [v6]:port
        raw = raw[1 : raw.index("]")]
    elif raw.count(":") == 1:  # v4:port
        raw = raw.split(":")[0]
    try:
        address = ipaddress.ip_address(raw.split("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address.version == net.version and address in net for net in networks)


def forwarded_client(peer: str | None, forwarded_for: list[bytes], networks: tuple[Network, ...]) -> str | None:
    """The client address X-Forwarded-For names, when `peer` is a trusted proxy: the right-most entry
    that is not itself a trusted proxy (entries left of it were written by the client and prove
    nothing). None when the peer is not trusted or the header names nothing usable."""
    if not networks or not _is_trusted(_address(peer or ""), networks):
        return None
    entries = [item for value in forwarded_for for item in value.decode("latin1").split(",")]
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            return None  # garbage in the chain: do not guess past it
        if not _is_trusted(address, networks):
            return str(address)
    return None


class GuardedHttpToolsProtocol(HttpToolsHooks):
    """uvicorn's httptools protocol with head/body deadlines and a head size limit (module docstring).

    It reaches uvicorn's internals only through HttpToolsHooks (ruapi/compat/uvicorn_http.py)."""

    def shutdown(self) -> None:
        """uvicorn asks every connection to finish (SIGTERM): the process starts draining (ruapi/lifecycle.py)."""
        from ruapi import lifecycle

        lifecycle.drain_begin()
        super().shutdown()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = float(_setting("RUAPI_HEADER_TIMEOUT", 10.0))
        self.max_header_bytes = int(_setting("RUAPI_MAX_HEADER_BYTES", 64 * 1024))
        self.body_timeout = float(_setting("RUAPI_BODY_TIMEOUT", 30.0))
        self.body_min_rate = max(int(_setting("RUAPI_BODY_MIN_RATE", 1024)), 1)
        self.max_body_bytes = int(_setting("RUAPI_MAX_BODY_BYTES", 32 * 1024 * 1024))
        self.trusted_proxies = trusted_networks(tuple(_setting("RUAPI_TRUSTED_PROXIES", ())))
        self._reading_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._head_started: float | None = None  # loop time the current head began (None: none begun)
        self._head_timer: TimerHandle | None = None
        self._in_body = False  # the head is complete, the body is not
        # The body's progress: the current window began at _window_start and has had _window_bytes;
        # RUAPI_BODY_MIN_RATE x RUAPI_BODY_TIMEOUT bytes open the next window.
        self._window_quota = max(int(self.body_min_rate * self.body_timeout), 1)
        self._window_start = 0.0
        self._window_bytes = 0
        self._body_limit: int | None = None  # payload cap enforced here (outside /v1), None: the app's
        self._body_payload = 0
        self._body_timer: TimerHandle | None = None

    # -- connection -------------------------------------------------------------------------------

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.header_timeout > 0:
            # The deadline runs from now, so it also bounds a connection that never sends a byte.
            self._head_started = self.loop.time()
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
            if self._head_started is None:
                self._head_started = self.loop.time()
            super().data_received(data)
            if self._reading_head and self._head_bytes > self.max_header_bytes:
                self._refuse(431, "Request header fields too large.")
                return
        else:
            self._window_bytes += len(data)
            if self._window_bytes >= self._window_quota:
                self._window_start = self.loop.time()
                self._window_bytes = 0
            super().data_received(data)
        if self.transport.get_protocol() is not self:  # upgraded to a WebSocket: no longer ours to time
            self._in_body = self._reading_head = False
            self._cancel_timers()
            return
        if self._in_body and self._body_timer is None and self.body_timeout > 0 and not self.transport.is_closing():
            self._window_start = self.loop.time()  # the head completed in this read (or an earlier one)
            self._window_bytes = 0
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_deadline)

    # -- parser callbacks -------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_started = None
        if self.transport.is_closing():
            return  # refused: whatever else this read holds is not served
        if self._head_bytes > self.max_header_bytes and self._head_size() > self.max_header_bytes:
            # The read that completed the head was large: measure the head itself before serving it.
            self._refuse(431, "Request header fields too large.")
            return
        self._forwarded_headers()
        self._in_body = True
        self._body_payload = 0
        self._body_limit = None
        if not self.request_target().startswith(b"/v1/"):
            self._body_limit = self.max_body_bytes
            length = next((value for name, value in self.request_headers() if name == b"content-length"), b"")
            if length.strip().isdigit() and int(length) > self.max_body_bytes:
                self._in_body = False
                self._refuse(413, "Request body too large.")
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._in_body:
            self._body_payload += len(body)
            if self._body_limit is not None and self._body_payload > self._body_limit:
                self._in_body = False
                self._refuse(413, "Request body too large.")
                return
            super().on_body(body)

    def on_response_complete(self) -> None:
        if self._in_body and self.response_complete() and not self.transport.is_closing():
            # Answered before the body was read to its end (auth or size refused from the headers):
            # reading the rest would be work for a request that is over, so the connection ends here.
            self._in_body = False
            self._cancel_timers()
            self.transport.close()
        super().on_response_complete()

    def _forwarded_headers(self) -> None:
        """Apply X-Forwarded-For from a trusted proxy, and remove it from every request (module docstring)."""
        headers = self.request_headers()
        forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
        if not forwarded:
            return
        client = forwarded_client(self.peer_host(), forwarded, self.trusted_proxies)
        if client is not None:
            self.set_client_host(client)
        headers[:] = [(name, value) for name, value in headers if name != b"x-forwarded-for"]  # the scope's list

    def on_message_complete(self) -> None:
        if not self._in_body:
            return  # a refused request
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._reading_head = True  # whatever comes next starts another request
        self._head_bytes = 0
        super().on_message_complete()

    def _head_size(self) -> int:
        headers = self.request_headers()
        return len(self.request_target()) + sum(len(name) + len(value) + 4 for name, value in headers) + 16

    # -- deadlines --------------------------------------------------------------------------------

    def _head_deadline(self) -> None:
        """One timer per connection, re-armed rather than created per request: it checks the head in
        progress, if any, and sleeps until that head's deadline or for another full period."""
        self._head_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        started = self._head_started
        if started is not None and self._reading_head and not self.response_in_flight():
            if now - started >= self.header_timeout:
                if self._head_bytes:
                    self._refuse(408, "Request header timeout.")
                else:
                    self.transport.close()  # an idle connection: nothing to answer
                return
            delay = started + self.header_timeout - now
        else:  # no head in progress, or bytes of a next request while a response is in flight
            delay = self.header_timeout
        self._head_timer = self.loop.call_later(delay, self._head_deadline)

    def _body_deadline(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.app_paused_reading():  # the application is not reading yet: the silence is ours, not the client's
            self._window_start = now
        remaining = self._window_start + self.body_timeout - now
        if remaining > 0:  # the body is still arriving fast enough
            self._body_timer = self.loop.call_later(remaining, self._body_deadline)
            return
        self.logger.warning("Request body too slow: connection closed.")
        self._refuse(408, "Request body timeout.")

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with `connection: close` and close — unless a response already started
        on this connection (only its own client is cut off then)."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        if not self.response_started():
            self.transport.write(self.plain_response(status, message))
        self.transport.close()
