"""Celery tasks: thin wrappers over billing.services (idempotent, safe to re-run).

Every task here is acknowledged only after it ran (acks_late) and given back to the queue when the
worker process running it dies (reject_on_worker_lost), so a task killed halfway is run again
from the start — which is why each one must be idempotent (billing/tests/test_celery_faults.py
kills workers in the middle of a webhook and of the monthly invoices). The settings say the same
for every task (CELERY_TASK_ACKS_LATE, CELERY_TASK_REJECT_ON_WORKER_LOST); these are stated here
too so that money tasks keep them whatever the defaults become.
"""

import logging
from datetime import date

from celery import shared_task

from billing import services

logger = logging.getLogger(__name__)

RERUN_IF_LOST = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(**RERUN_IF_LOST)
def expire_holds() -> int:
    """Release holds left pending by crashed gateway processes."""
    return services.holds_expire()


@shared_task(**RERUN_IF_LOST)
def reconcile_ledgers() -> int:
    """Log every organisation whose cached balance differs from its ledger sum."""
    drifts = services.ledger_reconcile()
    for drift in drifts:
        logger.error("balance drift: org %s balance %s != ledger %s", drift.org_id, drift.balance_nanos,
                     drift.ledger_nanos)  # fmt: skip
    return len(drifts)


@shared_task(**RERUN_IF_LOST)
def process_stripe_event(event_id: str) -> str:
    """Process one stored Stripe webhook event (idempotent: a processed event is left alone)."""
    return services.stripe_event_process(event_id=event_id)


@shared_task(**RERUN_IF_LOST)
def retry_stripe_events() -> int:
    return services.stripe_events_retry()


@shared_task(**RERUN_IF_LOST)
def expire_promotions() -> int:
    """Write off the unused remainder of expired promotional credit."""
    return services.promos_expire()


@shared_task(**RERUN_IF_LOST)
def run_auto_recharges() -> int:
    """Charge saved cards of organisations below their auto-recharge threshold (at most once each)."""
    return services.auto_recharge_scan()


@shared_task(**RERUN_IF_LOST)
def check_balance_alerts() -> int:
    """Email low/zero balance alerts, once per crossing."""
    return services.balance_alerts_check()


@shared_task(**RERUN_IF_LOST)
def generate_monthly_invoices(period_start: str | None = None) -> int:
    """Invoice last month (or the month starting `period_start`, ISO date) for every organisation with activity.

    A run killed after an invoice was saved but before its postpaid Stripe invoice was made or it
    was emailed finds that invoice already made when it runs again (invoice_create returns it as
    it is), so the steps after the save are finished here for every invoice of the month.
    """
    start = date.fromisoformat(period_start) if period_start else None
    made = services.invoices_generate(period_start=start)
    invoices_finish(made)
    return len(made)


def invoices_finish(invoice_ids: list[int]) -> None:
    """The postpaid Stripe invoice and the email of each invoice, where a killed run left them out."""
    from django.db.models import Q

    from billing.models import Invoice
    from billing.services.invoices import postpaid_invoice_create

    unfinished = Invoice.objects.filter(
        Q(emailed_at__isnull=True) | Q(is_postpaid=True, stripe_invoice_id=""), pk__in=invoice_ids
    )
    for invoice in unfinished.defer("html", "pdf").select_related("org").order_by("pk"):
        try:
            if invoice.is_postpaid and not invoice.stripe_invoice_id and services.stripe_enabled():
                postpaid_invoice_create(invoice=invoice)
            if invoice.emailed_at is None:
                services.invoice_email(invoice_id=invoice.pk)
        except Exception:
            logger.exception("finishing invoice %s failed", invoice.number)
