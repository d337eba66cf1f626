"""Nothing is read before it is safe (issue 12, items 3 and 5), on raw sockets against the real server.

- A request with a body is authenticated from its headers before one byte of the body is read
  (ruapi/asgi.py `admit_before_body`); a refused request's connection is closed, so the rest of an
  upload is never read (ruapi/server.py `on_response_complete`). Before: a 200 MB chunked upload
  without a key was read (and spooled to disk) in full, then answered 401.
- A declared Content-Length over RUAPI_MAX_BODY_BYTES is 413 at once; a chunked body is 413 as
  soon as its running total passes the limit, and nothing past it is read. Before: the first
  waited for the body, the second read all of it.
- A body that stalls or trickles is cut off: it must deliver RUAPI_BODY_MIN_RATE x RUAPI_BODY_TIMEOUT
  bytes in every RUAPI_BODY_TIMEOUT seconds. Before: each byte received bought 1/RUAPI_BODY_MIN_RATE
  seconds more, so 30 MB then silence held the connection (and 30 MB of memory) for 8 hours.
- X-Forwarded-For is believed only from RUAPI_TRUSTED_PROXIES (ruapi/server.py). Before: uvicorn's
  default --proxy-headers trusted 127.0.0.1, so a client behind a local proxy that passes the
  header through rotated its address past the key-guessing throttle and IP allowlists.
"""

import http.client
import json
import socket
import threading
import time

import pytest

from proxy.tests.reliability.test_server_limits import _connect, _read_until_closed
from ruapi.server import GuardedHttpToolsProtocol

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

MiB = 1024 * 1024


@pytest.fixture
def received(monkeypatch):
    """Bytes the server read from every connection while the test runs (its side of the socket)."""
    counts = {"bytes": 0}
    original = GuardedHttpToolsProtocol.data_received

    def counting(self, data: bytes) -> None:
        counts["bytes"] += len(data)
        original(self, data)

    monkeypatch.setattr(GuardedHttpToolsProtocol, "data_received", counting)
    return counts


class Uploader(threading.Thread):
    """Sends a request head, then body bytes as fast as the server takes them, until it refuses more."""

    def __init__(self, sock: socket.socket, head: bytes, *, chunked: bool, total: int, piece: int = MiB) -> None:
        super().__init__(daemon=True)
        self.sock, self.head, self.chunked, self.total, self.piece = sock, head, chunked, total, piece
        self.sent = 0  # body bytes the kernel accepted from us
        self.finished = False

    def run(self) -> None:
        data = b"x" * self.piece
        frame = (b"%x\r\n" % len(data)) + data + b"\r\n" if self.chunked else data
        try:
            self.sock.sendall(self.head)
            while self.sent < self.total:
                self.sock.sendall(frame)
                self.sent += len(data)
            if self.chunked:
                self.sock.sendall(b"0\r\n\r\n")
            self.finished = True
        except OSError:  # the server closed the connection: what we wanted
            pass


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        chunks = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            chunks, body = chunks + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
        body = chunks
    return int(lines[0].split()[1]), headers, body


def _assert_error_shape(protocol: str, body: bytes, *, kind: str, message: str) -> None:
    payload = json.loads(body)
    if protocol == "anthropic":
        assert payload["type"] == "error"
        assert payload["error"] == {"type": kind, "message": message}
    else:
        assert payload["error"]["message"] == message
        assert payload["error"]["code"] == kind


# -- auth before the body ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("_case", "path", "headers", "protocol", "message"),
    [
        ("openai no key", "/v1/chat/completions", {"Content-Type": "application/json"}, "openai",
         "Missing API key: send it in the Authorization: Bearer header."),
        ("openai bad key", "/v1/chat/completions", {"Authorization": "Bearer sk-ru-not-a-key"}, "openai",
         "Invalid API key (unknown, revoked or expired)."),
        ("anthropic no key", "/v1/messages", {"anthropic-version": "2023-06-01"}, "anthropic",
         "Missing API key: send it in the x-api-key or Authorization: Bearer header."),
        ("anthropic bad x-api-key", "/v1/messages", {"x-api-key": "sk-ru-not-a-key"}, "anthropic",
         "Invalid API key (unknown, revoked or expired)."),
        ("multipart no key", "/v1/audio/transcriptions",
         {"Content-Type": "multipart/form-data; boundary=xyz"}, "openai",
         "Missing API key: send it in the Authorization: Bearer header."),
    ],
)  # fmt: skip
def test_an_upload_without_a_valid_key_is_refused_before_its_body_is_read(
    gateway, received, _case, path, headers, protocol, message
):
    # given: a 200 MB chunked upload, sent as fast as the server reads it
    sock = _connect(gateway.server.port, timeout=10)
    uploader = Uploader(sock, _head(path, {**headers, "Transfer-Encoding": "chunked"}), chunked=True,
                        total=200 * MiB)  # fmt: skip
    started = time.monotonic()

    # when
    uploader.start()
    data, _ = _read_until_closed(sock, limit=10)
    uploader.join(timeout=10)
    elapsed = time.monotonic() - started

    # then: 401 in the caller's shape, at once, and the connection closed with the body unread
    status, response_headers, body = _response(data)
    assert status == 401
    assert response_headers["connection"] == "close"
    kind = "authentication_error" if protocol == "anthropic" else "invalid_api_key"
    _assert_error_shape(protocol, body, kind=kind, message=message)
    assert not uploader.finished
    assert elapsed < 3
    assert received["bytes"] < 2 * MiB, received  # the server read a bounded prefix (socket buffers aside)
    assert uploader.sent < 64 * MiB  # the client could not push more than the kernels' buffers
    assert gateway.mock.requests == []
    sock.close()


