"""A real Celery worker (Redis broker, the test's Postgres database) aggregates usage events, is
killed with SIGKILL in the middle of the task, is restarted, and the rollups then equal a direct
sum over the raw events: acks_late redelivers the task, and bucket rebuilds replace, never add.

Postgres + Redis only (the CI Postgres run has both): the worker is another process, so it needs a
database and a broker it can share with this one. Not part of the embedded run.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import OrgFactory, key_for
from billing.models import UsageEvent
from usage.models import UsageRollup
from usage.services import percentile_cont, whole_ms
from usage.tests.conftest import make_event

pytestmark = [pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parents[2]
HOURS = 6
BUCKET_DELAY = 1.0  # seconds each bucket rebuild sleeps before committing (RUAPI_USAGE_TEST_BUCKET_DELAY)


@pytest.fixture
def services_required():
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs Postgres and Redis (DATABASE_URL/REDIS_URL): the worker shares the test database and "
                    "the broker; the CI Postgres run always has both")  # fmt: skip


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _start_worker(queue: str, log: Path, **extra_env) -> subprocess.Popen:
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "ruapi.settings", "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0", "RUAPI_USAGE_TEST_BUCKET_DELAY": str(BUCKET_DELAY), **extra_env,
    }  # fmt: skip
    command = [sys.executable, "-m", "celery", "-A", "ruapi", "worker", "--pool=solo", "-Q", queue,
               "-n", f"{queue}-{uuid.uuid4().hex[:4]}@%h", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel=INFO"]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _kill(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


def _direct_sums() -> dict:
    """The expected hourly rollups, straight from the raw events."""
    groups = defaultdict(list)
    for event in UsageEvent.objects.all():
        hour = event.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        groups[(hour, event.org_id, event.api_key_id, event.model, event.provider)].append(event)
    expected = {}
    for dims, events in groups.items():
        ttfts = [e.ttfb_ms for e in events if e.ttfb_ms is not None]
        expected[dims] = {
            "requests": len(events), "errors": sum(e.status_code >= 400 for e in events),
            "input_tokens": sum(e.input_tokens for e in events), "output_tokens": sum(e.output_tokens for e in events),
            "cache_read_tokens": sum(e.cache_read_tokens for e in events), "cost_nanos": sum(e.cost_nanos for e in events),
            "latency_p50_ms": whole_ms(percentile_cont([e.latency_ms for e in events], 0.5)),
            "latency_p95_ms": whole_ms(percentile_cont([e.latency_ms for e in events], 0.95)),
            "ttft_p50_ms": whole_ms(percentile_cont(ttfts, 0.5)), "ttft_p95_ms": whole_ms(percentile_cont(ttfts, 0.95)),
        }  # fmt: skip
    return expected


def _rollups() -> dict:
    fields = ["requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cost_nanos",
              "latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms"]  # fmt: skip
    return {
        (r.bucket_start, r.org_id, r.api_key_id, r.model, r.provider): {f: getattr(r, f) for f in fields}
        for r in UsageRollup.objects.filter(period="hour")
    }


def _wait_for(condition, timeout: float, worker: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; worker exit code {worker.poll()}; log:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def test_worker_killed_mid_aggregation_loses_nothing_and_double_counts_nothing(services_required, tmp_path):
    # given: traffic of two organisations over six hours, errors and streams included
    from ruapi.celery import app

    start = (timezone.now() - timedelta(days=1)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    acme, other = OrgFactory(), OrgFactory()
    keys = [key_for(acme, name="a").api_key, key_for(acme, name="b").api_key]
    for hour in range(HOURS):
        for i in range(7):
            make_event(acme, start + timedelta(hours=hour, minutes=i * 7), api_key=keys[i % 2],
                       model="gpt-test" if i % 3 else "claude-test", input_tokens=10 + i, output_tokens=3 * i,
                       cache_read_tokens=i % 2, cost_nanos=1000 * (i + 1) + hour, latency_ms=50 + 37 * i + hour,
                       ttfb_ms=(5 + i) if i % 2 else None, status_code=500 if i == 6 else 200)  # fmt: skip
        make_event(other, start + timedelta(hours=hour, minutes=30), cost_nanos=77)
    queue = f"usage-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"

    # when: a worker starts the aggregation of the six hours ...
    worker = _start_worker(queue, log)
    try:
        app.send_task("usage.tasks.aggregate_range", queue=queue,
                      args=[start.isoformat(), (start + timedelta(hours=HOURS)).isoformat(), ["hour"]])  # fmt: skip
        # ... commits two buckets, and is killed in the middle of the third
        _wait_for(lambda: UsageRollup.objects.values("bucket_start").distinct().count() >= 2, 60, worker, log)
        time.sleep(BUCKET_DELAY / 2)
    finally:
        _kill(worker)
    done_before_kill = UsageRollup.objects.values("bucket_start").distinct().count()
    assert 2 <= done_before_kill < HOURS, "the kill must land mid-task"

    # then: a restarted worker gets the unacknowledged task again (Redis visibility timeout) and finishes it
    restarted = _start_worker(queue, log, RUAPI_CELERY_VISIBILITY_TIMEOUT="1", RUAPI_USAGE_TEST_BUCKET_DELAY="0")
    try:
        expected = _direct_sums()
        assert len({dims[0] for dims in expected}) == HOURS
        _wait_for(lambda: _rollups() == expected, 60, restarted, log)
    finally:
        _kill(restarted)
    assert sum(r["requests"] for r in _rollups().values()) == UsageEvent.objects.count() == HOURS * 8
