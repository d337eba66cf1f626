"""The only place a gateway key becomes an organisation (PROTOCOLS §0.1 for the headers)."""

from django.http import HttpRequest

from accounts.keycache import KeyContext, key_context_lookup
from accounts.services import apikey_hash
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
    """The caller's KeyContext, or GatewayError(AUTHENTICATION)."""
    # In-process callers (the dashboard playground) drive the same ASGI app with the context in
    # the ASGI scope: a client on the network cannot put anything there.
    internal = getattr(request, "scope", {}).get("ruapi.key_context")
    if internal is not None:
        return internal
    secret = key_from_headers(request, allow_x_api_key=allow_x_api_key)
    if not secret:
        header = "x-api-key or Authorization: Bearer" if allow_x_api_key else "Authorization: Bearer"
        raise GatewayError(ErrorKind.AUTHENTICATION, f"Missing API key: send it in the {header} header.")
    if len(secret) > 256:
        raise GatewayError(ErrorKind.AUTHENTICATION, "Invalid API key.")
    # Looked up by SHA-256: no comparison of secrets happens, so there is no timing oracle.
    context = await key_context_lookup(apikey_hash(secret))
    if context is None:
        raise GatewayError(ErrorKind.AUTHENTICATION, "Invalid API key (unknown, revoked or expired).")
    if not client_ip_allowed(context, request.META.get("REMOTE_ADDR")):
        raise GatewayError(ErrorKind.PERMISSION, "This API key may not be used from your IP address.",
                           code="ip_not_allowed")  # fmt: skip
    return context
