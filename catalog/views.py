"""The public pricing pages (no login): thin views over catalog.selectors."""

from django.conf import settings
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from catalog import selectors


@require_GET
def pricing(request):
    return render(request, "catalog/pricing.html", {"models": selectors.public_models()})


@require_GET
def pricing_model(request, name: str):
    model = selectors.public_model(name)
    if model is None:
        raise Http404("No such public model")
    base = settings.RUAPI_PUBLIC_BASE_URL.rstrip("/")
    return render(request, "catalog/pricing_model.html", {"model": model, "base_url": base})
