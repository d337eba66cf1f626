"""Every write to billing data, split by sub-domain (STYLE.md); import from here.

ledger        balances, ledger entries, promotions, adjustments, reconcile
holds         the money boundary of a request: holds, settlements (usage events), releases
payments      Stripe customers, Checkout top-ups and card setup, payment state -> ledger
webhooks      Stripe webhook receipt and processing ({event type: handler})
recharge      auto-recharge of a saved card
notifications low/zero-balance and other billing emails
invoices      monthly invoices (HTML + PDF), postpaid Stripe invoices
"""

from billing.services.holds import (
    HeldFunds,
    Settled,
    UsageRecord,
    ahold_open,
    ahold_release,
    ahold_settle,
    balance_hold,
    hold_release,
    hold_settle,
    holds_expire,
    holds_open,
    holds_settle,
)
from billing.services.invoices import invoice_create, invoice_email, invoices_generate, previous_month
from billing.services.ledger import (
    BillingError,
    Drift,
    InsufficientBalanceError,
    balance_adjust,
    balance_credit,
    balance_ensure,
    balance_get,
    ledger_append,
    ledger_reconcile,
    promo_grant,
    promos_expire,
)
from billing.services.notifications import balance_alerts_check, balance_alerts_configure, billing_contacts
from billing.services.payments import (
    TopUpAmountError,
    card_setup_create,
    customer_ensure,
    payment_converge,
    profile_get,
    topup_amount_validate,
    topup_create,
)
from billing.services.recharge import auto_recharge_configure, auto_recharge_run, auto_recharge_scan
from billing.services.stripe_client import STRIPE_OFF_MESSAGE, StripeDisabledError, stripe_enabled
from billing.services.webhooks import (
    WebhookSignatureError,
    stripe_event_needs_processing,
    stripe_event_process,
    stripe_event_receive,
    stripe_events_retry,
)

__all__ = [
    "STRIPE_OFF_MESSAGE",
    "BillingError",
    "Drift",
    "HeldFunds",
    "InsufficientBalanceError",
    "Settled",
    "StripeDisabledError",
    "TopUpAmountError",
    "UsageRecord",
    "WebhookSignatureError",
    "ahold_open",
    "ahold_release",
    "ahold_settle",
    "auto_recharge_configure",
    "auto_recharge_run",
    "auto_recharge_scan",
    "balance_adjust",
    "balance_alerts_check",
    "balance_alerts_configure",
    "balance_credit",
    "balance_ensure",
    "balance_get",
    "balance_hold",
    "billing_contacts",
    "card_setup_create",
    "customer_ensure",
    "hold_release",
    "hold_settle",
    "holds_expire",
    "holds_open",
    "holds_settle",
    "invoice_create",
    "invoice_email",
    "invoices_generate",
    "ledger_append",
    "ledger_reconcile",
    "payment_converge",
    "previous_month",
    "profile_get",
    "promo_grant",
    "promos_expire",
    "stripe_enabled",
    "stripe_event_needs_processing",
    "stripe_event_process",
    "stripe_event_receive",
    "stripe_events_retry",
    "topup_amount_validate",
    "topup_create",
]
