"""Server-side limits against hostile clients, on raw sockets against the real server (issue 8).

The gateway's uvicorn runs `ruapi.server.GuardedHttpToolsProtocol` (Dockerfile, docker-compose.yml,
scripts/demo.sh, and the `live_gateway` fixture here). Stock uvicorn with httptools has none of
these limits: it buffers a request head of any size (a 20 MB header line is served) and has no
deadline for a request head or body, so a client trickling a byte a second — or sending nothing
at all after connecting — holds its connection forever (`timeout_keep_alive` only runs between
requests). Measured in `test_stock_uvicorn_has_no_head_deadline_or_size_limit` below.

Body size: a body over RUAPI_MAX_BODY_BYTES is a protocol-shaped 413 —
proxy/tests/reliability/test_bad_input.py::test_huge_body_is_413.
"""

import contextlib
import http.client
import json
import socket
import threading
import time

import pytest
import uvicorn

from conftest import _free_port

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest.fixture
def server(live_gateway, settings):
    """The live gateway with short deadlines; each connection reads them when it is accepted."""
    settings.RUAPI_HEADER_TIMEOUT = 1.0
    settings.RUAPI_BODY_TIMEOUT = 1.0
    settings.RUAPI_BODY_MIN_RATE = 100_000
    settings.RUAPI_MAX_HEADER_BYTES = 64 * 1024
    return live_gateway


def _connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when that happened."""
    started = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def _still_serves(port: int) -> None:
    """A normal request right after: the server is neither wedged nor failing."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/v1/models")
    response = connection.getresponse()
    assert response.status == 401  # no key: the gateway's own answer, in its JSON shape
    assert response.getheader("content-type", "").startswith("application/json")
    connection.close()


# -- request head size ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [80 * 1024, 1024 * 1024])
def test_a_huge_request_header_is_431_and_closed(server, size):
    # given
    sock = _connect(server.port)
    head = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size + b"\r\n\r\n"

    # when: sent at once (the server may stop reading and close before the client has sent it all)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(head)
    data, elapsed = _read_until_closed(sock, limit=5)

    # then: 431 (or, for a client still sending, a closed connection) at once — never a 500 or a hang
    assert data == b"" or data.startswith(b"HTTP/1.1 431 "), data[:100]
    if size < 256 * 1024:  # it all fits in the socket buffers: the client reads the answer
        assert data.startswith(b"HTTP/1.1 431 ")
    assert elapsed < 2
    sock.close()
    _still_serves(server.port)


def test_a_head_just_under_the_limit_is_served(server):
    sock = _connect(server.port)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (60 * 1024) + b"\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 401 ")
    sock.close()


def test_many_headers_adding_up_past_the_limit_are_431(server):
    sock = _connect(server.port)
    headers = b"".join(b"X-H%d: %s\r\n" % (index, b"v" * 1000) for index in range(100))
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    data, _ = _read_until_closed(sock, limit=5)
    assert data.startswith(b"HTTP/1.1 431 ")
    sock.close()


# -- slow and idle clients -----------------------------------------------------------------------------------


def test_a_client_sending_its_head_one_byte_a_second_is_cut_off(server):
    # given: slowloris — a plausible request head, one byte per second
    sock = _connect(server.port)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    started = time.monotonic()

    # when
    closed_after = None
    for byte in head:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        sock.settimeout(1.0)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        closed_after = time.monotonic() - started
        break

    # then: answered 408 and closed once RUAPI_HEADER_TIMEOUT (1 s) passed, long before the head was done
    assert closed_after is not None, "the server kept waiting for the head"
    assert data.startswith(b"HTTP/1.1 408 ")
    assert closed_after < 1.0 + 1.5
    assert _read_until_closed(sock, limit=2)[0] == b""  # and closed
    sock.close()
    _still_serves(server.port)


def test_a_connection_that_sends_nothing_is_closed(server):
    # given
    sock = _connect(server.port)

    # when
    data, elapsed = _read_until_closed(sock, limit=5)

    # then: closed without an answer (there was no request) once the head deadline passed
    assert data == b""
    assert 0.8 < elapsed < 2.5
    sock.close()


