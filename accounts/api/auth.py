"""Token authentication for the management API: `Authorization: Bearer rk-ru-…` (a ManagementKey).

Gateway keys (sk-ru-…) are refused here on purpose: a leaked app key must not be able to mint
more keys or read the organisation's members.
"""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts.selectors import unscoped_managementkey_by_secret
from accounts.services import managementkey_touch


class ManagementPrincipal:
    """request.user for token requests: authenticated, but no person (no memberships of its own)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, management_key) -> None:
        self.management_key = management_key
        self.pk = self.id = None

    def __str__(self) -> str:
        return f"management key {self.management_key.prefix}"


class ManagementKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        if token.startswith(settings.RUAPI_KEY_PREFIX) and not token.startswith(settings.RUAPI_MANAGEMENT_KEY_PREFIX):
            raise exceptions.AuthenticationFailed(
                "Gateway API keys cannot use the management API; create a management token in Settings."
            )
        key = unscoped_managementkey_by_secret(secret=token) if len(token) <= 256 else None
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid management token (unknown, revoked or expired).")
        managementkey_touch(management_key=key)
        return ManagementPrincipal(key), key

    def authenticate_header(self, request):
        return 'Bearer realm="management"'


class ManagementKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api.auth.ManagementKeyAuthentication"
    name = "managementToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A management token (rk-ru-…) from Settings."}
