"""Celery tasks: thin wrappers over billing.services (idempotent, safe to re-run)."""

import logging

from celery import shared_task

from billing.services import holds_expire, ledger_reconcile

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def expire_holds() -> int:
    """Release holds left pending by crashed gateway processes."""
    return holds_expire()


@shared_task(acks_late=True)
def reconcile_ledgers() -> int:
    """Log every organisation whose cached balance differs from its ledger sum."""
    drifts = ledger_reconcile()
    for drift in drifts:
        logger.error("balance drift: org %s balance %s != ledger %s", drift.org_id, drift.balance_nanos,
                     drift.ledger_nanos)  # fmt: skip
    return len(drifts)
