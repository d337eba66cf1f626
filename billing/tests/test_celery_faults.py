"""Celery workers killed in the middle of billing tasks (issue 8): the task runs again and its
effect happens exactly once.

- A Stripe webhook: a real gateway process receives the signed event, stores it and answers 200,
  and queues its processing; a real worker (prefork) starts processing it and its pool process is
  SIGKILLed while inside the processing transaction (held there by a row lock this test takes on
  the organisation's balance). reject_on_worker_lost gives the task back to the queue at once, the
  worker's next pool process runs it again: one top-up credit.
- Monthly invoices: a worker (solo) is SIGKILLed, whole, while it is in the middle of the month's
  invoices — two organisations done, the postpaid one's invoice saved but its Stripe invoice not
  made yet (held by a row lock on its billing profile). A restarted worker gets the unacknowledged
  task again (acks_late; Redis visibility timeout) and finishes: one invoice per organisation,
  numbered without gaps, one Stripe invoice for the postpaid one, each invoice emailed once.

The broker is a Redis server this test starts; the database is the test database. Postgres + Redis only.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from billing.models import Balance, BillingProfile, Invoice, LedgerEntry, Payment, StripeEvent
from billing.money import usd_to_nanos
from billing.services import UsageRecord, balance_hold, hold_settle, topup_create
from billing.tests.conftest import WEBHOOK_SECRET
from billing.tests.factories import org_with
from proxy.tests.reliability.faults import (
    GatewayProcess,
    RedisServer,
    assert_ledger_equals_balance,
    database_url,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parents[2]
USD = 1_000_000_000


@pytest.fixture
def services_required():
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs Postgres and Redis: the worker shares the test database")


@pytest.fixture
def broker(services_required, tmp_path):
    server = RedisServer(tmp_path / "redis.log").start()
    yield server
    server.kill()


def _env(broker: RedisServer, stripe_standin) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "ruapi.settings", "DATABASE_URL": database_url(), "REDIS_URL": broker.url,
        "CELERY_BROKER_URL": broker.url, "CELERY_TASK_ALWAYS_EAGER": "0",
        "STRIPE_SECRET_KEY": stripe_standin.api_key, "STRIPE_API_BASE": stripe_standin.api_base,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_MAX_NETWORK_RETRIES": "0",
        "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
    }  # fmt: skip


class Worker:
    """`celery -A ruapi worker` in its own process group, logging to `log`."""

    def __init__(self, env: dict[str, str], log: Path, *, pool: str, **extra_env: str) -> None:
        self.log = log
        command = [sys.executable, "-m", "celery", "-A", "ruapi", "worker", f"--pool={pool}", "--concurrency=1",
                   "-Q", "celery", "-n", f"faults-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
                   "--without-mingle", "--without-heartbeat", "--loglevel=INFO"]  # fmt: skip
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=BASE_DIR, env={**os.environ, **env, **extra_env},
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> "Worker":
        wait_for(lambda: " ready." in self.text() or self.process.poll() is not None, 60, "the worker to start")
        assert self.process.poll() is None, self.text()[-3000:]
        return self

    def pool_processes(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def row_locked(table: str, where: str, params: list):
    """SELECT … FOR UPDATE on a connection of its own, held until the block ends (then rolled back)."""
    db = connection.settings_dict
    conn = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                           password=db["PASSWORD"] or None, dbname=db["NAME"])  # fmt: skip
    try:
        assert conn.execute(f"SELECT 1 FROM {table} WHERE {where} FOR UPDATE", params).fetchall()
        yield
    finally:
        conn.rollback()
        conn.close()


def blocked_on(table: str) -> bool:
    """A backend of the test database is waiting for a row lock on `table`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND query ILIKE %s",
            [f"%{table}%"],
        )
        return cursor.fetchone()[0] > 0


def test_webhook_processing_killed_mid_task_credits_once(broker, stripe_standin, tmp_path):
    # given: a gateway process (the webhook endpoint) and a worker on a broker of this test's own
    env = _env(broker, stripe_standin)
    gateway = GatewayProcess(tmp_path / "gateway.log", env=env).wait_ready()
    worker = Worker(env, tmp_path / "worker.log", pool="prefork").wait_ready()
    try:
        org = org_with("Acme", usd="1")
        payment = topup_create(org=org, amount_nanos=usd_to_nanos("25"), success_url="http://x/ok",
                               cancel_url="http://x/no")  # fmt: skip
        event = stripe_standin.event("checkout.session.completed", stripe_standin.pay(payment.checkout_session_id))
        stripe_standin.webhook_url = f"{gateway.url}/billing/stripe/webhook/"
        stripe_standin.webhook_secret = WEBHOOK_SECRET

        with row_locked("billing_balance", "org_id = %s", [org.id]):
            # when: Stripe delivers the event: stored and answered at once, processed in the task ...
            assert stripe_standin.deliver(event) == 200
            assert StripeEvent.objects.get(pk=event["id"]).status == StripeEvent.Status.RECEIVED
            # ... which is inside its transaction, crediting the balance, when its process is killed
            wait_for(lambda: blocked_on("billing_balance"), 30, "the task to reach the balance update")
            [child] = worker.pool_processes()
            os.kill(child, signal.SIGKILL)
            wait_for(lambda: "WorkerLostError" in worker.text(), 30, "the worker to see its pool process die")
            # then: nothing of the killed run is visible (its transaction never committed)
            assert not LedgerEntry.objects.filter(kind="topup").exists()
            assert StripeEvent.objects.get(pk=event["id"]).status == StripeEvent.Status.RECEIVED

        # then: the task is given back and runs again; the credit happens once
        wait_for(lambda: StripeEvent.objects.get(pk=event["id"]).status == StripeEvent.Status.PROCESSED, 60,
                 "the redelivered task to process the event")  # fmt: skip
        row = StripeEvent.objects.get(pk=event["id"])
        assert row.attempts == 2, worker.text()[-3000:]
        topups = list(LedgerEntry.objects.filter(kind="topup").values_list("org_id", "amount_nanos"))
        assert topups == [(org.id, 25 * USD)]
        assert Balance.objects.get(org_id=org.id).balance_nanos == 26 * USD
        payment.refresh_from_db()
        assert payment.status == Payment.Status.PAID

        # and: Stripe delivering the same event again changes nothing
        assert stripe_standin.deliver(event) == 200
        wait_for(lambda: StripeEvent.objects.get(pk=event["id"]).deliveries == 2, 30, "the second delivery")
        time.sleep(1)
        assert LedgerEntry.objects.filter(kind="topup").count() == 1
        assert_ledger_equals_balance()
    finally:
        worker.kill()
        gateway.kill()


