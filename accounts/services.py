"""Every write to organisations, memberships and API keys."""

import hashlib
import secrets
import string
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts import keycache
from accounts.models import ApiKey, Organization

_KEY_ALPHABET = string.ascii_letters + string.digits
_KEY_RANDOM_CHARS = 40  # ~238 bits of entropy
_KEY_PREFIX_SHOWN = 8  # random characters kept in ApiKey.prefix for display and revocation


class OrganizationNameTakenError(Exception):
    pass


class ApiKeyNotFoundError(Exception):
    pass


class AmbiguousApiKeyPrefixError(Exception):
    pass


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # shown to the user exactly once, never stored


def apikey_hash(secret: str) -> str:
    """SHA-256 hex of a key secret. Keys carry ~238 random bits, so a fast hash is safe here."""
    return hashlib.sha256(secret.encode()).hexdigest()


def org_create(*, name: str, slug: str | None = None) -> Organization:
    """Create an organisation (and its zero balance is created lazily by billing)."""
    slug = slug or slugify(name) or secrets.token_hex(4)
    try:
        with transaction.atomic():
            return Organization.objects.create(name=name, slug=_unique_slug(slug))
    except IntegrityError as exc:
        raise OrganizationNameTakenError(f"An organisation named {name!r} already exists") from exc


def _unique_slug(base: str) -> str:
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def apikey_issue(*, org: Organization, name: str = "", created_by=None, expires_at=None) -> IssuedKey:
    """Create a key; returns the secret, which is not recoverable afterwards."""
    random_part = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(_KEY_RANDOM_CHARS))
    secret = f"{settings.RUAPI_KEY_PREFIX}{random_part}"
    api_key = ApiKey.objects.create(
        org=org,
        name=name,
        prefix=secret[: len(settings.RUAPI_KEY_PREFIX) + _KEY_PREFIX_SHOWN],
        key_hash=apikey_hash(secret),
        created_by=created_by,
        expires_at=expires_at,
    )
    return IssuedKey(api_key=api_key, secret=secret)


def apikey_revoke(*, key_or_prefix: str, org: Organization | None = None) -> ApiKey:
    """Revoke a key given its secret or its displayed prefix; effective at once in this process.

    Other gateway processes drop their cached copy within RUAPI_KEY_CACHE_TTL seconds.
    """
    keys = ApiKey.objects.all() if org is None else ApiKey.objects.filter(org=org)
    matches = list(keys.filter(key_hash=apikey_hash(key_or_prefix))) or list(keys.filter(prefix=key_or_prefix))
    if not matches:
        raise ApiKeyNotFoundError("No API key matches that secret or prefix")
    if len(matches) > 1:
        raise AmbiguousApiKeyPrefixError("Several API keys share that prefix; give the full secret")
    api_key = matches[0]
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    transaction.on_commit(lambda: keycache.invalidate(api_key.key_hash))
    return api_key
