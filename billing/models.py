"""The money ledger, cached balances, holds, and the per-request usage events.

Amounts are integers of nano-USD (see billing.money). The ledger is append-only; Balance is a
derived, cached figure that always equals the sum of its organisation's ledger entries.
"""

import uuid

from django.db import models
from django.db.models import Q

from accounts.models import ApiKey, Organization


class Balance(models.Model):
    org = models.OneToOneField(Organization, on_delete=models.CASCADE, primary_key=True, related_name="balance")
    balance_nanos = models.BigIntegerField(default=0)  # == sum(LedgerEntry.amount_nanos)
    held_nanos = models.BigIntegerField(default=0)  # sum of pending holds
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(held_nanos__gte=0), name="balance_held_non_negative")]

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
        ADJUSTMENT = "adjustment", "Manual adjustment"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount_nanos = models.BigIntegerField()  # signed: credits > 0, debits < 0
    request_id = models.CharField(max_length=64, blank=True, default="")
    description = models.CharField(max_length=500, blank=True)
    created_by = models.CharField(max_length=200, blank=True)  # actor of manual entries
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Every request is billed at most once.
            models.UniqueConstraint(
                fields=["request_id"], condition=Q(kind="usage"), name="ledger_usage_once_per_request"
            ),
            # A usage debit is never a credit.
            models.CheckConstraint(condition=~Q(kind="usage") | Q(amount_nanos__lte=0), name="ledger_usage_is_debit"),
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
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["org", "created_at"])]
        constraints = [models.CheckConstraint(condition=Q(cost_nanos__gte=0), name="usage_cost_non_negative")]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.model} {self.status_code}"
