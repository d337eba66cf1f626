"""Every write to usage rollups: rebuild a bucket from raw events, refresh recent buckets, purge old events.

Idempotency contract (issue 6): a bucket is recomputed from the raw events and its rows are
replaced inside one transaction — never incremented — so running any range any number of times,
concurrently or after a worker died mid-task, converges on the same rows. On Postgres a
transaction-scoped advisory lock serialises two rebuilds of one bucket; on SQLite writers are
serialised by the database (IMMEDIATE transactions, ruapi/db settings).
"""

import logging
import math
import time
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    BigIntegerField,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    Q,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.models import UsageEvent
from usage.models import RollupCursor, UsageRollup

logger = logging.getLogger(__name__)

Period = UsageRollup.Period
SPANS = {Period.HOUR: timedelta(hours=1), Period.DAY: timedelta(days=1)}
DIMENSIONS = ("org_id", "api_key_id", "model", "provider")
SUMMED = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
          "web_search_requests", "web_fetch_requests", "cost_nanos")  # fmt: skip
REFRESH_CURSOR = "refresh"
# A refresh always re-aggregates at least this far back, so an event settled late (a long stream
# is recorded when it ends) still lands in its bucket.
REFRESH_OVERLAP = timedelta(hours=1)


# -- buckets -------------------------------------------------------------------------------------
def bucket_floor(moment: datetime, period: str) -> datetime:
    """The UTC start of the bucket containing `moment`."""
    moment = moment.astimezone(UTC)
    if period == Period.DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def buckets_between(start: datetime, end: datetime, period: str) -> list[datetime]:
    """Starts of the buckets that intersect [start, end)."""
    out, bucket = [], bucket_floor(start, period)
    while bucket < end:
        out.append(bucket)
        bucket += SPANS[period]
    return out


