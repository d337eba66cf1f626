"""Reads of the catalog for pages (not the hot path: that reads catalog.snapshot)."""

from dataclasses import dataclass

from django.db.models import Prefetch, Q
from django.utils import timezone

from billing.money import nanos_to_usd
from catalog.models import Model, Price, Route


@dataclass(frozen=True)
class PublicModel:
    name: str
    display_name: str
    description: str
    mode: str
    context_window: int | None
    max_output_tokens: int | None
    capabilities: list[str]
    prices_usd: dict[str, str]  # per 1M tokens (or per unit), only non-zero ones plus input/output

    @property
    def search_text(self) -> str:
        return " ".join([self.name, self.display_name, self.mode, *self.capabilities]).lower()


_PRICE_LABELS = {
    "input": "input_nanos_per_mtok",
    "output": "output_nanos_per_mtok",
    "cache_read": "cache_read_nanos_per_mtok",
    "cache_write": "cache_write_nanos_per_mtok",
    "image": "image_nanos",
    "audio_minute": "audio_minute_nanos",
    "characters": "character_nanos_per_mchar",
    "web_search": "web_search_nanos_per_kreq",
    "web_fetch": "web_fetch_nanos_per_kreq",
}


def public_models() -> list[PublicModel]:
    """Enabled, publicly visible models that have an enabled route, with the price in force now."""
    now = timezone.now()
    prices = Price.objects.filter(effective_from__lte=now).order_by("-effective_from", "-id")
    routes = Route.objects.filter(is_enabled=True, provider__is_enabled=True)
    queryset = (
        Model.objects.filter(is_enabled=True, visibility=Model.Visibility.PUBLIC)
        .filter(Q(routes__is_enabled=True, routes__provider__is_enabled=True))
        .distinct()
        .prefetch_related(Prefetch("prices", queryset=prices, to_attr="in_force"),
                          Prefetch("routes", queryset=routes, to_attr="live_routes"))
        .order_by("name")
    )
    result = []
    for model in queryset:
        price = model.in_force[0] if model.in_force else None
        prices_usd = {}
        if price is not None:
            for label, field_name in _PRICE_LABELS.items():
                nanos = getattr(price, field_name)
                if nanos or label in ("input", "output"):
                    prices_usd[label] = f"{nanos_to_usd(nanos).normalize():f}"
        result.append(
            PublicModel(
                name=model.name,
                display_name=model.display_name or model.name,
                description=model.description,
                mode=model.mode,
                context_window=model.context_window,
                max_output_tokens=model.max_output_tokens,
                capabilities=model.capabilities,
                prices_usd=prices_usd,
            )
        )
    return result


def public_model(name: str) -> PublicModel | None:
    return next((model for model in public_models() if model.name == name), None)
