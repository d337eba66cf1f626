"""Dashboard pages (issue 6): usage analytics with the live feed, CSV export, the staff platform view
and the playground. Tenant pages go through dashboard.gate.tenant_view; selectors take org=."""

import csv
from datetime import UTC

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render

from accounts.permissions import Perm
from billing.money import format_usd, nanos_to_usd
from catalog.snapshot import catalog_build
from dashboard.gate import tenant_view
from dashboard.views import public_base_url
from usage import selectors
from usage.consumers import PLAYGROUND_PERM
from usage.services import Period, rollups_refresh_if_stale

PAGE_SIZE = 50
CSV_COLUMNS = ["time", "request_id", "key", "source", "user", "model", "provider", "endpoint", "status",
               "error", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd",
               "latency_ms", "ttft_ms"]  # fmt: skip


def _refresh_embedded() -> None:
    # The embedded default runs no Celery beat: keep the rollups fresh from the page itself.
    if settings.CELERY_TASK_ALWAYS_EAGER:
        rollups_refresh_if_stale()


def _usd(nanos: int) -> float:
    return float(nanos_to_usd(nanos))


def _label(bucket, period: str) -> str:
    bucket = bucket.astimezone(UTC)
    return bucket.strftime("%m-%d %H:00") if period == Period.HOUR else bucket.strftime("%Y-%m-%d")


def _top(rows: list[dict], limit: int = 10) -> dict:
    return {"labels": [r["label"] for r in rows[:limit]], "spend": [_usd(r["cost_nanos"]) for r in rows[:limit]]}


def _key_label(event) -> str:
    if event.api_key_id and event.api_key:
        return f"{event.api_key.name or 'key'} ({event.api_key.prefix}…)"
    return "playground" if event.source == "playground" else "—"


@tenant_view(Perm.USAGE_VIEW)
def usage(request):
    _refresh_embedded()
    org = request.tenant.org
    filters = selectors.usage_filter_from(request.GET)
    series = selectors.usage_series(org=org, filters=filters)
    by_model = selectors.usage_breakdown(org=org, filters=filters, by="model")
    by_key = selectors.usage_breakdown(org=org, filters=filters, by="api_key")
    totals = selectors.usage_totals(org=org, filters=filters)
    page = Paginator(selectors.usage_event_list(org=org, filters=filters), PAGE_SIZE).get_page(request.GET.get("page"))
    chart = {
        "labels": [_label(r["bucket_start"], filters.period) for r in series],
        "spend": [_usd(r["cost_nanos"]) for r in series],
        "requests": [r["requests"] for r in series],
        "input_tokens": [r["input_tokens"] for r in series],
        "output_tokens": [r["output_tokens"] for r in series],
        "by_model": _top(by_model),
        "by_key": _top(by_key),
    }  # fmt: skip
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "usage/usage.html", {
        "filters": filters, "range": request.GET.get("range", "" if "start" in request.GET else "7d"),
        "ranges": list(selectors.RANGES), "choices": selectors.usage_filter_choices(org=org),
        "totals": {**totals, "cost": format_usd(totals["cost_nanos"])}, "chart": chart,
        "by_model": by_model, "by_key": by_key, "page": page,
        "rows": [(e, _key_label(e)) for e in page.object_list], "query": query.urlencode(),
        "live_path": f"/ws/orgs/{org.id}/usage/live/", "start_date": filters.start.date().isoformat(),
        "end_date": (filters.end.astimezone(UTC).date().isoformat()),
    })  # fmt: skip


class _Echo:
    def write(self, value):
        return value


@tenant_view(Perm.USAGE_VIEW)
def usage_export(request):
    """The request log of the current filters as CSV (streamed: a range can hold many rows)."""
    filters = selectors.usage_filter_from(request.GET)
    events = selectors.usage_event_list(org=request.tenant.org, filters=filters)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for e in events.iterator(chunk_size=2000):
            yield writer.writerow([
                e.created_at.astimezone(UTC).isoformat(), e.request_id, _key_label(e), e.source,
                e.user.email if e.user_id and e.user else "", e.model, e.provider, e.endpoint, e.status_code,
                e.error_type, e.input_tokens, e.output_tokens, e.cache_read_tokens, e.cache_write_tokens,
                f"{nanos_to_usd(e.cost_nanos).normalize():f}", e.latency_ms, e.ttfb_ms if e.ttfb_ms is not None else "",
            ])  # fmt: skip

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    name = f"usage-{request.tenant.org.slug}-{filters.start:%Y%m%d}-{filters.end:%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
def platform(request):
    """Staff only: every organisation's usage, top organisations/models/providers, errors and margin."""
    if not request.user.is_staff:
        raise PermissionDenied("Staff only.")
    _refresh_embedded()
    filters = selectors.usage_filter_from(request.GET)
    overview = selectors.unscoped_platform_overview(filters=filters)
    return render(request, "usage/platform.html", {
        "overview": overview, "range": request.GET.get("range", "7d"), "ranges": list(selectors.RANGES),
        "filters": filters,
    })  # fmt: skip


@tenant_view(PLAYGROUND_PERM)
def playground(request):
    org = request.tenant.org
    models = sorted(
        (s for s in catalog_build().models.values() if s.mode == "chat" and s.visible_to(org.id) and s.routes),
        key=lambda s: s.name,
    )
    return render(request, "usage/playground.html", {
        "models": [{"name": s.name, "display": s.display_name or s.name, "max_output": s.max_output_tokens,
                    "input": f"{nanos_to_usd(s.prices.input_nanos_per_mtok).normalize():f}",
                    "output": f"{nanos_to_usd(s.prices.output_nanos_per_mtok).normalize():f}"} for s in models],
        "ws_path": f"/ws/orgs/{org.id}/playground/", "live_path": f"/ws/orgs/{org.id}/usage/live/",
        "base_url": public_base_url(request),
    })  # fmt: skip