def test_many_idle_connections_are_all_released(server):
    # given: 40 connections that never send a byte
    sockets = [_connect(server.port) for _ in range(40)]

    # when / then: every one is closed by the server
    deadline = time.monotonic() + 4
    for sock in sockets:
        data, _ = _read_until_closed(sock, limit=max(0.1, deadline - time.monotonic()))
        assert data == b""
        sock.close()
    assert time.monotonic() < deadline
    _still_serves(server.port)


def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_request(server):
    # given: a client that makes requests on one connection, with pauses between them
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    # when / then: more time passes in all than one head deadline, and every request is served
    sockets = set()
    for _ in range(3):
        connection.request("GET", "/v1/models")
        response = connection.getresponse()
        response.read()
        assert response.status == 401
        sockets.add(id(connection.sock))
        time.sleep(0.6)
    assert len(sockets) == 1  # one connection throughout
    connection.close()


def test_a_body_trickled_a_byte_at_a_time_is_cut_off(gateway, settings):
    # given: a complete head announcing a body, which then arrives one byte every 0.2 s
    settings.RUAPI_BODY_TIMEOUT = 1.0
    settings.RUAPI_BODY_MIN_RATE = 100_000
    sock = _connect(gateway.server.port)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + gateway.tenant.secret.encode() + b"\r\nContent-Length: 5000\r\n\r\n{"
    )
    started = time.monotonic()

    # when
    data = b""
    for _ in range(30):
        try:
            sock.send(b" ")
        except (BrokenPipeError, ConnectionResetError):
            break
        sock.settimeout(0.2)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        break
    elapsed = time.monotonic() - started

    # then: 408 once the body stopped keeping pace; the request never reached billing
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert elapsed < 1.0 + 1.5
    sock.close()
    from billing.models import Hold, UsageEvent

    assert not UsageEvent.objects.exists()
    assert not Hold.objects.exists()


def test_a_large_body_sent_steadily_is_served(gateway, settings):
    # given: a 2 MB request body sent in pieces over ~1.5 s — longer than RUAPI_BODY_TIMEOUT, at a
    # steady rate far above RUAPI_BODY_MIN_RATE
    settings.RUAPI_BODY_TIMEOUT = 1.0
    settings.RUAPI_BODY_MIN_RATE = 1024
    message = {"role": "user", "content": "word " * 400_000}
    body = json.dumps({"model": "demo-echo", "max_tokens": 5, "messages": [message]}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", gateway.server.port, timeout=10)
    connection.putrequest("POST", "/v1/chat/completions")
    for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        ("Authorization", f"Bearer {gateway.tenant.secret}")):  # fmt: skip
        connection.putheader(name, value)
    connection.endheaders()
    started = time.monotonic()

    # when
    for offset in range(0, len(body), len(body) // 15):
        connection.send(body[offset : offset + len(body) // 15])
        time.sleep(0.1)
    response = connection.getresponse()

    # then
    assert time.monotonic() - started > 1.0
    assert response.status == 200, response.read()[:300]
    connection.close()


# -- what stock uvicorn does -----------------------------------------------------------------------------------


async def _hello(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_stock_uvicorn_has_no_head_deadline_or_size_limit():
    """Why ruapi.server exists: the same probes against uvicorn's own httptools protocol."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_hello, host="127.0.0.1", port=port, http="httptools", loop="asyncio",
                                           lifespan="off", log_level="error"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        # a 1 MB header line is served
        sock = _connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1024 * 1024 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        sock.close()
        # an idle connection, and one trickling a head, are both still open after 2 s
        idle, slow = _connect(port), _connect(port)
        for byte in b"GET / HTTP/1.1\r\n":
            slow.send(bytes([byte]))
            time.sleep(0.125)
        for sock in (idle, slow):
            sock.settimeout(0.1)
            with pytest.raises(TimeoutError):
                sock.recv(1)  # nothing, and not closed
            sock.close()
    finally:
        server.should_exit = True
        thread.join(timeout=5)
