"""Every write to the catalog. `catalog_load` is the one path for YAML/JSON imports."""

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction

from billing.money import MoneyError, nanos_to_usd, usd_to_nanos
from catalog import snapshot
from catalog.crypto import decrypt_secret, encrypt_secret
from catalog.models import Model, Price, Provider, Route

# YAML price key -> Price field. Token prices are USD per 1M tokens.
PRICE_FIELDS = {
    "input": "input_nanos_per_mtok",
    "output": "output_nanos_per_mtok",
    "cache_read": "cache_read_nanos_per_mtok",
    "cache_write": "cache_write_nanos_per_mtok",
    "image": "image_nanos",
    "audio_minute": "audio_minute_nanos",
    "characters": "character_nanos_per_mchar",
}
MODEL_FIELDS = (
    "display_name", "description", "mode", "context_window", "max_output_tokens", "thinking",
    "supports_tools", "supports_vision", "structured_output", "is_enabled",
)  # fmt: skip
PROVIDER_KINDS = {choice.value for choice in Provider.Kind}


class CatalogError(ValueError):
    pass


@dataclass
class LoadResult:
    providers_created: list[str] = field(default_factory=list)
    providers_updated: list[str] = field(default_factory=list)
    models_created: list[str] = field(default_factory=list)
    models_updated: list[str] = field(default_factory=list)
    prices_changed: list[str] = field(default_factory=list)


def _price_nanos(value, *, where: str) -> int:
    if isinstance(value, float):
        # YAML gives floats; their repr is the number the author wrote (0.15 -> "0.15").
        value = repr(value)
    try:
        nanos = usd_to_nanos(Decimal(str(value)))
    except MoneyError as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    if nanos < 0:
        raise CatalogError(f"{where}: a price cannot be negative")
    return nanos


def provider_set_api_key(*, provider: Provider, api_key: str) -> None:
    provider.api_key_encrypted = encrypt_secret(api_key)
    provider.save(update_fields=["api_key_encrypted", "updated_at"])
    transaction.on_commit(snapshot.catalog_invalidate)


def _load_provider(data: dict, result: LoadResult) -> Provider:
    name = data.get("name")
    if not name:
        raise CatalogError("every provider needs a name")
    kind = data.get("kind")
    if kind not in PROVIDER_KINDS:
        raise CatalogError(f"provider {name}: kind must be one of {sorted(PROVIDER_KINDS)}, got {kind!r}")
    base_url = (data.get("base_url") or "").rstrip("/")
    if kind != Provider.Kind.ECHO and not base_url:
        raise CatalogError(f"provider {name}: base_url is required")
    defaults = {
        "kind": kind,
        "base_url": base_url,
        "api_key_env": data.get("api_key_env", ""),
        "extra_headers": data.get("extra_headers") or {},
        "options": data.get("options") or {},
        "connect_timeout_s": data.get("connect_timeout"),
        "read_timeout_s": data.get("read_timeout"),
        "is_enabled": data.get("enabled", True),
    }
    provider, created = Provider.objects.update_or_create(name=name, defaults=defaults)
    if "api_key" in data and (data["api_key"] or "") != decrypt_secret(provider.api_key_encrypted):
        provider.api_key_encrypted = encrypt_secret(data["api_key"] or "")
        provider.save(update_fields=["api_key_encrypted"])
    (result.providers_created if created else result.providers_updated).append(name)
    return provider


