"""Catalog import/export in the ARCHITECTURE.md format: `catalog_load` is the one path for YAML/JSON.

A dump loads back unchanged: every field the loader reads is written when it differs from its
default, and loading an unchanged price adds no price row.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from billing.money import MoneyError, nanos_to_usd, usd_to_nanos
from catalog.crypto import decrypt_secret, encrypt_secret, mask_secret
from catalog.models import Model, Price, Provider, ProviderKey, Route
from catalog.services.audit import audit_record, catalog_changed
from catalog.services.models import price_as_usd
from proxy.translate.betas import anthropic_betas_policy_problems

# YAML price key -> Price field. Token prices are USD per 1M tokens.
PRICE_FIELDS = {
    "input": "input_nanos_per_mtok",
    "output": "output_nanos_per_mtok",
    "cache_read": "cache_read_nanos_per_mtok",
    "cache_write": "cache_write_nanos_per_mtok",
    "image": "image_nanos",
    "audio_minute": "audio_minute_nanos",
    "characters": "character_nanos_per_mchar",
    # Server tools, USD per 1,000 requests (Anthropic's unit: web_search 10 = $0.01 a search), issue 14.
    "web_search": "web_search_nanos_per_kreq",
    "web_fetch": "web_fetch_nanos_per_kreq",
}
# YAML `cost:` mapping key -> Price field: what the provider charges us, USD per 1M tokens.
COST_FIELDS = {
    "input": "cost_input_nanos_per_mtok",
    "output": "cost_output_nanos_per_mtok",
    "cache_read": "cost_cache_read_nanos_per_mtok",
    "cache_write": "cost_cache_write_nanos_per_mtok",
}
MODEL_FIELDS = (
    "display_name", "description", "mode", "context_window", "max_output_tokens", "thinking",
    "supports_tools", "supports_vision", "structured_output", "supports_audio", "supports_images",
    "visibility", "is_enabled",
)  # fmt: skip
# Model protocol flags (Model.options), written as top-level model keys; any other flag goes under `options:`.
MODEL_OPTION_KEYS = ("mid_conv_system", "auto_cache", "reasoning_efforts")
ROUTE_CAPS = ("max_concurrency", "rpm_limit")
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


def _load_provider(data: dict, result: LoadResult, actor) -> Provider:
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
    if not isinstance(defaults["options"], dict):
        raise CatalogError(f"provider {name}: options must be a mapping")
    problems = anthropic_betas_policy_problems(defaults["options"].get("betas"))
    if problems:
        raise CatalogError(f"provider {name}: {'; '.join(problems)}")
    provider, created = Provider.objects.update_or_create(name=name, defaults=defaults)
    keys = data.get("api_keys")
    if keys is not None and (not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys)):
        raise CatalogError(f"provider {name}: api_keys must be a list of non-empty strings")
    primary = keys[0] if keys else data.get("api_key")
    if (keys is not None or "api_key" in data) and (primary or "") != decrypt_secret(provider.api_key_encrypted):
        before = decrypt_secret(provider.api_key_encrypted)
        provider.api_key_encrypted = encrypt_secret(primary or "")
        provider.save(update_fields=["api_key_encrypted"])
        audit_record(actor=actor, action="key.set", target=provider,
                     before={"key": mask_secret(before) if before else None},
                     after={"key": mask_secret(primary) if primary else None})  # fmt: skip
    if keys is not None:
        _load_extra_keys(provider, keys[1:], actor)
    (result.providers_created if created else result.providers_updated).append(name)
    return provider


def _load_extra_keys(provider: Provider, wanted: list[str], actor) -> None:
    """Make the provider's rotation keys exactly `wanted` (compared decrypted, audited masked)."""
    existing = {decrypt_secret(key.key_encrypted): key for key in provider.keys.all()}
    for secret, key in existing.items():
        if secret not in wanted:
            audit_record(actor=actor, action="key.remove", target=provider, before={"key": key.key_hint})
            key.delete()
    for secret in wanted:
        if secret not in existing:
            ProviderKey.objects.create(
                provider=provider, key_encrypted=encrypt_secret(secret), key_hint=mask_secret(secret)
            )
            audit_record(actor=actor, action="key.add", target=provider, after={"key": mask_secret(secret)})