def test_several_keyless_uploads_at_once_are_all_refused_and_closed(gateway, received):
    # given: five keyless 100 MB uploads at the same time
    sockets = [_connect(gateway.server.port, timeout=10) for _ in range(5)]
    uploaders = [Uploader(sock, _head("/v1/chat/completions", {"Transfer-Encoding": "chunked"}), chunked=True,
                          total=100 * MiB) for sock in sockets]  # fmt: skip

    # when
    for uploader in uploaders:
        uploader.start()
    answers = [_read_until_closed(sock, limit=10)[0] for sock in sockets]

    # then
    assert [_response(data)[0] for data in answers] == [401] * 5
    assert received["bytes"] < 5 * 2 * MiB
    for uploader, sock in zip(uploaders, sockets, strict=True):
        uploader.join(timeout=10)
        assert not uploader.finished
        sock.close()


def test_a_valid_key_still_uploads_and_is_served(gateway, received):
    # given: a chunked, keyed request (the auth-first path admits it and then reads the body)
    body = json.dumps({"model": "demo-echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    sock = _connect(gateway.server.port)
    head = _head("/v1/messages", {"x-api-key": gateway.tenant.secret, "Transfer-Encoding": "chunked",
                                  "Content-Type": "application/json"})  # fmt: skip
    encoded = body.encode()

    # when
    sock.sendall(head + b"%x\r\n" % len(encoded) + encoded + b"\r\n0\r\n\r\n")
    sock.settimeout(5)
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        data += sock.recv(65536)

    # then: served on a kept-alive connection
    status, headers, payload = _response(data)
    assert status == 200, data[:300]
    assert headers.get("connection") != "close"
    assert json.loads(payload)["type"] == "message"
    sock.close()


# -- size limits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("_case", "path", "protocol"), [("openai", "/v1/chat/completions", "openai"),
                                                         ("anthropic", "/v1/messages", "anthropic"),
                                                         ("multipart", "/v1/audio/transcriptions", "openai")])
def test_a_declared_length_over_the_limit_is_413_at_once(gateway, settings, _case, path, protocol):
    # given: a keyed head announcing one byte more than the limit, and no body yet
    settings.RUAPI_MAX_BODY_BYTES = MiB
    sock = _connect(gateway.server.port)
    sock.sendall(_head(path, {"Authorization": f"Bearer {gateway.tenant.secret}", "Content-Length": str(MiB + 1)}))
    started = time.monotonic()

    # when
    data, _ = _read_until_closed(sock, limit=5)

    # then: refused from the head alone, in the caller's shape, connection closed
    status, headers, body = _response(data)
    assert status == 413
    assert time.monotonic() - started < 0.5
    assert headers["connection"] == "close"
    kind = "request_too_large"
    _assert_error_shape(protocol, body, kind=kind, message="Request body is too large.")
    assert gateway.mock.requests == []
    sock.close()


@pytest.mark.parametrize(("_case", "path", "protocol"), [("openai", "/v1/chat/completions", "openai"),
                                                         ("anthropic", "/v1/messages", "anthropic")])
