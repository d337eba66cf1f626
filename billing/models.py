"""The money ledger, cached balances, holds, usage events, Stripe payments and events, invoices.

Amounts are integers of nano-USD (see billing.money). The ledger is append-only; Balance is a
derived, cached figure that always equals the sum of its organisation's ledger entries.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import ApiKey, Organization


class Balance(models.Model):
    org = models.OneToOneField(Organization, on_delete=models.CASCADE, primary_key=True, related_name="balance")
    balance_nanos = models.BigIntegerField(default=0)  # == sum(LedgerEntry.amount_nanos)
    held_nanos = models.BigIntegerField(default=0)  # sum of pending holds
    # Postpaid organisations (set by an admin) may hold and spend this far below zero; the month's
    # usage is then invoiced through Stripe. Zero for prepaid organisations.
    credit_limit_nanos = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(held_nanos__gte=0), name="balance_held_non_negative"),
            models.CheckConstraint(condition=Q(credit_limit_nanos__gte=0), name="balance_credit_limit_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.org}: {self.balance_nanos} nUSD"

    @property
    def available_nanos(self) -> int:
        return self.balance_nanos - self.held_nanos


class LedgerEntry(models.Model):
    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        USAGE = "usage", "Usage"
        REFUND = "refund", "Refund"
        DISPUTE = "dispute", "Dispute"
        PROMO = "promo", "Promotional credit"
        PROMO_EXPIRY = "promo_expiry", "Promotional credit expired"
        ADJUSTMENT = "adjustment", "Manual adjustment"

    CREDIT_KINDS = (Kind.TOPUP, Kind.PROMO)  # always > 0
    DEBIT_KINDS = (Kind.REFUND, Kind.PROMO_EXPIRY)  # never > 0 (like usage)
    # Kinds whose `reference` names the outside fact they record, so it is recorded once.
    REFERENCED_KINDS = (Kind.TOPUP, Kind.REFUND, Kind.DISPUTE, Kind.PROMO_EXPIRY)

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount_nanos = models.BigIntegerField()  # signed: credits > 0, debits < 0
    request_id = models.CharField(max_length=64, blank=True, default="")
    # What this entry records, e.g. "payment:12", "payment:12:refund:5000000000", "dispute:dp_1",
    # "promo:7"; unique per kind (REFERENCED_KINDS) so a replayed fact never books twice.
    reference = models.CharField(max_length=200, blank=True, default="")
    payment = models.ForeignKey("Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    expires_at = models.DateTimeField(null=True, blank=True)  # promotional credit only
    # This debit took the balance below zero (a refund or dispute of credit already spent): debt.
    is_debt = models.BooleanField(default=False)
    description = models.CharField(max_length=500, blank=True)
    created_by = models.CharField(max_length=200, blank=True)  # actor of manual entries
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["org", "created_at"], name="ledger_org_created")]
        constraints = [
            # Every request is billed at most once.
            models.UniqueConstraint(
                fields=["request_id"], condition=Q(kind="usage"), name="ledger_usage_once_per_request"
            ),
            # A usage debit is never a credit.
            models.CheckConstraint(condition=~Q(kind="usage") | Q(amount_nanos__lte=0), name="ledger_usage_is_debit"),
            models.CheckConstraint(
                condition=~Q(kind__in=["topup", "promo"]) | Q(amount_nanos__gt=0), name="ledger_credit_is_positive"
            ),
            models.CheckConstraint(condition=~Q(kind="refund") | Q(amount_nanos__lt=0), name="ledger_refund_is_debit"),
            # Zero allowed: an expired grant that was fully spent is still closed by an explicit entry.
            models.CheckConstraint(
                condition=~Q(kind="promo_expiry") | Q(amount_nanos__lte=0), name="ledger_promo_expiry_is_debit"
            ),
            # A manual adjustment always says why and who.
            models.CheckConstraint(
                condition=~Q(kind="adjustment") | (~Q(description="") & ~Q(created_by="")),
                name="ledger_adjustment_has_reason_and_actor",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(kind="promo"), name="ledger_only_promo_expires"
            ),
            models.UniqueConstraint(
                fields=["kind", "reference"],
                condition=Q(kind__in=["topup", "refund", "dispute", "promo_expiry"]) & ~Q(reference=""),
                name="ledger_reference_once_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_nanos} nUSD for {self.org}"


class Hold(models.Model):
    """Money reserved for a request in flight; settled to the actual cost or released."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="holds")
    request_id = models.CharField(max_length=64, unique=True)
    amount_nanos = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(amount_nanos__gte=0), name="hold_amount_non_negative")]

    def __str__(self) -> str:
        return f"hold {self.request_id} ({self.status})"


