"""Usage rollups (issue 6): hourly and daily aggregates of billing.UsageEvent, kept forever.

A rollup row is derived data: `usage.services.rollup_bucket_rebuild` recomputes a whole bucket
from the raw events and replaces its rows, so re-running any range converges on the same rows.
Money is integer nano-USD (billing.money); latencies are milliseconds.
"""

from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce

from accounts.models import Organization


class UsageRollup(models.Model):
    class Period(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    period = models.CharField(max_length=4, choices=Period.choices)
    bucket_start = models.DateTimeField()  # UTC, aligned to the period
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="usage_rollups")
    # A historical reference, not a constraint: a rollup outlives the key; NULL = playground
    # (no key) or a key that was deleted.
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=100, blank=True)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)  # status >= 400
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    web_search_requests = models.BigIntegerField(default=0)  # server tools the upstream ran (issue 14)
    web_fetch_requests = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)  # what the tenant was debited
    provider_cost_nanos = models.BigIntegerField(default=0)  # what the provider charges us (Price.cost_*)
    latency_p50_ms = models.PositiveIntegerField(default=0)
    latency_p95_ms = models.PositiveIntegerField(default=0)
    ttft_p50_ms = models.PositiveIntegerField(null=True, blank=True)  # streams only
    ttft_p95_ms = models.PositiveIntegerField(null=True, blank=True)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["period", "bucket_start"]
        indexes = [models.Index(fields=["period", "org", "bucket_start"], name="rollup_org_bucket")]
        constraints = [
            # NULLs are distinct in a plain unique index: coalesce the key so "no key" is one value.
            models.UniqueConstraint(
                F("period"), F("bucket_start"), F("org"), Coalesce(F("api_key"), Value(0)), F("model"), F("provider"),
                name="rollup_one_row_per_dimension",
            ),
            models.CheckConstraint(condition=Q(requests__gte=0) & Q(errors__gte=0), name="rollup_counts_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.bucket_start:%Y-%m-%d %H:00} {self.org_id}/{self.api_key_id}/{self.model}"

    @property
    def margin_nanos(self) -> int:
        return self.cost_nanos - self.provider_cost_nanos


class RollupCursor(models.Model):
    """How far the periodic refresh has aggregated: it resumes from here after any outage."""

    name = models.CharField(max_length=40, unique=True)
    position = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.position:%Y-%m-%d %H:%M}"
