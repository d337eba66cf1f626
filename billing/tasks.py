"""Celery tasks: thin wrappers over billing.services (idempotent, safe to re-run)."""

import logging
from datetime import date

from celery import shared_task

from billing import services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def expire_holds() -> int:
    """Release holds left pending by crashed gateway processes."""
    return services.holds_expire()


@shared_task(acks_late=True)
def reconcile_ledgers() -> int:
    """Log every organisation whose cached balance differs from its ledger sum."""
    drifts = services.ledger_reconcile()
    for drift in drifts:
        logger.error("balance drift: org %s balance %s != ledger %s", drift.org_id, drift.balance_nanos,
                     drift.ledger_nanos)  # fmt: skip
    return len(drifts)


@shared_task(acks_late=True)
def process_stripe_event(event_id: str) -> str:
    """Process one stored Stripe webhook event (idempotent: a processed event is left alone)."""
    return services.stripe_event_process(event_id=event_id)


@shared_task(acks_late=True)
def retry_stripe_events() -> int:
    return services.stripe_events_retry()


@shared_task(acks_late=True)
def expire_promotions() -> int:
    """Write off the unused remainder of expired promotional credit."""
    return services.promos_expire()


@shared_task(acks_late=True)
def run_auto_recharges() -> int:
    """Charge saved cards of organisations below their auto-recharge threshold (at most once each)."""
    return services.auto_recharge_scan()


@shared_task(acks_late=True)
def check_balance_alerts() -> int:
    """Email low/zero balance alerts, once per crossing."""
    return services.balance_alerts_check()


@shared_task(acks_late=True)
def generate_monthly_invoices(period_start: str | None = None) -> int:
    """Invoice last month (or the month starting `period_start`, ISO date) for every organisation with activity."""
    start = date.fromisoformat(period_start) if period_start else None
    return len(services.invoices_generate(period_start=start))