def _load_model(data: dict, providers: dict[str, Provider], result: LoadResult, actor) -> None:
    name = data.get("name")
    if not name:
        raise CatalogError("every model needs a name")
    defaults = {key: data[key] for key in MODEL_FIELDS if key in data}
    if "enabled" in data:
        defaults["is_enabled"] = data["enabled"]
    if "thinking" in data and data["thinking"] in (None, False, "none"):
        defaults["thinking"] = ""
    if "aliases" in data:
        aliases = data["aliases"] or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise CatalogError(f"model {name}: aliases must be a list of strings")
        defaults["aliases"] = aliases
    if "options" in data or any(key in data for key in MODEL_OPTION_KEYS):
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise CatalogError(f"model {name}: options must be a mapping")
        options = {**options, **{key: data[key] for key in MODEL_OPTION_KEYS if key in data}}
        efforts = options.get("reasoning_efforts")
        if efforts is not None and (not isinstance(efforts, list) or not all(isinstance(e, str) for e in efforts)):
            raise CatalogError(f"model {name}: reasoning_efforts must be a list of strings")
        defaults["options"] = {key: value for key, value in options.items() if value not in (None, False, [])}
    if defaults.get("visibility", Model.Visibility.PUBLIC) not in Model.Visibility.values:
        raise CatalogError(f"model {name}: visibility must be one of {Model.Visibility.values}")
    model, created = Model.objects.update_or_create(name=name, defaults=defaults)
    (result.models_created if created else result.models_updated).append(name)
    if "organizations" in data:
        slugs = data["organizations"] or []
        orgs = list(Organization.objects.filter(slug__in=slugs))
        missing = sorted(set(slugs) - {org.slug for org in orgs})
        if missing:
            raise CatalogError(f"model {name}: unknown organisations {missing}")
        model.organizations.set(orgs)

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
                **{cap: route.get(cap) for cap in ROUTE_CAPS},
            },
        )
        keep.append(obj.pk)
    model.routes.exclude(pk__in=keep).delete()

    cost = data.get("cost") or {}
    if not isinstance(cost, dict) or set(cost) - set(COST_FIELDS):
        raise CatalogError(f"model {name}: cost must be a mapping of {sorted(COST_FIELDS)}")
    wanted = {
        field_name: _price_nanos(data[key], where=f"model {name}, price {key}") if data.get(key) is not None else 0
        for key, field_name in PRICE_FIELDS.items()
    }
    wanted.update({
        field_name: _price_nanos(cost[key], where=f"model {name}, cost {key}") if cost.get(key) is not None else 0
        for key, field_name in COST_FIELDS.items()
    })  # fmt: skip
    current = model.prices.filter(effective_from__lte=timezone.now()).order_by("-effective_from", "-id").first()
    if current is None or any(getattr(current, f) != v for f, v in wanted.items()):
        # Prices are history: a change adds a row effective now, earlier usage keeps its price.
        price = Price.objects.create(model=model, **wanted)
        if current is not None:
            result.prices_changed.append(name)
        audit_record(actor=actor, action="price.set", target=model, before=price_as_usd(current),
                     after=price_as_usd(price))  # fmt: skip


@transaction.atomic
def catalog_load(data: dict, *, actor="loadcatalog") -> LoadResult:
    """Upsert providers and models (by name) from the catalog format of ARCHITECTURE.md."""
    if not isinstance(data, dict):
        raise CatalogError("the catalog must be a mapping with `providers` and `models` lists")
    result = LoadResult()
    providers = {}
    for item in data.get("providers") or []:
        if not isinstance(item, dict):
            raise CatalogError("every provider must be a mapping")
        provider = _load_provider(item, result, actor)
        providers[provider.name] = provider
    for item in data.get("models") or []:
        if not isinstance(item, dict):
            raise CatalogError("every model must be a mapping")
        _load_model(item, providers, result, actor)
    catalog_changed()
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
        if include_secrets:
            extra = [decrypt_secret(key.key_encrypted) for key in provider.keys.order_by("id")]
            primary = decrypt_secret(provider.api_key_encrypted)
            if extra:
                item["api_keys"] = [primary, *extra] if primary else extra
            elif primary:
                item["api_key"] = primary
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
    now = timezone.now()
    for model in Model.objects.order_by("name").prefetch_related("routes__provider", "prices", "organizations"):
        item: dict = {"name": model.name}
        if model.aliases:
            item["aliases"] = list(model.aliases)
        for key in MODEL_FIELDS:
            value = getattr(model, key)
            default = Model._meta.get_field(key).get_default()
            if value != default and value not in (None, ""):
                item["enabled" if key == "is_enabled" else key] = value
        options = dict(model.options or {})
        item.update({key: options.pop(key) for key in MODEL_OPTION_KEYS if key in options})
        if options:
            item["options"] = options
        orgs = sorted(org.slug for org in model.organizations.all())
        if orgs:
            item["organizations"] = orgs
        routes = list(model.routes.all())
        plain = all(getattr(r, cap) is None for r in routes for cap in ROUTE_CAPS)
        if len(routes) == 1 and routes[0].priority == 1 and routes[0].weight == 1 and routes[0].is_enabled and plain:
            item["provider"] = routes[0].provider.name
            item["upstream_model"] = routes[0].upstream_model
        else:
            item["routes"] = [
                {"provider": r.provider.name, "upstream_model": r.upstream_model, "priority": r.priority,
                 "weight": r.weight, **({} if r.is_enabled else {"enabled": False}),
                 **{cap: getattr(r, cap) for cap in ROUTE_CAPS if getattr(r, cap) is not None}}
                for r in routes
            ]  # fmt: skip
        in_force = [p for p in model.prices.all() if p.effective_from <= now]
        price = max(in_force, key=lambda p: (p.effective_from, p.id), default=None)
        if price is not None:
            for key, field_name in PRICE_FIELDS.items():
                nanos = getattr(price, field_name)
                if nanos or key in ("input", "output"):
                    item[key] = _usd(nanos)
            cost = {key: _usd(getattr(price, f)) for key, f in COST_FIELDS.items() if getattr(price, f)}
            if cost:
                item["cost"] = cost
        models.append(item)
    return {"providers": providers, "models": models}
