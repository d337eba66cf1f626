"""The catalog as the gateway reads it: an immutable in-process snapshot, no query per request.

How a catalog change reaches every process (issue 3, item 5):

- the process that wrote it drops its snapshot at once (`catalog_invalidate`, after commit);
- with REDIS_URL set, every write also bumps a version key in Redis (`catalog_publish_change`);
  each process GETs that key at most once per RUAPI_CATALOG_VERSION_CHECK_INTERVAL (1 s) on the
  hot path and rebuilds when it moved — so a change is live everywhere within about a second;
- whatever happens to Redis, no snapshot is older than RUAPI_CATALOG_CACHE_TTL (5 s).

A snapshot also carries prices that take effect later, so a request is priced with the row in
force when it started (`ModelSpec.priced_at`) even if the snapshot was built before that moment.
"""

import itertools
import logging
import os
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone

from billing.money import TokenPrices
from catalog.crypto import decrypt_secret
from catalog.models import Model, Price, ProviderKey, Route
from ruapi.db import run_db
from ruapi.singleflight import SingleFlight

logger = logging.getLogger(__name__)

PROTOCOL_OF_KIND = {
    "openai": "openai", "anthropic": "anthropic", "gemini": "gemini", "responses": "responses", "echo": "openai",
}  # fmt: skip
VERSION_KEY = "ruapi:catalog:version"
# Per provider, per process: the round-robin position survives snapshot rebuilds (itertools.count
# is atomic enough under the GIL; an occasional repeat is harmless).
_KEY_TURNS: dict[int, itertools.count] = {}


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    id: int
    name: str
    kind: str
    base_url: str
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    extra_headers: dict = field(default_factory=dict, repr=False)
    options: dict = field(default_factory=dict)
    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None
    is_healthy: bool = True  # False when the last "test connection" failed

    @property
    def protocol(self) -> str:
        """The wire protocol the provider speaks: "openai", "anthropic", "gemini" or "responses"."""
        return PROTOCOL_OF_KIND[self.kind]

    @property
    def api_key(self) -> str:
        """The primary key (for callers that need a stable one, e.g. model listing)."""
        return self.api_keys[0] if self.api_keys else ""

    def next_api_key(self) -> str:
        """The key for the next upstream request: round-robin over the provider's enabled keys."""
        if not self.api_keys:
            return ""
        turn = _KEY_TURNS.setdefault(self.id, itertools.count())
        return self.api_keys[next(turn) % len(self.api_keys)]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    provider: ProviderSpec
    upstream_model: str
    priority: int
    weight: int
    id: int = 0
    max_concurrency: int | None = None
    rpm_limit: int | None = None


@dataclass(frozen=True, slots=True)
class UnitPrices:
    image_nanos: int = 0
    audio_minute_nanos: int = 0
    character_nanos_per_mchar: int = 0


@dataclass(frozen=True, slots=True)
class PriceSpec:
    """One price row: from `effective_from` (unix seconds) on."""

    id: int
    effective_from: float
    prices: TokenPrices
    unit_prices: UnitPrices


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
    aliases: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    is_public: bool = True
    org_ids: frozenset[int] = frozenset()  # who may use a restricted model
    later_prices: tuple[PriceSpec, ...] = ()  # rows not yet in force at build time, oldest first
    # Model.options: protocol flags (mid_conv_system, auto_cache, reasoning_efforts), issue 14.
    options: dict = field(default_factory=dict)

    def visible_to(self, org_id: int | None) -> bool:
        return self.is_public or (org_id is not None and org_id in self.org_ids)

    def priced_at(self, when: float) -> "ModelSpec":
        """This spec with the price row in force at `when` (unix seconds): a request keeps its start price."""
        current = None
        for price in self.later_prices:
            if price.effective_from <= when:
                current = price
        if current is None:
            return self
        later = tuple(p for p in self.later_prices if p.effective_from > when)
        return replace(
            self, price_id=current.id, prices=current.prices, unit_prices=current.unit_prices, later_prices=later
        )

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
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> model name
    disabled: frozenset[str] = frozenset()  # names and aliases of disabled models, for a clearer 404

    def get(self, name: str) -> ModelSpec | None:
        return self.models.get(name) or self.models.get(self.aliases.get(name, ""))

    def is_disabled(self, name: str) -> bool:
        return name in self.disabled


def _provider_spec(provider, extra_keys: list[str]) -> ProviderSpec:
    keys = [decrypt_secret(provider.api_key_encrypted)]
    if not keys[0] and provider.api_key_env:
        keys = [os.environ.get(provider.api_key_env, "")]
    keys = [key for key in keys + extra_keys if key]
    return ProviderSpec(
        id=provider.id,
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url.rstrip("/"),
        api_keys=tuple(keys),
        extra_headers=dict(provider.extra_headers or {}),
        options=dict(provider.options or {}),
        connect_timeout_s=provider.connect_timeout_s,
        read_timeout_s=provider.read_timeout_s,
        is_healthy=provider.health_status != "unhealthy",
    )


def provider_spec(provider) -> ProviderSpec:
    """One provider row as the upstream clients take it (admin "test connection" / "sync models")."""
    extra = [decrypt_secret(key.key_encrypted) for key in provider.keys.filter(is_enabled=True).order_by("id")]
    return _provider_spec(provider, extra)


