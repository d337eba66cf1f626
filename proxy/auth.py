"""The only place a gateway key becomes an organisation (PROTOCOLS §0.1 for the headers)."""

from django.http import HttpRequest

from accounts.keycache import KeyContext, key_context_lookup
from accounts.services import apikey_hash
from proxy import auththrottle
from proxy.limits import client_ip_allowed
from proxy.translate.errors import ErrorKind, GatewayError


def key_from_headers(request: HttpRequest, *, allow_x_api_key: bool) -> str | None:
    """The presented secret: `x-api-key` (preferred where allowed), else `Authorization: Bearer`."""
    if allow_x_api_key:
        key = request.headers.get("x-api-key")
        if key:
            return key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate(request: HttpRequest, *, allow_x_api_key: bool) -> KeyContext:
    """The caller's KeyContext, or GatewayError(AUTHENTICATION), or 429 for an address that sent too
    many invalid keys (proxy/auththrottle.py: refused before its key is hashed or looked up)."""
    # In-process callers (the dashboard playground) drive the same ASGI app with the context in
    # the ASGI scope: a client on the network cannot put anything there.
    internal = getattr(request, "scope", {}).get("ruapi.key_context")
    if internal is not None:
        return internal
    remote_addr = request.META.get("REMOTE_ADDR")
    auththrottle.check_blocked(remote_addr)  # a dict lookup, no I/O
    secret = key_from_headers(request, allow_x_api_key=allow_x_api_key)
    if not secret:
        header = "x-api-key or Authorization: Bearer" if allow_x_api_key else "Authorization: Bearer"
        raise GatewayError(ErrorKind.AUTHENTICATION, f"Missing API key: send it in the {header} header.")
    if len(secret) > 256:
        await auththrottle.record_failure(remote_addr)
        raise GatewayError(ErrorKind.AUTHENTICATION, "Invalid API key.")
    # Looked up by SHA-256 (a dict key in the cache, an indexed column in the database): no
    # comparison of secrets happens, so there is no timing oracle on the secret.
    context = await key_context_lookup(apikey_hash(secret))
    if context is None:
        await auththrottle.record_failure(remote_addr)  # only failures are counted (one limiter call)
        raise GatewayError(ErrorKind.AUTHENTICATION, "Invalid API key (unknown, revoked or expired).")
    if not client_ip_allowed(context, remote_addr):
        raise GatewayError(ErrorKind.PERMISSION, "This API key may not be used from your IP address.",
                           code="ip_not_allowed")  # fmt: skip
    return context