def test_a_chunked_body_past_the_limit_is_413_and_nothing_more_is_read(gateway, settings, received, _case, path,
                                                                       protocol):  # fmt: skip
    # given: a 1 MiB limit and a keyed chunked upload of 100 MiB
    from billing.models import Hold, UsageEvent

    settings.RUAPI_MAX_BODY_BYTES = MiB
    sock = _connect(gateway.server.port, timeout=10)
    uploader = Uploader(sock, _head(path, {"Authorization": f"Bearer {gateway.tenant.secret}",
                                           "Transfer-Encoding": "chunked"}), chunked=True, total=100 * MiB,
                        piece=64 * 1024)  # fmt: skip

    # when
    uploader.start()
    data, _ = _read_until_closed(sock, limit=10)
    uploader.join(timeout=10)

    # then
    status, headers, body = _response(data)
    assert status == 413
    assert headers["connection"] == "close"
    _assert_error_shape(protocol, body, kind="request_too_large", message="Request body is too large.")
    assert not uploader.finished
    assert received["bytes"] < 4 * MiB, received  # the limit, plus what was in flight when it was passed
    assert gateway.mock.requests == []
    assert not Hold.objects.exists() and not UsageEvent.objects.exists()
    sock.close()


def test_the_dashboard_refuses_a_body_over_the_limit_too(live_gateway, settings, received):
    # given: outside /v1 the server itself applies RUAPI_MAX_BODY_BYTES (plain 413)
    settings.RUAPI_MAX_BODY_BYTES = MiB
    declared = _connect(live_gateway.port)
    chunked = _connect(live_gateway.port, timeout=10)

    # when
    declared.sendall(_head("/accounts/login/", {"Content-Length": str(MiB + 1)}))
    uploader = Uploader(chunked, _head("/accounts/login/", {"Transfer-Encoding": "chunked"}), chunked=True,
                        total=100 * MiB, piece=64 * 1024)  # fmt: skip
    uploader.start()

    # then
    for sock in (declared, chunked):
        data, _ = _read_until_closed(sock, limit=5)
        assert data.startswith(b"HTTP/1.1 413 "), data[:100]
        sock.close()
    uploader.join(timeout=10)
    assert not uploader.finished
    assert received["bytes"] < 4 * MiB


# -- stalled uploads -----------------------------------------------------------------------------------------


def test_uploads_that_send_30_mb_and_go_silent_are_closed_within_the_deadline(gateway, settings):
    # given: RUAPI_BODY_TIMEOUT 1 s at the default 1 KiB/s minimum rate, and three keyed uploads that
    # declare 31 MB, send 30 MB at once and then nothing
    settings.RUAPI_MAX_BODY_BYTES = 64 * MiB
    settings.RUAPI_BODY_TIMEOUT = 1.0
    settings.RUAPI_BODY_MIN_RATE = 1024
    head = _head("/v1/chat/completions", {"Authorization": f"Bearer {gateway.tenant.secret}",
                                          "Content-Length": str(31_000_000)})  # fmt: skip
    sockets = [_connect(gateway.server.port, timeout=10) for _ in range(3)]
    uploaders = [Uploader(sock, head, chunked=False, total=30_000_000, piece=1_000_000) for sock in sockets]

    # when
    for uploader in uploaders:
        uploader.start()
    for uploader in uploaders:
        uploader.join(timeout=10)
        assert uploader.finished  # all 30 MB were taken
    silent_since = time.monotonic()
    answers = [_read_until_closed(sock, limit=6)[0] for sock in sockets]

    # then: each got 408 and was closed about RUAPI_BODY_TIMEOUT after its last byte
    assert time.monotonic() - silent_since < 1.0 + 1.5
    for data in answers:
        assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    for sock in sockets:
        sock.close()
    assert gateway.mock.requests == []


def test_an_upload_that_sends_30_mb_then_trickles_is_cut_off(gateway, settings):
    # given: 30 MB at once, then one byte every 0.3 s — never silent, far below the minimum rate
    settings.RUAPI_MAX_BODY_BYTES = 64 * MiB
    settings.RUAPI_BODY_TIMEOUT = 1.0
    settings.RUAPI_BODY_MIN_RATE = 1024
    sock = _connect(gateway.server.port, timeout=10)
    uploader = Uploader(sock, _head("/v1/chat/completions", {"Authorization": f"Bearer {gateway.tenant.secret}",
                                                             "Content-Length": str(31_000_000)}),
                        chunked=False, total=30_000_000, piece=1_000_000)  # fmt: skip
    uploader.start()
    uploader.join(timeout=10)
    assert uploader.finished
    trickle_since = time.monotonic()

    # when
    data = b""
    sock.settimeout(0.3)
    while time.monotonic() - trickle_since < 6 and not data:
        try:
            sock.send(b"x")
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break

    # then: 408 once a window of RUAPI_BODY_TIMEOUT passed without RUAPI_BODY_MIN_RATE x timeout bytes
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert time.monotonic() - trickle_since < 1.0 + 1.5
    sock.close()


