"""Pooled async HTTP to upstream providers (aiohttp: one session per provider per event loop).

aiohttp rather than httpx: httpx's pool is slow under concurrency (ECOSYSTEM.md gotcha 3).
Timeouts: connect, and a read timeout that is the longest silence tolerated between two reads
(the stream-idle timeout) — never a total timeout, which would kill long streams.
Redirects are never followed: an upstream cannot send the provider's key elsewhere.
Sizes: a non-streamed body is refused past its cap (RUAPI_UPSTREAM_MAX_BODY_BYTES for chat and
JSON replies, RUAPI_MAX_UPSTREAM_RESPONSE_BYTES for images and audio), a stream past one event of
RUAPI_UPSTREAM_MAX_EVENT_BYTES; either becomes the caller's protocol-shaped upstream error.
"""

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import orjson
from django.conf import settings

from proxy.sse import SSEEventTooLargeError, iter_event_batches
from proxy.translate.errors import ErrorKind, GatewayError
from proxy.translate.usage import UsageBounds, expect_usage

_sessions: dict[tuple[int, int], aiohttp.ClientSession] = {}
_METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})


def _link_local(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    return address.is_link_local or (
        address.version == 6 and bool(address.ipv4_mapped and address.ipv4_mapped.is_link_local)
    )


class DestinationRefusedError(OSError):
    """An upstream address the gateway will not call (cloud metadata / link-local)."""


def check_destination(url: str) -> None:
    """SSRF guard: link-local addresses (169.254.0.0/16, fe80::/10 — where cloud metadata services
    live) and metadata host names are refused unless RUAPI_UPSTREAM_ALLOW_LINK_LOCAL is set."""
    if settings.RUAPI_UPSTREAM_ALLOW_LINK_LOCAL:
        return
    host = (urlsplit(url).hostname or "").lower()
    if host in _METADATA_HOSTS or _link_local(host):
        raise GatewayError(ErrorKind.UPSTREAM_ERROR, "The upstream address is not allowed.")


class GuardedResolver(aiohttp.ThreadedResolver):
    """Drops link-local answers, so a host name cannot smuggle a metadata address past the guard."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list:
        answers = await super().resolve(host, port, family)
        if settings.RUAPI_UPSTREAM_ALLOW_LINK_LOCAL:
            return answers
        allowed = [answer for answer in answers if not _link_local(answer["host"])]
        if not allowed:
            raise DestinationRefusedError(f"{host} resolves only to link-local addresses")
        return allowed


def _session(provider_id: int) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    key = (id(loop), provider_id)
    session = _sessions.get(key)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True, resolver=GuardedResolver()
        )
        session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        _sessions[key] = session
    return session


async def close_sessions() -> None:
    """Close this loop's sessions (tests and shutdown)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _sessions if k[0] == loop_id]:
        await _sessions.pop(key).close()


def connection_error(exc: BaseException) -> GatewayError:
    """A transport failure as the client sees it (PROTOCOLS §5.2: 502 unreachable, 504 timeout)."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return GatewayError(ErrorKind.TIMEOUT, "The upstream provider timed out.")
    return GatewayError(ErrorKind.UPSTREAM_ERROR, "The upstream provider could not be reached.")


def too_large() -> GatewayError:
    return GatewayError(ErrorKind.UPSTREAM_ERROR, "The upstream response was larger than allowed.")


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """Bytes the reader holds but did not hand out. aiohttp's readany() raises a broken body's
    error before returning what it had already buffered, so the last chunks an upstream sent
    before it crashed would be lost; this takes them out (a private call: b"" if it changes)."""
    read_nowait = getattr(content, "_read_nowait", None)
    if read_nowait is None:
        return b""
    try:
        return read_nowait(-1)
    except Exception:  # a salvage attempt must never mask the real error
        return b""


class UpstreamReply:
    """An upstream response whose headers have arrived; the body is read lazily.

    `max_body`: the most bytes `read()` / `json()` / `iter_bytes()` accept (None: the setting).
    `error`: why `json()` returned None when the body could not be read (timeout, too large).
    """

    def __init__(self, response: aiohttp.ClientResponse, *, started: float, max_body: int | None = None) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers
        self.started = started
        self.headers_at = time.perf_counter()
        self.max_body = max_body or settings.RUAPI_UPSTREAM_MAX_BODY_BYTES
        self.error: GatewayError | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self._response.content_type

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, refusing more than `limit` bytes (default `max_body`)."""
        limit = limit or self.max_body
        chunks, size = [], 0
        try:
            declared = self._response.content_length
            if declared is not None and declared > limit:
                raise too_large()  # refused before reading a byte of it
            async for chunk in self._response.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise too_large()
                chunks.append(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_error(exc) from exc
        finally:
            self.close()
        return b"".join(chunks)

    async def json(self) -> dict | None:
        """The body parsed as a JSON object, or None when it is not one — or could not be read
        (too large, timed out, broken: then `error` says which). Callers treat None as an invalid
        reply, so an unreadable body ends in the protocol's 502 and releases the hold."""
        try:
            body = await self.read()
        except GatewayError as exc:
            self.error = exc
            return None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    async def iter_bytes(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """Body chunks as they arrive, at most `limit` bytes in all (default `max_body`; 0: no cap);
        transport failures become GatewayError after the bytes received before them."""
        limit = self.max_body if limit is None else limit
        content = self._response.content
        size = 0
        try:
            async for chunk in content.iter_any():
                size += len(chunk)
                if limit and size > limit:
                    raise too_large()
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            rest = _buffered(content)
            if rest and not (limit and size + len(rest) > limit):
                yield rest
            raise connection_error(exc) from exc

    async def event_batches(self) -> AsyncIterator[list[tuple[str | None, bytes]]]:
        """SSE events, one list per network read. No cap on the stream's total size (long streams
        are fine), but one event larger than RUAPI_UPSTREAM_MAX_EVENT_BYTES is an upstream error."""
        batches = iter_event_batches(self.iter_bytes(limit=0), max_event_bytes=settings.RUAPI_UPSTREAM_MAX_EVENT_BYTES)
        try:
            async for events in batches:
                yield events
        except SSEEventTooLargeError as exc:
            raise too_large() from exc

    async def events(self) -> AsyncIterator[tuple[str | None, bytes]]:
        """SSE events one by one (see event_batches)."""
        async for events in self.event_batches():
            for event in events:
                yield event

    def close(self) -> None:
        """Drop the connection if the body was not fully read (aborts the upstream generation)."""
        self._response.close()


async def post(
    provider_id: int,
    url: str,
    *,
    headers: dict[str, str],
    json: dict | None = None,
    data: aiohttp.FormData | bytes | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_body: int | None = None,
    usage_bounds: UsageBounds | None = None,
) -> UpstreamReply:
    """POST and wait for the response headers. Transport failures raise GatewayError.

    `usage_bounds`: what this request allows the upstream to report (proxy.translate.usage); set
    for every attempt, None included, so bounds never carry over from an earlier call.
    """
    check_destination(url)
    expect_usage(usage_bounds)
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=connect_timeout or settings.RUAPI_UPSTREAM_CONNECT_TIMEOUT,
        sock_read=read_timeout or settings.RUAPI_UPSTREAM_READ_TIMEOUT,
    )
    started = time.perf_counter()
    body = orjson.dumps(json) if json is not None else data
    if json is not None:
        headers = {**headers, "Content-Type": "application/json"}
    try:
        response = await _session(provider_id).post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise connection_error(exc) from exc
    return UpstreamReply(response, started=started, max_body=max_body)


async def get(provider_id: int, url: str, *, headers: dict[str, str], timeout: float = 10.0) -> UpstreamReply:
    check_destination(url)
    started = time.perf_counter()
    try:
        response = await _session(provider_id).get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise connection_error(exc) from exc
    return UpstreamReply(response, started=started)
