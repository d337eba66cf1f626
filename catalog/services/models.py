"""Model writes: availability, prices (append-only history) and models found upstream."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from billing.money import nanos_to_usd
from catalog.models import Model, Price, Provider, Route
from catalog.services.audit import audit_record, catalog_changed

PRICE_NANOS_FIELDS = (
    "input_nanos_per_mtok", "output_nanos_per_mtok", "cache_read_nanos_per_mtok", "cache_write_nanos_per_mtok",
    "image_nanos", "audio_minute_nanos", "character_nanos_per_mchar",
    "web_search_nanos_per_kreq", "web_fetch_nanos_per_kreq",
    "cost_input_nanos_per_mtok", "cost_output_nanos_per_mtok", "cost_cache_read_nanos_per_mtok",
    "cost_cache_write_nanos_per_mtok",
)  # fmt: skip


def _usd_key(field_name: str) -> str:
    """input_nanos_per_mtok -> input_usd_per_mtok: the unit in the name matches the value."""
    return field_name.replace("_nanos", "_usd")


def price_as_usd(price: Price | None) -> dict | None:
    """A price row for the audit log: USD strings, non-zero fields only, plus its start."""
    if price is None:
        return None
    values = {_usd_key(name): f"{nanos_to_usd(getattr(price, name)).normalize():f}" for name in PRICE_NANOS_FIELDS
              if getattr(price, name)}  # fmt: skip
    return {**values, "effective_from": price.effective_from.isoformat()}


@transaction.atomic
def price_set(*, model: Model, nanos: dict[str, int], effective_from: datetime | None = None, actor=None) -> Price:
    """Add a price row (fields missing from `nanos` are 0) effective now or at `effective_from`.

    Rows are never edited: usage recorded earlier keeps pointing at the row it was billed with.
    """
    unknown = set(nanos) - set(PRICE_NANOS_FIELDS)
    if unknown:
        raise ValueError(f"unknown price fields: {sorted(unknown)}")
    if any(value < 0 for value in nanos.values()):
        raise ValueError("a price cannot be negative")
    before = model.prices.filter(effective_from__lte=timezone.now()).order_by("-effective_from", "-id").first()
    price = Price.objects.create(model=model, effective_from=effective_from or timezone.now(), **nanos)
    audit_record(actor=actor, action="price.set", target=model, before=price_as_usd(before), after=price_as_usd(price))
    catalog_changed()
    return price


@transaction.atomic
def models_set_enabled(*, models: Iterable[Model], enabled: bool, actor=None) -> int:
    """Enable or disable models; a disabled model answers 404 in the caller's protocol shape."""
    changed = 0
    for model in models:
        if model.is_enabled == enabled:
            continue
        model.is_enabled = enabled
        model.save(update_fields=["is_enabled", "updated_at"])
        audit_record(actor=actor, action="model.enable" if enabled else "model.disable", target=model,
                     before={"enabled": not enabled}, after={"enabled": enabled})  # fmt: skip
        changed += 1
    if changed:
        catalog_changed()
    return changed


@dataclass
class ModelSyncResult:
    created: list[str] = field(default_factory=list)
    routed: list[str] = field(default_factory=list)  # existing models that got a route to this provider


@transaction.atomic
def models_add_from_upstream(*, provider: Provider, upstream_ids: Iterable[str], actor=None) -> ModelSyncResult:
    """Add models the provider lists (public id = upstream id) with a route to it.

    New models start disabled and without a price: nothing is sold before an admin priced and
    enabled it. An existing model of that name only gains the route.
    """
    result = ModelSyncResult()
    for upstream_id in upstream_ids:
        model, created = Model.objects.get_or_create(
            name=upstream_id, defaults={"display_name": upstream_id, "is_enabled": False}
        )
        _, routed = Route.objects.get_or_create(
            model=model, provider=provider, defaults={"upstream_model": upstream_id}
        )
        if created:
            result.created.append(upstream_id)
            audit_record(actor=actor, action="model.sync_add", target=model, after={"provider": provider.name})
        elif routed:
            result.routed.append(upstream_id)
    if result.created or result.routed:
        catalog_changed()
    return result
