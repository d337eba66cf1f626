"""Celery wrappers around usage.services. Every task is idempotent (a bucket is recomputed and
replaced, never incremented), so acks_late is safe: a worker killed mid-task has its message
redelivered and the rerun converges on the same rows (ECOSYSTEM.md gotcha 14)."""

from datetime import datetime, timedelta

from celery import shared_task
from django.utils import timezone

from usage import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def aggregate_range(start: str, end: str, periods: list[str] | None = None) -> int:
    """Rebuild the rollups of every bucket intersecting [start, end) (ISO 8601 datetimes)."""
    return services.rollups_rebuild(
        start=datetime.fromisoformat(start), end=datetime.fromisoformat(end),
        periods=tuple(periods or (services.Period.HOUR, services.Period.DAY)),
    )  # fmt: skip


@shared_task(acks_late=True, reject_on_worker_lost=True)
def refresh_rollups() -> int:
    return services.rollups_refresh()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def rebuild_previous_day() -> int:
    """Yesterday in full (hours and the day), after every late event of it has settled."""
    today = services.bucket_floor(timezone.now(), services.Period.DAY)
    return services.rollups_rebuild(start=today - timedelta(days=1), end=today)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def purge_usage_events() -> int:
    return services.usage_events_purge()