def _load_model(data: dict, providers: dict[str, Provider], result: LoadResult) -> None:
    name = data.get("name")
    if not name:
        raise CatalogError("every model needs a name")
    defaults = {key: data[key] for key in MODEL_FIELDS if key in data}
    if "enabled" in data:
        defaults["is_enabled"] = data["enabled"]
    if "thinking" in data and data["thinking"] in (None, False, "none"):
        defaults["thinking"] = ""
    model, created = Model.objects.update_or_create(name=name, defaults=defaults)
    (result.models_created if created else result.models_updated).append(name)

    routes = data.get("routes")
    if routes is None:
        if "provider" not in data:
            raise CatalogError(f"model {name}: give `provider` (+ `upstream_model`) or `routes`")
        routes = [{"provider": data["provider"], "upstream_model": data.get("upstream_model") or name}]
    keep = []
    for position, route in enumerate(routes, start=1):
        provider = providers.get(route.get("provider")) or Provider.objects.filter(name=route.get("provider")).first()
        if provider is None:
            raise CatalogError(f"model {name}: unknown provider {route.get('provider')!r}")
        obj, _ = Route.objects.update_or_create(
            model=model,
            provider=provider,
            defaults={
                "upstream_model": route.get("upstream_model") or name,
                "priority": route.get("priority", position),
                "weight": route.get("weight", 1),
                "is_enabled": route.get("enabled", True),
            },
        )
        keep.append(obj.pk)
    model.routes.exclude(pk__in=keep).delete()

    prices = {
        field_name: _price_nanos(data[key], where=f"model {name}, price {key}")
        for key, field_name in PRICE_FIELDS.items()
        if data.get(key) is not None
    }
    current = model.prices.order_by("-effective_from").first()
    wanted = {field_name: prices.get(field_name, 0) for field_name in PRICE_FIELDS.values()}
    if current is None or any(getattr(current, f) != v for f, v in wanted.items()):
        # Prices are history: a change adds a row effective now, earlier usage keeps its price.
        Price.objects.create(model=model, **wanted)
        if current is not None:
            result.prices_changed.append(name)


@transaction.atomic
def catalog_load(data: dict) -> LoadResult:
    """Upsert providers and models (by name) from the catalog format of ARCHITECTURE.md."""
    if not isinstance(data, dict):
        raise CatalogError("the catalog must be a mapping with `providers` and `models` lists")
    result = LoadResult()
    providers = {}
    for item in data.get("providers") or []:
        provider = _load_provider(item, result)
        providers[provider.name] = provider
    for item in data.get("models") or []:
        _load_model(item, providers, result)
    transaction.on_commit(snapshot.catalog_invalidate)
    return result


def _usd(nanos: int):
    value = nanos_to_usd(nanos).normalize()
    return int(value) if value == value.to_integral_value() else float(value)


def catalog_dump(*, include_secrets: bool = False) -> dict:
    """The catalog in the loadcatalog format; secrets only when asked (never api_key by default)."""
    providers = []
    for provider in Provider.objects.order_by("name"):
        item = {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url}
        if provider.api_key_env:
            item["api_key_env"] = provider.api_key_env
        if include_secrets and provider.api_key_encrypted:
            item["api_key"] = decrypt_secret(provider.api_key_encrypted)
        for key, attr in (("extra_headers", "extra_headers"), ("options", "options")):
            if getattr(provider, attr):
                item[key] = getattr(provider, attr)
        if provider.connect_timeout_s is not None:
            item["connect_timeout"] = provider.connect_timeout_s
        if provider.read_timeout_s is not None:
            item["read_timeout"] = provider.read_timeout_s
        if not provider.is_enabled:
            item["enabled"] = False
        providers.append(item)

    models = []
    for model in Model.objects.order_by("name").prefetch_related("routes__provider", "prices"):
        item: dict = {"name": model.name}
        for key in MODEL_FIELDS:
            value = getattr(model, key)
            default = Model._meta.get_field(key).get_default()
            if value != default and value not in (None, ""):
                item["enabled" if key == "is_enabled" else key] = value
        routes = list(model.routes.all())
        if len(routes) == 1 and routes[0].priority == 1 and routes[0].weight == 1 and routes[0].is_enabled:
            item["provider"] = routes[0].provider.name
            item["upstream_model"] = routes[0].upstream_model
        else:
            item["routes"] = [
                {"provider": r.provider.name, "upstream_model": r.upstream_model, "priority": r.priority,
                 "weight": r.weight, **({} if r.is_enabled else {"enabled": False})}
                for r in routes
            ]  # fmt: skip
        price = max(model.prices.all(), key=lambda p: p.effective_from, default=None)
        if price is not None:
            for key, field_name in PRICE_FIELDS.items():
                nanos = getattr(price, field_name)
                if nanos or key in ("input", "output"):
                    item[key] = _usd(nanos)
        models.append(item)
    return {"providers": providers, "models": models}