class UsageEvent(models.Model):
    """Exactly one per proxied request, written before the response's last byte leaves."""

    class Source(models.TextChoices):
        API = "api", "API"
        PLAYGROUND = "playground", "Playground"

    request_id = models.CharField(max_length=64, unique=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="usage_events")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_events")
    endpoint = models.CharField(max_length=40)  # chat.completions, messages, embeddings, ...
    model = models.CharField(max_length=200)  # public id the client sent
    provider = models.CharField(max_length=100, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    client_protocol = models.CharField(max_length=16)
    upstream_protocol = models.CharField(max_length=16, blank=True)
    is_stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=60, blank=True)
    input_tokens = models.BigIntegerField(default=0)  # uncached
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)  # including reasoning
    reasoning_tokens = models.BigIntegerField(default=0)
    units = models.DecimalField(max_digits=20, decimal_places=3, default=0)  # images, audio seconds, characters
    is_estimated = models.BooleanField(default=False)
    price = models.ForeignKey("catalog.Price", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    cost_nanos = models.BigIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=1)
    latency_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(null=True, blank=True)
    # Who sent it (issue 6): the public API with a key, or the dashboard playground as a user.
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.API)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["org", "created_at"])]
        constraints = [models.CheckConstraint(condition=Q(cost_nanos__gte=0), name="usage_cost_non_negative")]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.model} {self.status_code}"


class BillingProfile(models.Model):
    """An organisation's billing settings and Stripe identity (one per organisation, created lazily)."""

    class AlertState(models.TextChoices):
        OK = "ok", "Above threshold"
        LOW = "low", "Low balance notified"
        ZERO = "zero", "Zero balance notified"

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, primary_key=True, related_name="billing")
    stripe_customer_id = models.CharField(max_length=100, unique=True, null=True, blank=True)
    # The saved card for auto-recharge (Checkout in setup mode).
    payment_method_id = models.CharField(max_length=100, blank=True)
    card_brand = models.CharField(max_length=30, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    auto_recharge_enabled = models.BooleanField(default=False)
    auto_recharge_threshold_nanos = models.BigIntegerField(default=0)
    auto_recharge_amount_nanos = models.BigIntegerField(default=0)
    auto_recharge_daily_cap_nanos = models.BigIntegerField(default=0)  # sum of one UTC day's recharges
    # Set when a recharge fails; auto-recharge pauses until the settings or the card change.
    auto_recharge_error = models.TextField(blank=True)
    auto_recharge_failed_at = models.DateTimeField(null=True, blank=True)
    notify_low_balance = models.BooleanField(default=True)
    low_balance_threshold_nanos = models.BigIntegerField(default=5_000_000_000)  # $5
    alert_state = models.CharField(max_length=8, choices=AlertState.choices, default=AlertState.OK)
    is_postpaid = models.BooleanField(default=False, help_text="Admin only: invoiced monthly through Stripe.")
    needs_review = models.BooleanField(default=False, help_text="Flagged for an admin (dispute, debt).")
    review_reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(auto_recharge_threshold_nanos__gte=0)
                & Q(auto_recharge_amount_nanos__gte=0)
                & Q(auto_recharge_daily_cap_nanos__gte=0)
                & Q(low_balance_threshold_nanos__gte=0),
                name="billing_profile_amounts_non_negative",
            )
        ]

    def __str__(self) -> str:
        return f"billing of {self.org}"

    @property
    def has_card(self) -> bool:
        return bool(self.payment_method_id)


class Payment(models.Model):
    """Money asked of Stripe: a Checkout top-up, an auto-recharge, a card setup or a postpaid invoice.

    Its state only moves forward (pending -> paid | failed), so events in any order converge.
    """

    class Purpose(models.TextChoices):
        TOPUP = "topup", "Top-up"
        AUTO_RECHARGE = "auto_recharge", "Auto-recharge"
        SETUP = "setup", "Card setup"
        POSTPAID_INVOICE = "postpaid_invoice", "Postpaid invoice"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="payments")
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    amount_nanos = models.BigIntegerField()
    checkout_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_invoice_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    # Stripe's cumulative figures (charge.amount_refunded, open disputes), never decreased.
    refunded_nanos = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)
    # A correctly signed Stripe object that disagreed with this payment (amount, currency or
    # organisation): only the stored amount was credited, and an admin should look (issue 12).
    needs_review = models.BooleanField(default=False, db_index=True)
    review_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount_nanos__gte=0) & Q(refunded_nanos__gte=0), name="payment_amounts_non_negative"
            ),
            # At most one auto-recharge in flight per organisation: the task can never charge twice.
            models.UniqueConstraint(
                fields=["org"], condition=Q(purpose="auto_recharge", status="pending"),
                name="payment_one_pending_auto_recharge",
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.purpose} {self.amount_nanos} nUSD for {self.org} ({self.status})"

    @property
    def idempotency_key(self) -> str:
        return f"ruapi-payment-{self.pk}"


