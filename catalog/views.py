"""The public pricing pages (no login): thin views over catalog.selectors."""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from catalog import selectors
from dashboard.views import public_base_url

# A price kind -> (its label, its unit), for every kind catalog.selectors reports.
PRICE_KINDS = {
    "input": ("Input", "per 1M tokens"),
    "output": ("Output", "per 1M tokens"),
    "cache_read": ("Cached input (read)", "per 1M tokens"),
    "cache_write": ("Cache write", "per 1M tokens"),
    "image": ("Image", "per image"),
    "audio_minute": ("Audio", "per minute"),
    "characters": ("Speech input", "per 1M characters"),
    "web_search": ("Web search", "per 1,000 requests"),
    "web_fetch": ("Web fetch", "per 1,000 requests"),
}


def price_rows(model: selectors.PublicModel) -> list[tuple[str, str, str]]:
    """(label, USD, unit) of each price that applies: a token price of zero is left out for models
    that are not billed by tokens (image, speech, transcription) and for an embedding's output."""
    rows = []
    for kind, usd in model.prices_usd.items():
        label, unit = PRICE_KINDS.get(kind, (kind.replace("_", " ").capitalize(), ""))
        tokens_only = kind in ("input", "output") and float(usd) == 0
        if tokens_only and (model.mode not in ("chat", "embedding") or kind == "output"):
            continue
        if kind in ("web_search", "web_fetch") and float(usd) == 0:  # server tools the model is not sold with
            continue
        rows.append((label, usd, unit))
    return rows


@require_GET
def pricing(request):
    return render(request, "catalog/pricing.html", {"models": selectors.public_models()})


@require_GET
def pricing_model(request, name: str):
    model = selectors.public_model(name)
    if model is None:
        raise Http404("No such public model")
    return render(request, "catalog/pricing_model.html", {
        "model": model, "base_url": public_base_url(request), "price_rows": price_rows(model),
    })  # fmt: skip
