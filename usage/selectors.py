"""Reads for the usage pages and the management API. Tenant-facing selectors take `org=`; the
platform-wide ones (staff only) are named `unscoped_*`.

Charts and breakdowns read the rollups (hourly for ranges up to HOURLY_MAX, daily beyond); the
request log reads the raw events, which are kept for RUAPI_USAGE_EVENT_RETENTION_DAYS.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import ApiKey, Organization
from billing.models import UsageEvent
from usage.models import UsageRollup
from usage.services import SPANS, Period, bucket_floor

HOURLY_MAX = timedelta(days=3)
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
SUMS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
        "reasoning_tokens", "web_search_requests", "web_fetch_requests", "cost_nanos",
        "provider_cost_nanos")  # fmt: skip


@dataclass(frozen=True)
class UsageFilter:
    """A date range and optional dimension filters, as the page, the CSV export and the API take them."""

    start: datetime
    end: datetime
    api_key_id: int | None = None
    model: str = ""
    provider: str = ""
    search: str = ""

    @property
    def period(self) -> str:
        return Period.HOUR if self.end - self.start <= HOURLY_MAX else Period.DAY


def usage_filter_from(params, *, now: datetime | None = None) -> UsageFilter:
    """`range=24h|7d|30d|90d`, or `start`/`end` dates (YYYY-MM-DD, end inclusive); default 7 days."""
    now = now or timezone.now()

    def day(name: str) -> date | None:
        try:
            return date.fromisoformat(params.get(name, ""))
        except ValueError:
            return None

    first, last = day("start"), day("end")
    if first or last:
        last = last or now.astimezone(UTC).date()
        first = first or last - timedelta(days=6)
        if first > last:
            first, last = last, first
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    else:
        span = RANGES.get(params.get("range", ""), RANGES["7d"])
        end = bucket_floor(now, Period.HOUR) + timedelta(hours=1)
        start = end - span
    try:
        api_key_id = int(params.get("api_key") or params.get("api_key_id") or 0) or None
    except ValueError:
        api_key_id = None
    return UsageFilter(
        start=start, end=end, api_key_id=api_key_id, model=(params.get("model") or "").strip(),
        provider=(params.get("provider") or "").strip(), search=(params.get("q") or params.get("search") or "").strip(),
    )  # fmt: skip


def _rollups(*, org: Organization | None, filters: UsageFilter, period: str) -> QuerySet[UsageRollup]:
    rows = UsageRollup.objects.filter(
        period=period, bucket_start__gte=bucket_floor(filters.start, period), bucket_start__lt=filters.end
    )
    if org is not None:
        rows = rows.filter(org=org)
    if filters.api_key_id:
        rows = rows.filter(api_key_id=filters.api_key_id)
    if filters.model:
        rows = rows.filter(model=filters.model)
    if filters.provider:
        rows = rows.filter(provider=filters.provider)
    return rows


def _sums() -> dict:
    return {name: Coalesce(Sum(name), Value(0)) for name in SUMS}


def usage_series(*, org: Organization, filters: UsageFilter) -> list[dict]:
    """One row per bucket in the range (zeros included), oldest first: requests, errors, tokens, cost."""
    period = filters.period
    rows = {
        row["bucket_start"]: row
        for row in _rollups(org=org, filters=filters, period=period)
        .values("bucket_start").annotate(**_sums()).order_by()
    }  # fmt: skip
    out, bucket = [], bucket_floor(filters.start, period)
    while bucket < filters.end:
        row = rows.get(bucket) or dict.fromkeys(SUMS, 0)
        out.append({"bucket_start": bucket, **{name: row[name] for name in SUMS}})
        bucket += SPANS[period]
    return out


def usage_breakdown(*, org: Organization, filters: UsageFilter, by: str) -> list[dict]:
    """Totals per model, API key or provider over the range, dearest first. Keys carry name and prefix."""
    field = {"model": "model", "api_key": "api_key_id", "provider": "provider"}[by]
    rows = list(
        _rollups(org=org, filters=filters, period=filters.period)
        .values(field).annotate(**_sums()).order_by("-cost_nanos", "-requests", field)
    )  # fmt: skip
    if by == "api_key":
        keys = {k.id: k for k in ApiKey.objects.filter(org=org, id__in=[r["api_key_id"] for r in rows])}
        for row in rows:
            key = keys.get(row["api_key_id"])
            row["label"] = f"{key.name or 'key'} ({key.prefix}…)" if key else "Playground / deleted key"
    else:
        for row in rows:
            row["label"] = row[field] or "—"
    return rows


def usage_totals(*, org: Organization, filters: UsageFilter) -> dict:
    return _rollups(org=org, filters=filters, period=filters.period).aggregate(**_sums())


def usage_event_list(*, org: Organization, filters: UsageFilter) -> QuerySet[UsageEvent]:
    """The organisation's raw usage events in the range, newest first; `search` matches request id,
    model, provider, key name or prefix."""
    events = UsageEvent.objects.filter(org=org, created_at__gte=filters.start, created_at__lt=filters.end)
    if filters.api_key_id:
        events = events.filter(api_key_id=filters.api_key_id)
    if filters.model:
        events = events.filter(model=filters.model)
    if filters.provider:
        events = events.filter(provider=filters.provider)
    if filters.search:
        term = filters.search
        events = events.filter(
            Q(request_id__icontains=term) | Q(model__icontains=term) | Q(provider__icontains=term)
            | Q(api_key__name__icontains=term) | Q(api_key__prefix__startswith=term)
        )  # fmt: skip
    return events.select_related("api_key", "user").order_by("-created_at", "-id")


def usage_filter_choices(*, org: Organization) -> dict:
    """What the filter drop-downs offer: the organisation's keys, and models/providers it used."""
    rollups = UsageRollup.objects.filter(org=org)
    return {
        "keys": list(ApiKey.objects.filter(org=org).order_by("name", "id").values("id", "name", "prefix")),
        "models": sorted(set(rollups.values_list("model", flat=True).distinct())),
        "providers": sorted(p for p in set(rollups.values_list("provider", flat=True).distinct()) if p),
    }


# -- platform-wide (staff) ----------------------------------------------------------------------------
def _with_rates(rows: list[dict]) -> list[dict]:
    for row in rows:
        row["error_rate"] = row["errors"] / row["requests"] if row["requests"] else 0.0
        row["margin_nanos"] = row["cost_nanos"] - row["provider_cost_nanos"]
    return rows


def unscoped_platform_overview(*, filters: UsageFilter, limit: int = 10) -> dict:
    """Every organisation's usage: totals, top organisations, models and providers with error rates and margin."""
    rows = _rollups(org=None, filters=filters, period=filters.period)
    totals = _with_rates([rows.aggregate(**_sums())])[0]

    def top(field: str) -> list[dict]:
        grouped = rows.values(field).annotate(**_sums()).order_by("-cost_nanos", "-requests", field)[:limit]
        return _with_rates(list(grouped))

    orgs = top("org_id")
    names = dict(Organization.objects.filter(id__in=[r["org_id"] for r in orgs]).values_list("id", "name"))
    for row in orgs:
        row["label"] = names.get(row["org_id"], f"#{row['org_id']}")
    models, providers = top("model"), top("provider")
    for row in models:
        row["label"] = row["model"]
    for row in providers:
        row["label"] = row["provider"] or "—"
    active = rows.values("org_id").distinct().aggregate(n=Count("org_id", distinct=True))["n"]
    return {"totals": totals, "organisations": orgs, "models": models, "providers": providers, "active_orgs": active}