class StripeEvent(models.Model):
    """A received Stripe webhook event, stored raw under its id before anything else happens."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored (no handler)"
        FAILED = "failed", "Failed"

    id = models.CharField(max_length=255, primary_key=True)  # evt_...
    type = models.CharField(max_length=100, db_index=True)
    payload = models.TextField()  # the raw, verified body
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(default=1)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.id} {self.type} ({self.status})"


class Invoice(models.Model):
    """A monthly statement of one organisation's ledger; its totals are the ledger's, to the nano-USD."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="invoices")
    number = models.CharField(max_length=40, unique=True)
    period_start = models.DateField()  # first day of the month
    period_end = models.DateField()  # first day of the next month (exclusive)
    currency = models.CharField(max_length=3, default="usd")
    opening_balance_nanos = models.BigIntegerField()
    topups_nanos = models.BigIntegerField(default=0)
    promo_nanos = models.BigIntegerField(default=0)  # grants minus expiries
    usage_nanos = models.BigIntegerField(default=0)  # negative: debits
    refunds_nanos = models.BigIntegerField(default=0)
    disputes_nanos = models.BigIntegerField(default=0)
    adjustments_nanos = models.BigIntegerField(default=0)
    closing_balance_nanos = models.BigIntegerField()
    lines = models.JSONField(default=list)  # usage per model and price (see services.invoices)
    tax = models.JSONField(default=dict)  # name, rate_percent, seller and the tax included in top-ups
    is_postpaid = models.BooleanField(default=False)
    stripe_invoice_id = models.CharField(max_length=255, blank=True)
    html = models.TextField()
    pdf = models.BinaryField()
    emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_start", "org"]
        constraints = [models.UniqueConstraint(fields=["org", "period_start"], name="invoice_once_per_org_month")]

    def __str__(self) -> str:
        return f"{self.number} ({self.org}, {self.period_start:%Y-%m})"


class CreditCode(models.Model):
    """A redemption code: credit an organisation redeems on the billing page (single- or multi-use).

    Only the code's SHA-256 is stored, like API keys: a code is a bearer credential worth money, so a
    database dump, a read-only staff account or a log must not be able to spend it. Staff see the
    code once, when it is generated (on screen and as CSV); `prefix` identifies it afterwards.
    `remaining` is what makes redemption race-safe: one conditional UPDATE (remaining > 0) per
    redemption, on Postgres and SQLite alike (billing.services.credits).
    """

    prefix = models.CharField(max_length=16, db_index=True, help_text="The first characters, safe to display.")
    code_hash = models.CharField(max_length=64, unique=True)
    amount_nanos = models.BigIntegerField()  # credited per redemption, as promotional credit
    max_redemptions = models.PositiveIntegerField(default=1)  # 1: single use
    remaining = models.PositiveIntegerField(default=1)  # redemptions left; only ever decremented
    per_org_limit = models.PositiveIntegerField(default=1)  # redemptions one organisation may make
    expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True, help_text="Campaign or batch, shown to staff only.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_nanos__gt=0), name="creditcode_amount_positive"),
            models.CheckConstraint(
                condition=Q(max_redemptions__gte=1) & Q(per_org_limit__gte=1), name="creditcode_limits_positive"
            ),
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=models.F("max_redemptions")),
                name="creditcode_remaining_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.note or 'code'})"

    @property
    def used(self) -> int:
        return self.max_redemptions - self.remaining


class CreditCodeRedemption(models.Model):
    """One redemption: (code, org, n) is unique, so an organisation's n-th redemption of a code
    credits exactly once; (code, number) is unique too, number being the code's 1..max_redemptions."""

    code = models.ForeignKey(CreditCode, on_delete=models.PROTECT, related_name="redemptions")
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="credit_code_redemptions")
    n = models.PositiveIntegerField()  # this organisation's n-th redemption of the code, 1..per_org_limit
    number = models.PositiveIntegerField()  # the code's number-th redemption, 1..max_redemptions
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")  # fmt: skip
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="credit_code_redemption")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["code", "org", "n"], name="creditcode_redemption_once_per_org_n"),
            models.UniqueConstraint(fields=["code", "number"], name="creditcode_redemption_once_per_number"),
            models.CheckConstraint(condition=Q(n__gte=1) & Q(number__gte=1), name="creditcode_redemption_ordinals"),
        ]

    def __str__(self) -> str:
        return f"{self.code} by {self.org} (#{self.number})"
