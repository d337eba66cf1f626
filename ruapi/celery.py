"""The Celery application (broker: Redis in production, in-process eager on the embedded default)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ruapi.settings")

app = Celery("ruapi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_postrun.connect
def _count_task_outcome(sender=None, state=None, **kwargs) -> None:
    """`ruapi_celery_tasks_total{task, state}` (ruapi/observability.py)."""
    from ruapi import observability

    observability.celery_task(getattr(sender, "name", "unknown"), state or "unknown")


@signals.worker_ready.connect
def _serve_worker_metrics(**kwargs) -> None:
    """A worker exposes its own metrics on RUAPI_WORKER_METRICS_PORT (the web /metrics is per web pod)."""
    port = os.environ.get("RUAPI_WORKER_METRICS_PORT")
    if port:
        from prometheus_client import start_http_server

        start_http_server(int(port), addr=os.environ.get("RUAPI_WORKER_METRICS_ADDR", "0.0.0.0"))