def _spend_in(org, month: datetime, request_id: str, nanos: int) -> None:
    hold = balance_hold(org_id=org.id, request_id=request_id, amount_nanos=0)
    hold_settle(hold=hold, usage=UsageRecord(
        request_id=request_id, org_id=org.id, api_key_id=None, endpoint="chat.completions", model="gpt-test",
        client_protocol="openai", status_code=200, cost_nanos=nanos, input_tokens=100, output_tokens=50,
    ))  # fmt: skip


def test_invoice_run_killed_mid_month_invoices_each_org_once(broker, stripe_standin, tmp_path):
    # given: four organisations with activity in October 2026, the third one postpaid (no Stripe customer yet)
    from billing.models import UsageEvent

    october = datetime(2026, 10, 12, tzinfo=UTC)
    orgs = [org_with(name, usd="20", owner_email=f"owner@{name.lower()}.test") for name in ("A", "B", "C", "D")]
    postpaid = orgs[2]
    BillingProfile.objects.update_or_create(org=postpaid, defaults={"is_postpaid": True})
    Balance.objects.filter(org=postpaid).update(credit_limit_nanos=100 * USD)
    for n, org in enumerate(orgs):
        _spend_in(org, october, f"req_{n}", (n + 1) * 1_230_000_000)
    LedgerEntry.objects.update(created_at=october)
    UsageEvent.objects.update(created_at=october)
    env = _env(broker, stripe_standin)
    sender = __import__("celery").Celery("sender", broker=broker.url)
    worker = Worker(env, tmp_path / "worker.log", pool="solo").wait_ready()
    restarted = None
    try:
        with row_locked("billing_billingprofile", "org_id = %s", [postpaid.id]):
            # when: the month's invoices are generated ...
            sender.send_task("billing.tasks.generate_monthly_invoices", args=["2026-10-01"])
            # ... and the worker is killed while it makes the postpaid organisation's Stripe invoice
            wait_for(lambda: blocked_on("billing_billingprofile"), 60, "the run to reach the postpaid organisation")
            worker.kill()
        made = {i.org_id: i for i in Invoice.objects.all()}
        assert sorted(made) == [orgs[0].id, orgs[1].id, postpaid.id], "the kill must land mid-run"
        assert made[postpaid.id].stripe_invoice_id == "" and made[postpaid.id].emailed_at is None

        # then: a restarted worker gets the task again and finishes the month
        restarted = Worker(env, tmp_path / "worker.log", pool="solo", RUAPI_CELERY_VISIBILITY_TIMEOUT="1")
        restarted.wait_ready()

        def finished() -> bool:
            invoices = list(Invoice.objects.all())
            return (
                len(invoices) == 4
                and all(i.emailed_at for i in invoices)
                and bool(Invoice.objects.get(org=postpaid).stripe_invoice_id)
            )

        wait_for(finished, 90, "the redelivered run to finish the month")
        time.sleep(1)  # nothing more happens after
    finally:
        worker.kill()
        if restarted is not None:
            restarted.kill()

    # one invoice per organisation, numbered without gaps
    invoices = list(Invoice.objects.order_by("number"))
    assert sorted(i.org_id for i in invoices) == sorted(o.id for o in orgs)
    assert [i.number for i in invoices] == [f"RU-202610-{n:05d}" for n in range(1, 5)]
    assert all(i.period_start == date(2026, 10, 1) for i in invoices)
    # the postpaid organisation: one Stripe customer, one Stripe invoice for its usage, one payment
    stripe_invoices = [o for o in stripe_standin.objects.values() if o["object"] == "invoice"]
    customers = [o for o in stripe_standin.objects.values() if o["object"] == "customer"]
    assert len(customers) == 1 and len(stripe_invoices) == 1
    [stripe_invoice] = stripe_invoices
    assert stripe_invoice["id"] == Invoice.objects.get(org=postpaid).stripe_invoice_id
    assert (stripe_invoice["status"], stripe_invoice["amount_due"]) == ("open", 369)  # $3.69 of usage
    assert Payment.objects.filter(stripe_invoice_id=stripe_invoice["id"]).count() == 1
    # each invoice emailed once (the console backend writes the workers' emails to their log)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    for invoice in invoices:
        assert log.count(f"Subject: [RuAPI] Invoice {invoice.number}") == 1, invoice.number
    assert_ledger_equals_balance()
