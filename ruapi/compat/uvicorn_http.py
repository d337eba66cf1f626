"""uvicorn's httptools protocol, as ruapi/server.py extends it (checked against uvicorn 0.55.0,
httptools 0.9.0).

Why: uvicorn has no deadline for a request head or body and no head size limit with httptools
(`h11_max_incomplete_event_size` is h11's), and its --proxy-headers trusts 127.0.0.1 by default;
ruapi/server.py adds them per connection (proxy/tests/reliability/test_server_limits.py). uvicorn has
no public extension point for that: `--http` takes a protocol class, so the guard subclasses its own.

`HttpToolsHooks` is that base class with the per-connection state the guard reads under names of
ours; ruapi/server.py touches uvicorn through it only (and the attributes `loop`, `transport` and
`logger`, set by uvicorn, which it documents as its interface). What this relies on
(ruapi/tests/test_framework_assumptions.py checks each):

- the constructor `(config, server_state, app_state, _loop=None)`, called by uvicorn per connection;
- the methods the guard overrides, each extended by calling super() (OVERRIDDEN): asyncio's
  connection_made / connection_lost / data_received; httptools' parser callbacks
  on_headers_complete (builds the ASGI scope's path and starts the request's task: the guard
  edits headers before calling it), on_body, on_message_complete; uvicorn's on_response_complete
  (a request's response is complete) and shutdown (the server's graceful-shutdown call);
- per connection: `client` (the TCP peer), `flow.read_paused`, `server_state.default_headers`;
  per request: `url`, `headers` (the very list in `scope["headers"]`, so it is edited in place),
  `scope`, `cycle.response_started` / `cycle.response_complete`;
- `STATUS_LINE[status]`, the status line uvicorn writes;
- after a WebSocket upgrade inside data_received, the transport's protocol is the WebSocket one.
"""

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# The uvicorn methods ruapi/server.py overrides or whose behaviour it leans on: sha256 of their
# source (first 16 hex digits) in the version checked. A mismatch means: re-check this module and
# ruapi/server.py against the upstream change.
COPIED_FROM = {
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.__init__": "4f08999410347141",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_made": "6efb565ff3d36b91",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_lost": "c91a4c9bf2e29c55",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.handle_websocket_upgrade": "d5da377bfc77e588",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.on_message_begin": "96d377fdc7c2baef",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.on_headers_complete": "1ea8589acfad92d8",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.on_body": "dba9c32aeba35b6a",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.on_message_complete": "1fbad42dc31fc01f",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.on_response_complete": "64e254f28e389e76",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.shutdown": "d7351fa33f00d430",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.send_400_response": "ae5a4a3782b646fd",
}

# The methods ruapi.server.GuardedHttpToolsProtocol overrides, with the parameters it accepts.
OVERRIDDEN = {
    "connection_made": ("transport",),
    "connection_lost": ("exc",),
    "data_received": ("data",),
    "on_headers_complete": (),
    "on_body": ("body",),
    "on_message_complete": (),
    "on_response_complete": (),
    "shutdown": (),
}


class HttpToolsHooks(HttpToolsProtocol):
    """uvicorn's httptools protocol, its per-connection and per-request state under names of ours."""

    def peer_host(self) -> str | None:
        """The TCP peer's address (as uvicorn reports it), None when unknown (a Unix socket)."""
        return self.client[0] if self.client else None

    def request_target(self) -> bytes:
        """The current request's target as received (path and query)."""
        return self.url

    def request_headers(self) -> list[tuple[bytes, bytes]]:
        """The current request's headers, lower-cased names: the scope's own list (edit it in place)."""
        return self.headers

    def set_client_host(self, host: str) -> None:
        """The client the application sees for the current request (scope["client"], port 0)."""
        self.scope["client"] = (host, 0)

    def response_in_flight(self) -> bool:
        """A request is being answered: its response not yet complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def response_started(self) -> bool:
        """A response is in flight and its head was sent."""
        return self.response_in_flight() and self.cycle.response_started

    def response_complete(self) -> bool:
        """The current request's response was sent to its end."""
        return self.cycle.response_complete

    def app_paused_reading(self) -> bool:
        """uvicorn stopped reading the socket (the application has not consumed the buffered body yet)."""
        return self.flow.read_paused

    def plain_response(self, status: int, message: str) -> bytes:
        """A complete `connection: close` response with a text body, as uvicorn writes its own 400."""
        body = message.encode("ascii")
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        return b"".join(head)