def _price_spec(price: Price) -> PriceSpec:
    return PriceSpec(
        id=price.id,
        effective_from=price.effective_from.timestamp(),
        prices=TokenPrices(
            input_nanos_per_mtok=price.input_nanos_per_mtok,
            output_nanos_per_mtok=price.output_nanos_per_mtok,
            cache_read_nanos_per_mtok=price.cache_read_nanos_per_mtok,
            cache_write_nanos_per_mtok=price.cache_write_nanos_per_mtok,
            web_search_nanos_per_kreq=price.web_search_nanos_per_kreq,
            web_fetch_nanos_per_kreq=price.web_fetch_nanos_per_kreq,
        ),
        unit_prices=UnitPrices(
            image_nanos=price.image_nanos,
            audio_minute_nanos=price.audio_minute_nanos,
            character_nanos_per_mchar=price.character_nanos_per_mchar,
        ),
    )


def _current_and_later(prices: list[Price], now: datetime) -> tuple[PriceSpec | None, tuple[PriceSpec, ...]]:
    """The row in force now and the rows scheduled after it (prices ordered by effective_from)."""
    current = None
    later = []
    for price in prices:
        if price.effective_from <= now:
            current = price
        else:
            later.append(_price_spec(price))
    return (_price_spec(current) if current else None), tuple(later)


def catalog_build() -> CatalogSnapshot:
    """Read the enabled catalog from the database (three queries plus one per prefetch)."""
    now = timezone.now()
    routes = Route.objects.filter(is_enabled=True, provider__is_enabled=True).select_related("provider")
    prices = Price.objects.order_by("effective_from", "id")
    extra_keys: dict[int, list[str]] = {}
    for key in ProviderKey.objects.filter(is_enabled=True, provider__is_enabled=True).order_by("id"):
        extra_keys.setdefault(key.provider_id, []).append(decrypt_secret(key.key_encrypted))
    providers: dict[int, ProviderSpec] = {}
    models: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    disabled: set[str] = set()
    for name, alias_list in Model.objects.filter(is_enabled=False).values_list("name", "aliases"):
        disabled.update([name, *(alias_list or [])])
    queryset = Model.objects.filter(is_enabled=True).prefetch_related(
        Prefetch("routes", queryset=routes, to_attr="active_routes"),
        Prefetch("prices", queryset=prices, to_attr="all_prices"),
        "organizations",
    )
    for model in queryset:
        route_specs = []
        for route in model.active_routes:
            if route.provider_id not in providers:
                providers[route.provider_id] = _provider_spec(route.provider, extra_keys.get(route.provider_id, []))
            route_specs.append(
                RouteSpec(
                    providers[route.provider_id],
                    route.upstream_model,
                    route.priority,
                    route.weight,
                    id=route.id,
                    max_concurrency=route.max_concurrency,
                    rpm_limit=route.rpm_limit,
                )
            )
        price, later = _current_and_later(model.all_prices, now)
        for alias in model.aliases or []:
            aliases.setdefault(alias, model.name)
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
            prices=price.prices if price else TokenPrices(),
            unit_prices=price.unit_prices if price else UnitPrices(),
            routes=tuple(route_specs),
            aliases=tuple(model.aliases or ()),
            capabilities=tuple(model.capabilities),
            is_public=model.visibility == Model.Visibility.PUBLIC,
            org_ids=frozenset(org.id for org in model.organizations.all()),
            later_prices=later,
            options=dict(model.options or {}),
        )
    return CatalogSnapshot(models=models, loaded_at=time.monotonic(), aliases=aliases, disabled=frozenset(disabled))


class CatalogCache:
    """One process's snapshot and its view of the shared version (a class so tests can run two)."""

    def __init__(self) -> None:
        self.current: CatalogSnapshot | None = None
        self.seen_version: bytes | None = None
        self.next_check = 0.0
        self.generation = 0  # bumped by every invalidation: a build that started before it is not kept
        self.builds = SingleFlight()

    async def _follow_remote_changes(self) -> None:
        """Drop the snapshot when another process published a change (one GET per interval at most)."""
        from accounts import shared_state

        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + settings.RUAPI_CATALOG_VERSION_CHECK_INTERVAL
        try:
            version = await shared_state.async_client().get(VERSION_KEY)
        except Exception as exc:  # Redis down: the TTL bound still holds
            logger.warning("catalog version check failed, relying on RUAPI_CATALOG_CACHE_TTL: %s", exc)
            return
        if version != self.seen_version:
            self.seen_version = version
            self.invalidate()

    async def get(self) -> CatalogSnapshot:
        """The cached snapshot, rebuilt when stale (TTL) or changed elsewhere (Redis version)."""
        if settings.REDIS_URL:
            await self._follow_remote_changes()
        snap = self.current
        if snap is None or time.monotonic() - snap.loaded_at > settings.RUAPI_CATALOG_CACHE_TTL:
            snap = await self.builds.run(self.generation, self._build)
        return snap

    async def _build(self) -> CatalogSnapshot:
        generation = self.generation
        snap = await run_db(catalog_build)
        if generation == self.generation:
            self.current = snap
        return snap

    def invalidate(self) -> None:
        self.generation += 1
        self.current = None
        self.builds.forget()


_cache = CatalogCache()


async def catalog_snapshot() -> CatalogSnapshot:
    """This process's cached snapshot."""
    return await _cache.get()


def catalog_invalidate() -> None:
    """Drop this process's snapshot; the next request rebuilds it."""
    _cache.invalidate()


def catalog_publish_change() -> None:
    """A catalog write committed: this process rebuilds now, every other within ~1 s (Redis) or the TTL.

    Call after commit (transaction.on_commit), or another process could rebuild from the old rows.
    """
    catalog_invalidate()
    if settings.REDIS_URL:
        from accounts import shared_state

        try:
            shared_state.sync_client().incr(VERSION_KEY)
        except Exception as exc:  # the change is committed; the TTL bound still applies
            logger.warning("could not publish a catalog change to Redis: %s", exc)
