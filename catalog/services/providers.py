"""Provider writes: upstream keys (encrypted, audited, masked), availability and health."""

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from catalog.crypto import decrypt_secret, encrypt_secret, mask_secret
from catalog.models import Provider, ProviderKey
from catalog.services.audit import audit_record, catalog_changed


def _hint(encrypted: str) -> str | None:
    return mask_secret(decrypt_secret(encrypted)) if encrypted else None


@transaction.atomic
def provider_set_api_key(*, provider: Provider, api_key: str, actor=None) -> None:
    """Replace the provider's primary key ("" removes it); the audit shows only the last four characters."""
    before = _hint(provider.api_key_encrypted)
    provider.api_key_encrypted = encrypt_secret(api_key)
    provider.save(update_fields=["api_key_encrypted", "updated_at"])
    audit_record(actor=actor, action="key.set", target=provider, before={"key": before},
                 after={"key": _hint(provider.api_key_encrypted)})  # fmt: skip
    catalog_changed()


@transaction.atomic
def provider_key_add(*, provider: Provider, api_key: str, label: str = "", actor=None) -> ProviderKey:
    """Add a key to the provider's rotation."""
    if not api_key:
        raise ValueError("an API key cannot be empty")
    key = ProviderKey.objects.create(
        provider=provider, label=label, key_encrypted=encrypt_secret(api_key), key_hint=mask_secret(api_key)
    )
    audit_record(actor=actor, action="key.add", target=provider, after={"key": key.key_hint, "label": label})
    catalog_changed()
    return key


@transaction.atomic
def provider_key_remove(*, key: ProviderKey, actor=None) -> None:
    audit_record(
        actor=actor, action="key.remove", target=key.provider, before={"key": key.key_hint, "label": key.label}
    )
    key.delete()
    catalog_changed()


@transaction.atomic
def providers_set_enabled(*, providers: Iterable[Provider], enabled: bool, actor=None) -> int:
    """Enable or disable providers (their routes stop being tried at once); returns how many changed."""
    changed = 0
    for provider in providers:
        if provider.is_enabled == enabled:
            continue
        provider.is_enabled = enabled
        provider.save(update_fields=["is_enabled", "updated_at"])
        audit_record(actor=actor, action="provider.enable" if enabled else "provider.disable", target=provider,
                     before={"enabled": not enabled}, after={"enabled": enabled})  # fmt: skip
        changed += 1
    if changed:
        catalog_changed()
    return changed


def provider_check_record(*, provider: Provider, ok: bool, latency_ms: int | None, error: str = "") -> None:
    """Store a connection test's result. `error` must already be scrubbed of secrets."""
    provider.health_status = Provider.Health.HEALTHY if ok else Provider.Health.UNHEALTHY
    provider.last_latency_ms = latency_ms
    provider.last_checked_at = timezone.now()
    provider.last_check_error = error[:500]
    provider.save(update_fields=["health_status", "last_latency_ms", "last_checked_at", "last_check_error"])
    catalog_changed()


def provider_test_connection(*, provider: Provider):
    """Call the provider (its model list, through the gateway's own upstream client) and record health."""
    # The upstream clients live in proxy/ (all network I/O is there); imported here, not at module
    # level, so the catalog app stays importable without the proxy's HTTP stack.
    from asgiref.sync import async_to_sync

    from catalog.snapshot import provider_spec
    from proxy.upstreams.probe import provider_probe

    result = async_to_sync(provider_probe)(provider_spec(provider))
    provider_check_record(provider=provider, ok=result.ok, latency_ms=result.latency_ms, error=result.error)
    return result
