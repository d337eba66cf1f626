"""Celery wrappers around proxy.response_store (issue 13). Idempotent: a rerun after a worker died
deletes what is still expired, so acks_late is safe."""

from celery import shared_task

from proxy.response_store import response_store_purge_expired


@shared_task(acks_late=True, reject_on_worker_lost=True)
def purge_stored_responses() -> int:
    """Delete stored responses past RUAPI_RESPONSES_RETENTION_DAYS (hourly, CELERY_BEAT_SCHEDULE)."""
    return response_store_purge_expired()
