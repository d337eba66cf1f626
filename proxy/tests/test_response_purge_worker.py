"""The retention purge of stored responses (proxy.tasks.purge_stored_responses) run by a real Celery
worker (Redis broker, the test's Postgres database), as beat sends it: expired responses and their
items go, everything else stays. Postgres + Redis only, like usage/tests/test_worker.py (the embedded
run calls the task in process: proxy/tests/test_response_store.py::test_the_purge_task_is_scheduled_and_runs)."""

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import OrgFactory
from proxy.models import StoredItem, StoredResponse
from proxy.response_store import response_store_save
from usage.tests.test_worker import _kill, _start_worker, _wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def services_required():
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs Postgres and Redis (DATABASE_URL/REDIS_URL): the worker shares the test database and "
                    "the broker")  # fmt: skip


def test_a_worker_purges_expired_stored_responses_only(services_required, tmp_path):
    # given: 250 expired responses of two organisations and two live ones
    from ruapi.celery import app

    now = timezone.now()
    orgs = [OrgFactory(), OrgFactory()]
    for i in range(250):
        response_store_save(org_id=orgs[i % 2].id, api_key_id=None, request={},
                            input_items=[{"type": "message", "role": "user", "content": f"old {i}"}],
                            response={"id": f"resp_old{i}", "object": "response", "model": "m", "output": []},
                            now=now - timedelta(days=30, minutes=1 + i))  # fmt: skip
    for name in ("resp_live1", "resp_live2"):
        response_store_save(org_id=orgs[0].id, api_key_id=None, request={},
                            input_items=[{"type": "message", "role": "user", "content": name}],
                            response={"id": name, "object": "response", "model": "m", "output": []},
                            now=now - timedelta(days=29))  # fmt: skip
    live_items = sorted(StoredItem.objects.filter(response_id__in=["resp_live1", "resp_live2"]).values_list("item_id"))
    assert StoredItem.objects.count() == 252

    # when: beat's message reaches a worker
    queue = f"proxy-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    worker = _start_worker(queue, log)
    try:
        app.send_task("proxy.tasks.purge_stored_responses", queue=queue)
        # Until the task has finished (its rows go in batches, then the worker logs the success): stopping the
        # worker as soon as the last batch committed raced its "succeeded" line.
        _wait_for(lambda: "succeeded" in log.read_text()
                  and not StoredResponse.objects.filter(id__startswith="resp_old").exists(), 60, worker, log)  # fmt: skip
    finally:
        _kill(worker)

    # then
    assert sorted(StoredResponse.objects.values_list("id", flat=True)) == ["resp_live1", "resp_live2"]
    assert sorted(StoredItem.objects.values_list("item_id")) == live_items
    assert "proxy.tasks.purge_stored_responses" in log.read_text() and "succeeded" in log.read_text()
