"""A gateway process killed mid-stream leaves no hold forever and bills the stream at most once
(issue 5, done-when 3).

A real gateway runs as a separate process (uvicorn ruapi.asgi:application, production settings) on
the test database and the same Redis, if any. A stream is started through it and the process is
SIGKILLed while the upstream is still producing. A stream is settled in its generator's `finally`
(proxy/chat.py), which a killed process never runs: so nothing is billed (a process cannot bill a
stream it never settled; the usage is lost, never double-counted), and the stream's hold stays
pending until it expires. The expiry task (billing.tasks.expire_holds -> holds_expire) then
releases it: the reserved money is available again and the ledger still equals the balance.

On the embedded default the subprocess shares the SQLite test file (WAL); with Postgres + Redis it
shares the test database and Redis.
"""

import signal
from datetime import timedelta

import httpx
import pytest
from django.conf import settings

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import holds_expire, ledger_reconcile
from billing.tasks import expire_holds
from proxy.tests.integration.test_disconnect import slow_openai_stream
from proxy.tests.reliability.faults import tenant_gateway_process

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest.fixture
def gateway_process(transactional_db, mock_upstream, tmp_path):
    with tenant_gateway_process(mock_upstream, tmp_path / "gateway.log") as (gateway, tenant):
        yield gateway, tenant


def test_killed_gateway_leaves_no_hold_forever_and_bills_the_stream_at_most_once(gateway_process, mock_upstream):
    gateway, tenant = gateway_process
    org_id = tenant.org.id
    start = Balance.objects.get(org_id=org_id)
    assert (start.balance_nanos, start.held_nanos) == (10_000_000_000, 0)

    # given: an upstream that would stream for 10 seconds, and a client reading it through the process
    mock_upstream.enqueue("/v1/chat/completions", slow_openai_stream(100))
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "talk slowly"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        headers = {"authorization": f"Bearer {tenant.secret}"}
        with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200, response.read()
            request_id = response.headers["x-request-id"]
            received = 0
            lines = response.iter_lines()
            for line in lines:
                received += "word" in line
                if received == 3:
                    break
            # the stream's maximum cost is held while it runs
            hold = Hold.objects.get(org_id=org_id)
            assert hold.status == Hold.Status.PENDING and hold.amount_nanos > 0
            assert Balance.objects.get(org_id=org_id).held_nanos == hold.amount_nanos

            # when: the gateway process is killed mid-stream (no finally, no shutdown hook runs)
            gateway.kill()
            with pytest.raises(httpx.HTTPError):
                for _ in lines:
                    pass
    assert gateway.process.returncode == -signal.SIGKILL
    assert mock_upstream.wait_for_disconnect(timeout=5)  # the upstream stream dies with the process

    # then: nothing was settled or billed; the hold is still pending and the money still reserved
    assert request_id == hold.request_id
    hold.refresh_from_db()
    assert hold.status == Hold.Status.PENDING
    assert not UsageEvent.objects.filter(request_id=request_id).exists()
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()
    balance = Balance.objects.get(org_id=org_id)
    assert (balance.balance_nanos, balance.held_nanos) == (start.balance_nanos, hold.amount_nanos)
    assert ledger_reconcile() == []

    # and: before its expiry the task leaves it alone (a slow live stream keeps its hold) ...
    assert expire_holds.apply().get() == 0
    hold.refresh_from_db()
    assert hold.status == Hold.Status.PENDING

    # ... and once expired the task releases it: not forever
    lifetime = hold.expires_at - hold.created_at
    assert abs(lifetime - timedelta(seconds=settings.RUAPI_HOLD_TTL)) < timedelta(seconds=5)
    assert holds_expire(now=hold.expires_at + timedelta(seconds=1)) == 1
    hold.refresh_from_db()
    assert hold.status == Hold.Status.RELEASED
    balance = Balance.objects.get(org_id=org_id)
    assert (balance.balance_nanos, balance.held_nanos) == (start.balance_nanos, 0)
    assert ledger_reconcile() == []

    # and: the stream is billed at most once (here never: the process died before settling it),
    # and running the expiry again changes nothing
    assert holds_expire(now=hold.expires_at + timedelta(days=1)) == 0
    usage = LedgerEntry.objects.filter(request_id=request_id, kind=LedgerEntry.Kind.USAGE)
    assert usage.count() == 0 and UsageEvent.objects.filter(request_id=request_id).count() == 0
    assert Balance.objects.get(org_id=org_id).held_nanos == 0
    assert ledger_reconcile() == []
