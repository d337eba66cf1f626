"""Reads of usage events per organisation and per key: spend this month, last use, daily series.

For the dashboard, the management API and the spend caps (proxy/limits.py). Figures are integer
nano-USD; months and days are UTC. "Last used" is derived from usage events, so the gateway never
writes per request for it. (The brief planned these in billing/selectors.py; that module is the
billing issue's now, so they live beside the keys they describe.)
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Max, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from billing.models import UsageEvent


def month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spend_month_nanos(*, org_id: int, api_key_id: int | None = None, now: datetime | None = None) -> int:
    """What the organisation (or one of its keys) was debited so far this calendar month."""
    events = UsageEvent.objects.filter(org_id=org_id, created_at__gte=month_start(now))
    if api_key_id is not None:
        events = events.filter(api_key_id=api_key_id)
    return events.aggregate(total=Coalesce(Sum("cost_nanos"), 0))["total"]


@dataclass(frozen=True)
class KeyUsage:
    last_used_at: datetime | None
    spend_month_nanos: int
    requests_month: int


def apikey_usage(*, org_id: int, api_key_ids: list[int]) -> dict[int, KeyUsage]:
    """Last use, spend and requests this month for each of the organisation's keys."""
    events = UsageEvent.objects.filter(org_id=org_id, api_key_id__in=api_key_ids)
    last_used = dict(
        events.values("api_key_id").annotate(last=Max("created_at")).order_by().values_list("api_key_id", "last")
    )
    month = {
        row["api_key_id"]: row
        for row in events.filter(created_at__gte=month_start())
        .values("api_key_id")
        .annotate(spend=Coalesce(Sum("cost_nanos"), 0), requests=Count("id"))
        .order_by()
    }
    return {
        key_id: KeyUsage(
            last_used_at=last_used.get(key_id),
            spend_month_nanos=month.get(key_id, {}).get("spend", 0),
            requests_month=month.get(key_id, {}).get("requests", 0),
        )
        for key_id in api_key_ids
    }


@dataclass(frozen=True)
class DailyUsage:
    day: date
    requests: int
    cost_nanos: int
    input_tokens: int
    output_tokens: int


def usage_daily(*, org_id: int, days: int = 30, api_key_id: int | None = None) -> list[DailyUsage]:
    """One row per UTC day for the last `days` days (zero rows included), oldest first.

    A plain aggregation over usage events for now; the usage issue's rollups replace it.
    """
    today = timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    events = UsageEvent.objects.filter(org_id=org_id, created_at__gte=start)
    if api_key_id is not None:
        events = events.filter(api_key_id=api_key_id)
    rows = {
        row["day"]: row
        for row in events.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            requests=Count("id"),
            cost=Coalesce(Sum("cost_nanos"), 0),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
        )
        .order_by()
    }
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = rows.get(day, {})
        out.append(DailyUsage(day=day, requests=row.get("requests", 0), cost_nanos=row.get("cost", 0),
                              input_tokens=row.get("input_tokens", 0), output_tokens=row.get("output_tokens", 0)))
    return out


def usage_summary(
    *, org_id: int, start: datetime, end: datetime, group_by: str = "day", api_key_id: int | None = None,
    model: str | None = None,
) -> list[dict]:
    """Requests, tokens and cost between start (inclusive) and end (exclusive), grouped by day, model or key."""
    events = UsageEvent.objects.filter(org_id=org_id, created_at__gte=start, created_at__lt=end)
    if api_key_id is not None:
        events = events.filter(api_key_id=api_key_id)
    if model:
        events = events.filter(model=model)
    if group_by == "day":
        events = events.annotate(group=TruncDate("created_at", tzinfo=UTC))
    field = {"day": "group", "model": "model", "api_key": "api_key_id"}[group_by]
    rows = (
        events.values(field)
        .annotate(
            requests=Count("id"),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            cost_nanos=Coalesce(Sum("cost_nanos"), 0),
        )
        .order_by()
    )
    out = []
    for row in rows:
        key = row.pop(field)
        out.append({"group": key.isoformat() if group_by == "day" and key else key, **row})
    out.sort(key=lambda r: (r["group"] is None, str(r["group"])))
    return out
