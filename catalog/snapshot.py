"""The catalog as the gateway reads it: an immutable in-process snapshot, no query per request.

A snapshot lives RUAPI_CATALOG_CACHE_TTL seconds; writes through catalog.services invalidate the
local one at once, so a catalog change reaches every process within that bound.
"""

import os
import random
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone

from billing.money import TokenPrices
from catalog.crypto import decrypt_secret
from catalog.models import Model, Price, Route
from ruapi.db import run_db

PROTOCOL_OF_KIND = {"openai": "openai", "anthropic": "anthropic", "echo": "openai"}


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    id: int
    name: str
    kind: str
    base_url: str
    api_key: str = field(repr=False)
    extra_headers: dict = field(default_factory=dict, repr=False)
    options: dict = field(default_factory=dict)
    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None

    @property
    def protocol(self) -> str:
        """The wire protocol the provider speaks: "openai" or "anthropic"."""
        return PROTOCOL_OF_KIND[self.kind]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    provider: ProviderSpec
    upstream_model: str
    priority: int
    weight: int


@dataclass(frozen=True, slots=True)
class UnitPrices:
    image_nanos: int = 0
    audio_minute_nanos: int = 0
    character_nanos_per_mchar: int = 0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: int
    name: str
    display_name: str
    description: str
    mode: str
    context_window: int | None
    max_output_tokens: int | None
    thinking: str
    supports_tools: bool
    supports_vision: bool
    structured_output: bool
    created: int  # unix seconds
    price_id: int | None
    prices: TokenPrices
    unit_prices: UnitPrices
    routes: tuple[RouteSpec, ...]

    def ordered_routes(self, rng: random.Random | None = None) -> list[RouteSpec]:
        """Routes in try order: by priority, weighted-random within one priority."""
        rng = rng or random
        ordered: list[RouteSpec] = []
        for priority in sorted({r.priority for r in self.routes}):
            group = [r for r in self.routes if r.priority == priority]
            while group:
                pick = rng.choices(group, weights=[max(r.weight, 0) or 1 for r in group])[0]
                ordered.append(pick)
                group.remove(pick)
        return ordered


@dataclass(frozen=True)
class CatalogSnapshot:
    models: dict[str, ModelSpec]
    loaded_at: float

    def get(self, name: str) -> ModelSpec | None:
        return self.models.get(name)


def _provider_spec(provider) -> ProviderSpec:
    api_key = decrypt_secret(provider.api_key_encrypted)
    if not api_key and provider.api_key_env:
        api_key = os.environ.get(provider.api_key_env, "")
    return ProviderSpec(
        id=provider.id,
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url.rstrip("/"),
        api_key=api_key,
        extra_headers=dict(provider.extra_headers or {}),
        options=dict(provider.options or {}),
        connect_timeout_s=provider.connect_timeout_s,
        read_timeout_s=provider.read_timeout_s,
    )


def catalog_build() -> CatalogSnapshot:
    """Read the enabled catalog from the database (prices in force now)."""
    now = timezone.now()
    routes = Route.objects.filter(is_enabled=True, provider__is_enabled=True).select_related("provider")
    prices = Price.objects.filter(effective_from__lte=now).order_by("-effective_from")
    providers: dict[int, ProviderSpec] = {}
    models: dict[str, ModelSpec] = {}
    queryset = Model.objects.filter(is_enabled=True).prefetch_related(
        Prefetch("routes", queryset=routes, to_attr="active_routes"),
        Prefetch("prices", queryset=prices, to_attr="current_prices"),
    )
    for model in queryset:
        route_specs = []
        for route in model.active_routes:
            if route.provider_id not in providers:
                providers[route.provider_id] = _provider_spec(route.provider)
            route_specs.append(
                RouteSpec(providers[route.provider_id], route.upstream_model, route.priority, route.weight)
            )
        price = model.current_prices[0] if model.current_prices else None
        models[model.name] = ModelSpec(
            id=model.id,
            name=model.name,
            display_name=model.display_name or model.name,
            description=model.description,
            mode=model.mode,
            context_window=model.context_window,
            max_output_tokens=model.max_output_tokens,
            thinking=model.thinking,
            supports_tools=model.supports_tools,
            supports_vision=model.supports_vision,
            structured_output=model.structured_output,
            created=int(model.created_at.timestamp()),
            price_id=price.id if price else None,
            prices=TokenPrices(
                input_nanos_per_mtok=price.input_nanos_per_mtok if price else 0,
                output_nanos_per_mtok=price.output_nanos_per_mtok if price else 0,
                cache_read_nanos_per_mtok=price.cache_read_nanos_per_mtok if price else 0,
                cache_write_nanos_per_mtok=price.cache_write_nanos_per_mtok if price else 0,
            ),
            unit_prices=UnitPrices(
                image_nanos=price.image_nanos if price else 0,
                audio_minute_nanos=price.audio_minute_nanos if price else 0,
                character_nanos_per_mchar=price.character_nanos_per_mchar if price else 0,
            ),
            routes=tuple(route_specs),
        )
    return CatalogSnapshot(models=models, loaded_at=time.monotonic())


_current: CatalogSnapshot | None = None


async def catalog_snapshot() -> CatalogSnapshot:
    """The cached snapshot, rebuilt when older than RUAPI_CATALOG_CACHE_TTL."""
    global _current
    snap = _current
    if snap is None or time.monotonic() - snap.loaded_at > settings.RUAPI_CATALOG_CACHE_TTL:
        snap = await run_db(catalog_build)
        _current = snap
    return snap


def catalog_invalidate() -> None:
    """Drop this process's snapshot; the next request rebuilds it."""
    global _current
    _current = None