# -- percentiles ---------------------------------------------------------------------------------
def percentile_cont(values: list[int], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: the same definition as Postgres' percentile_cont."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def whole_ms(value: float | None) -> int | None:
    """Milliseconds rounded half up (percentiles interpolate between events)."""
    return None if value is None else math.floor(value + 0.5)


class PercentileCont(Aggregate):
    """Postgres' ordered-set aggregate; NULLs are ignored, as in `percentile_cont` above."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


# -- aggregation ---------------------------------------------------------------------------------
def _provider_cost_nanos():
    """Per event, what the provider charges us: the event's price row's cost_* prices (0 without a
    row), rounded half up once per event exactly like billing.money.cost_for; summed per group."""
    def price(name: str):
        return Coalesce(F(f"price__{name}"), Value(0))

    per_event = (
        F("input_tokens") * price("cost_input_nanos_per_mtok")
        + F("output_tokens") * price("cost_output_nanos_per_mtok")
        + F("cache_read_tokens") * price("cost_cache_read_nanos_per_mtok")
        + F("cache_write_tokens") * price("cost_cache_write_nanos_per_mtok")
        + Value(500_000)
    ) / Value(1_000_000)  # integer division on Postgres and SQLite: both operands are integers
    return Coalesce(Sum(ExpressionWrapper(per_event, output_field=BigIntegerField())), Value(0))


def _sum(field: str):
    return Coalesce(Sum(field), Value(0))


def bucket_aggregate(start: datetime, end: datetime) -> list[dict]:
    """One dict per (org, key, model, provider) with events in [start, end): counts, sums, percentiles."""
    events = UsageEvent.objects.filter(created_at__gte=start, created_at__lt=end)
    # Annotation names must not shadow the event's fields (F("input_tokens") would mean the sum).
    annotations = {
        "sum_requests": Count("id"),
        "sum_errors": Count("id", filter=Q(status_code__gte=400)),
        **{f"sum_{name}": _sum(name) for name in SUMMED},
        "sum_provider_cost_nanos": _provider_cost_nanos(),
    }
    is_postgres = connection.vendor == "postgresql"
    if is_postgres:
        annotations |= {
            "sum_latency_p50": PercentileCont("latency_ms", 0.5),
            "sum_latency_p95": PercentileCont("latency_ms", 0.95),
            "sum_ttft_p50": PercentileCont("ttfb_ms", 0.5),
            "sum_ttft_p95": PercentileCont("ttfb_ms", 0.95),
        }
    rows = [
        {k.removeprefix("sum_"): v for k, v in row.items()}
        for row in events.values(*DIMENSIONS).annotate(**annotations).order_by(*DIMENSIONS)
    ]
    if not is_postgres:
        # SQLite has no ordered-set aggregates: the same interpolation in Python.
        latencies, ttfts = defaultdict(list), defaultdict(list)
        for *dims, latency, ttft in events.values_list(*DIMENSIONS, "latency_ms", "ttfb_ms").iterator():
            latencies[tuple(dims)].append(latency)
            if ttft is not None:
                ttfts[tuple(dims)].append(ttft)
        for row in rows:
            dims = tuple(row[d] for d in DIMENSIONS)
            row["latency_p50"] = percentile_cont(latencies[dims], 0.5)
            row["latency_p95"] = percentile_cont(latencies[dims], 0.95)
            row["ttft_p50"] = percentile_cont(ttfts[dims], 0.5)
            row["ttft_p95"] = percentile_cont(ttfts[dims], 0.95)
    return rows


def _lock_bucket(period: str, bucket_start: datetime) -> None:
    if connection.vendor == "postgresql":
        key = zlib.crc32(f"usage-rollup:{period}:{bucket_start.isoformat()}".encode())
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def retention_horizon(now: datetime | None = None) -> datetime:
    """Buckets starting before this may have lost raw events to the purge: they are never rebuilt."""
    now = now or timezone.now()
    return bucket_floor(now - timedelta(days=settings.RUAPI_USAGE_EVENT_RETENTION_DAYS), Period.DAY)


def rollup_bucket_rebuild(*, period: str, bucket_start: datetime) -> int:
    """Recompute one bucket from the raw events and replace its rows (idempotent). Returns rows written."""
    bucket_start = bucket_floor(bucket_start, period)
    end = bucket_start + SPANS[period]
    if bucket_start < retention_horizon():
        # Its raw events may be purged already: recomputing would erase a rollup that is kept forever.
        logger.info("usage rollup %s %s is past the event retention; left as it is", period, bucket_start)
        return 0
    with transaction.atomic():
        _lock_bucket(period, bucket_start)
        rows = [
            UsageRollup(
                period=period, bucket_start=bucket_start, org_id=row["org_id"], api_key_id=row["api_key_id"],
                model=row["model"], provider=row["provider"], requests=row["requests"], errors=row["errors"],
                input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                cache_read_tokens=row["cache_read_tokens"], cache_write_tokens=row["cache_write_tokens"],
                reasoning_tokens=row["reasoning_tokens"], web_search_requests=row["web_search_requests"],
                web_fetch_requests=row["web_fetch_requests"], cost_nanos=row["cost_nanos"],
                provider_cost_nanos=row["provider_cost_nanos"],
                latency_p50_ms=whole_ms(row["latency_p50"]) or 0, latency_p95_ms=whole_ms(row["latency_p95"]) or 0,
                ttft_p50_ms=whole_ms(row["ttft_p50"]), ttft_p95_ms=whole_ms(row["ttft_p95"]),
            )
            for row in bucket_aggregate(bucket_start, end)
        ]
        UsageRollup.objects.filter(period=period, bucket_start=bucket_start).delete()
        UsageRollup.objects.bulk_create(rows)
        delay = settings.RUAPI_USAGE_TEST_BUCKET_DELAY
        if delay:  # test hook only (usage/tests/test_worker.py): widen the window for a SIGKILL
            time.sleep(delay)
    return len(rows)


def rollups_rebuild(*, start: datetime, end: datetime, periods: tuple[str, ...] = (Period.HOUR, Period.DAY)) -> int:
    """Rebuild every bucket of `periods` that intersects [start, end); each bucket commits on its own."""
    written = 0
    start = max(start, retention_horizon())  # older buckets may have lost raw events: kept as they are
    for period in periods:
        for bucket in buckets_between(start, end, period):
            written += rollup_bucket_rebuild(period=period, bucket_start=bucket)
    return written


def rollups_refresh(*, now: datetime | None = None) -> int:
    """Re-aggregate from the refresh cursor (minus an overlap) up to now, then advance the cursor.

    Called every minute by beat: normally that is the previous and the current hour (and today);
    after an outage it catches up on everything since the cursor.
    """
    now = now or timezone.now()
    cursor = RollupCursor.objects.filter(name=REFRESH_CURSOR).first()
    if cursor is None:
        first = UsageEvent.objects.order_by("created_at").values_list("created_at", flat=True).first()
        since = first or now
    else:
        since = cursor.position
    since = min(since, now) - REFRESH_OVERLAP
    written = rollups_rebuild(start=since, end=now)
    RollupCursor.objects.update_or_create(name=REFRESH_CURSOR, defaults={"position": bucket_floor(now, Period.HOUR)})
    return written


def rollups_refresh_if_stale(*, max_age_seconds: float = 30.0) -> None:
    """The embedded default has no beat: dashboard reads refresh the rollups themselves, at most this often."""
    from django.core.cache import cache

    if cache.add("usage:refresh-inline", 1, timeout=max_age_seconds):
        rollups_refresh()


def usage_events_purge(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete raw usage events older than RUAPI_USAGE_EVENT_RETENTION_DAYS; rollups stay forever.

    Never deletes events the refresh has not aggregated yet (older than its cursor only).
    """
    now = now or timezone.now()
    cutoff = retention_horizon(now)
    cursor = RollupCursor.objects.filter(name=REFRESH_CURSOR).values_list("position", flat=True).first()
    if cursor is None:
        return 0
    cutoff = min(cutoff, cursor - REFRESH_OVERLAP)
    deleted = 0
    while True:
        old = UsageEvent.objects.filter(created_at__lt=cutoff).order_by("id")
        ids = list(old.values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += UsageEvent.objects.filter(id__in=ids).delete()[0]