def test_a_slow_but_steady_upload_is_not_cut_by_the_progress_deadline(gateway, settings):
    # given: a body that arrives in pieces 0.5 s apart for 2.5 s: longer than RUAPI_BODY_TIMEOUT (1 s)
    # in all, never silent that long, and above the minimum rate
    settings.RUAPI_BODY_TIMEOUT = 1.0
    settings.RUAPI_BODY_MIN_RATE = 1024
    body = json.dumps({"model": "demo-echo", "messages": [{"role": "user", "content": "w " * 5000}]}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", gateway.server.port, timeout=10)
    connection.putrequest("POST", "/v1/chat/completions")
    for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        ("Authorization", f"Bearer {gateway.tenant.secret}")):  # fmt: skip
        connection.putheader(name, value)
    connection.endheaders()

    # when
    step = len(body) // 5 + 1
    for offset in range(0, len(body), step):
        connection.send(body[offset : offset + step])
        time.sleep(0.5)
    response = connection.getresponse()

    # then
    assert response.status == 200, response.read()[:300]
    connection.close()


# -- forwarded addresses -------------------------------------------------------------------------------------


def _models_with(port: int, key: str, forwarded_for: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}",
                                                     "X-Forwarded-For": forwarded_for})  # fmt: skip
    status = connection.getresponse().status
    connection.close()
    return status


def test_a_forwarded_address_from_an_untrusted_peer_does_not_escape_the_key_guessing_throttle(gateway, settings):
    # given: no trusted proxies (the default) and a limit of 3 invalid keys per window
    settings.RUAPI_TRUSTED_PROXIES = []
    settings.RUAPI_AUTH_FAIL_LIMIT = 3

    # when: invalid keys from loopback, each claiming another address
    statuses = [_models_with(gateway.server.port, "sk-ru-guess", f"198.51.100.{index}") for index in range(6)]

    # then: all counted against the real peer
    assert statuses == [401, 401, 401, 429, 429, 429]


def test_a_trusted_proxy_s_forwarded_address_is_the_client(gateway, settings):
    # given: loopback configured as a trusted proxy
    settings.RUAPI_TRUSTED_PROXIES = ["127.0.0.0/8"]
    settings.RUAPI_AUTH_FAIL_LIMIT = 3

    # when: one forwarded client guesses four times, then another forwarded client arrives
    first = [_models_with(gateway.server.port, "sk-ru-guess", "198.51.100.7") for _ in range(4)]
    other = _models_with(gateway.server.port, "sk-ru-guess", "198.51.100.8")
    # a client-written entry left of the proxy's own is not believed: the right-most untrusted one is
    spoofed = _models_with(gateway.server.port, "sk-ru-guess", "203.0.113.9, 198.51.100.7")

    # then
    assert first == [401, 401, 401, 429]
    assert other == 401
    assert spoofed == 429


@pytest.mark.parametrize(("_case", "trusted", "expected"), [("untrusted peer", [], 403),
                                                            ("trusted proxy", ["127.0.0.1"], 200)])
def test_a_key_s_ip_allowlist_sees_the_forwarded_address_only_from_a_trusted_proxy(gateway, settings, _case,
                                                                                    trusted, expected):  # fmt: skip
    # given: a key allowed from 203.0.113.0/24 only
    from accounts import keycache

    api_key = gateway.tenant.api_key
    api_key.ip_allowlist = ["203.0.113.0/24"]
    api_key.save(update_fields=["ip_allowlist"])
    keycache.invalidate()
    settings.RUAPI_TRUSTED_PROXIES = trusted

    # when
    status = _models_with(gateway.server.port, gateway.tenant.secret, "203.0.113.5")

    # then
    assert status == expected


def test_forwarded_client_picks_the_right_most_untrusted_entry():
    from ruapi.server import forwarded_client, trusted_networks

    networks = trusted_networks(("10.0.0.0/8", "::1"))
    assert forwarded_client("10.1.2.3", [b"1.2.3.4, 5.6.7.8"], networks) == "5.6.7.8"
    assert forwarded_client("10.1.2.3", [b"1.2.3.4", b"5.6.7.8, 10.9.9.9"], networks) == "5.6.7.8"
    assert forwarded_client("::1", [b"[2001:db8::1]:443"], networks) == "2001:db8::1"
    assert forwarded_client("10.1.2.3", [b"5.6.7.8:1234"], networks) == "5.6.7.8"
    assert forwarded_client("10.1.2.3", [b"garbage, 5.6.7.8"], networks) == "5.6.7.8"
    assert forwarded_client("10.1.2.3", [b"5.6.7.8, garbage"], networks) is None
    assert forwarded_client("192.0.2.1", [b"5.6.7.8"], networks) is None  # not a trusted peer
    assert forwarded_client("10.1.2.3", [b"10.0.0.1"], networks) is None  # nothing but proxies
    assert forwarded_client("10.1.2.3", [b"5.6.7.8"], ()) is None  # nothing trusted

