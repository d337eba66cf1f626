"""Every write to gateway API keys and management keys."""

import hashlib
import ipaddress
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import keycache
from accounts.models import ApiKey, ManagementKey, Organization
from accounts.permissions import ROLE_RANK, Role
from accounts.services.errors import (
    AmbiguousApiKeyPrefixError,
    ApiKeyNotFoundError,
    PermissionDeniedError,
    ValidationError,
)

_KEY_ALPHABET = string.ascii_letters + string.digits
_KEY_RANDOM_CHARS = 40  # ~238 bits of entropy
_KEY_PREFIX_SHOWN = 8  # random characters kept in ApiKey.prefix for display and revocation
_UNSET = object()


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # shown to the user exactly once, never stored


@dataclass(frozen=True)
class IssuedManagementKey:
    management_key: ManagementKey
    secret: str


@dataclass(frozen=True)
class KeyLimits:
    """Per-key limits as the dashboard and the API submit them (None: no limit)."""

    allowed_models: list[str]
    ip_allowlist: list[str]
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    monthly_spend_cap_nanos: int | None = None


def apikey_hash(secret: str) -> str:
    """SHA-256 hex of a key secret. Keys carry ~238 random bits, so a fast hash is safe here."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(_KEY_RANDOM_CHARS))


def _clean_limits(limits: KeyLimits) -> KeyLimits:
    models = []
    for name in limits.allowed_models:
        name = str(name).strip()
        if name and name not in models:
            models.append(name)
    networks = []
    for entry in limits.ip_allowlist:
        entry = str(entry).strip()
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError as exc:
            raise ValidationError(f"{entry!r} is not an IP address or CIDR network", field="ip_allowlist") from exc
    for field in ("rpm_limit", "tpm_limit", "monthly_spend_cap_nanos"):
        value = getattr(limits, field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValidationError("must be a whole number of at least 0", field=field)
    return KeyLimits(
        allowed_models=models,
        ip_allowlist=networks,
        rpm_limit=limits.rpm_limit,
        tpm_limit=limits.tpm_limit,
        monthly_spend_cap_nanos=limits.monthly_spend_cap_nanos,
    )


def apikey_issue(
    *,
    org: Organization,
    name: str = "",
    created_by=None,
    expires_at: datetime | None = None,
    limits: KeyLimits | None = None,
) -> IssuedKey:
    """Create a key; returns the secret, which is not recoverable afterwards."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("must be in the future", field="expires_at")
    limits = _clean_limits(limits or KeyLimits(allowed_models=[], ip_allowlist=[]))
    secret = _new_secret(settings.RUAPI_KEY_PREFIX)
    api_key = ApiKey.objects.create(
        org=org,
        name=name.strip()[:200],
        prefix=secret[: len(settings.RUAPI_KEY_PREFIX) + _KEY_PREFIX_SHOWN],
        key_hash=apikey_hash(secret),
        created_by=created_by,
        expires_at=expires_at,
        allowed_models=limits.allowed_models,
        ip_allowlist=limits.ip_allowlist,
        rpm_limit=limits.rpm_limit,
        tpm_limit=limits.tpm_limit,
        monthly_spend_cap_nanos=limits.monthly_spend_cap_nanos,
    )
    # A lookup of this hash may have cached "unknown" a moment ago (someone tried the key early).
    transaction.on_commit(lambda: keycache.invalidate(api_key.key_hash))
    return IssuedKey(api_key=api_key, secret=secret)


def _revoke(api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    key_hash = api_key.key_hash
    transaction.on_commit(lambda: keycache.publish_change(key_hash))
    return api_key


def apikey_revoke(*, key_or_prefix: str, org: Organization | None = None) -> ApiKey:
    """Revoke a key given its secret or its displayed prefix (operator command; org=None is unscoped).

    Effective at once in this process and, with Redis, on every process within ~1 s;
    without Redis within RUAPI_KEY_CACHE_TTL seconds (accounts/keycache.py).
    """
    keys = ApiKey.objects.all() if org is None else ApiKey.objects.filter(org=org)
    matches = list(keys.filter(key_hash=apikey_hash(key_or_prefix))) or list(keys.filter(prefix=key_or_prefix))
    if not matches:
        raise ApiKeyNotFoundError("No API key matches that secret or prefix")
    if len(matches) > 1:
        raise AmbiguousApiKeyPrefixError("Several API keys share that prefix; give the full secret")
    return _revoke(matches[0])


def apikey_disable(*, org: Organization, api_key: ApiKey) -> ApiKey:
    """Revoke a key the caller already resolved within `org` (dashboard / management API)."""
    if api_key.org_id != org.id:  # defence in depth: the gate resolved it through org-scoped selectors
        raise ApiKeyNotFoundError("No such API key")
    return _revoke(api_key)


@transaction.atomic
def apikey_update(
    *,
    org: Organization,
    api_key: ApiKey,
    name: str | None = None,
    limits: KeyLimits | None = None,
    expires_at=_UNSET,
) -> ApiKey:
    """Rename a key and/or replace its limits; takes effect like a revocation (keycache bound)."""
    if api_key.org_id != org.id:
        raise ApiKeyNotFoundError("No such API key")
    fields = []
    if name is not None:
        api_key.name = name.strip()[:200]
        fields.append("name")
    if limits is not None:
        limits = _clean_limits(limits)
        api_key.allowed_models = limits.allowed_models
        api_key.ip_allowlist = limits.ip_allowlist
        api_key.rpm_limit = limits.rpm_limit
        api_key.tpm_limit = limits.tpm_limit
        api_key.monthly_spend_cap_nanos = limits.monthly_spend_cap_nanos
        fields += ["allowed_models", "ip_allowlist", "rpm_limit", "tpm_limit", "monthly_spend_cap_nanos"]
    if expires_at is not _UNSET:
        api_key.expires_at = expires_at
        fields.append("expires_at")
    if fields:
        api_key.save(update_fields=fields)
        key_hash = api_key.key_hash
        transaction.on_commit(lambda: keycache.publish_change(key_hash))
    return api_key


def managementkey_issue(
    *, org: Organization, name: str = "", role: str = Role.ADMIN, created_by=None, actor_role: str
) -> IssuedManagementKey:
    """A management API token acting with `role` (never above the creator's, never owner)."""
    if role not in ROLE_RANK or role == Role.OWNER or ROLE_RANK[role] > ROLE_RANK.get(actor_role, 0):
        raise PermissionDeniedError("You cannot create a token with that role")
    secret = _new_secret(settings.RUAPI_MANAGEMENT_KEY_PREFIX)
    key = ManagementKey.objects.create(
        org=org,
        name=name.strip()[:200],
        role=role,
        prefix=secret[: len(settings.RUAPI_MANAGEMENT_KEY_PREFIX) + _KEY_PREFIX_SHOWN],
        key_hash=apikey_hash(secret),
        created_by=created_by,
    )
    return IssuedManagementKey(management_key=key, secret=secret)


def managementkey_revoke(*, org: Organization, management_key: ManagementKey) -> ManagementKey:
    if management_key.org_id != org.id:
        raise ApiKeyNotFoundError("No such management key")
    if management_key.revoked_at is None:
        management_key.revoked_at = timezone.now()
        management_key.save(update_fields=["revoked_at"])
    return management_key


def managementkey_touch(*, management_key: ManagementKey) -> None:
    """Record use, at most once a minute (management traffic only; the gateway never writes per request)."""
    now = timezone.now()
    if management_key.last_used_at is None or (now - management_key.last_used_at).total_seconds() > 60:
        ManagementKey.objects.filter(pk=management_key.pk).update(last_used_at=now)
