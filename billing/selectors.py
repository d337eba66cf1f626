"""Every read of billing data a view, the API or a task needs. Tenant-facing selectors require org=."""

from datetime import date, timedelta

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import Organization
from billing.models import Balance, Invoice, LedgerEntry, Payment, UsageEvent


def balance_summary(*, org: Organization) -> Balance:
    return Balance.objects.filter(org=org).first() or Balance(org=org)


def ledger_list(
    *, org: Organization, kind: str | None = None, date_from: date | None = None, date_to: date | None = None
) -> QuerySet[LedgerEntry]:
    """The organisation's ledger entries, newest first; `date_to` inclusive (UTC days)."""
    entries = LedgerEntry.objects.filter(org=org)
    if kind:
        entries = entries.filter(kind=kind)
    if date_from:
        entries = entries.filter(created_at__date__gte=date_from)
    if date_to:
        entries = entries.filter(created_at__date__lte=date_to)
    return entries.order_by("-created_at", "-id")


def payment_list(*, org: Organization) -> QuerySet[Payment]:
    return Payment.objects.filter(org=org).exclude(purpose=Payment.Purpose.SETUP).order_by("-created_at", "-id")


def payment_get(*, org: Organization, payment_id: int) -> Payment:
    return Payment.objects.get(org=org, pk=payment_id)


def invoice_list(*, org: Organization) -> QuerySet[Invoice]:
    return Invoice.objects.filter(org=org).defer("html", "pdf").order_by("-period_start")


def invoice_get(*, org: Organization, invoice_id: int) -> Invoice:
    """Raises Invoice.DoesNotExist unless the invoice belongs to `org`."""
    return Invoice.objects.get(org=org, pk=invoice_id)


def spend_by_day(*, org: Organization, days: int = 30) -> list[tuple[date, int]]:
    """Usage debits per UTC day over the last `days` days (nano-USD, positive), every day present."""
    start = timezone.now().date() - timedelta(days=days - 1)
    rows = dict(
        LedgerEntry.objects.filter(org=org, kind=LedgerEntry.Kind.USAGE, created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=Sum("amount_nanos"))
        .values_list("day", "total")
    )
    return [(start + timedelta(days=i), -(rows.get(start + timedelta(days=i)) or 0)) for i in range(days)]


def unscoped_revenue_by_model(*, since) -> list[dict]:
    """Staff only: revenue (what tenants were debited) per model since `since`, with the provider
    cost at each event's price row's cost_* prices (as the usage rollups compute it) and the margin."""
    from usage.services import _provider_cost_nanos  # the one definition of an event's provider cost

    events = UsageEvent.objects.filter(created_at__gte=since)
    # A separate query: the sums below are named like the event fields the cost reads (F("input_tokens")).
    costs = dict(events.values("model").annotate(cost=_provider_cost_nanos()).values_list("model", "cost"))
    rows = list(
        events.values("model")
        .annotate(requests=Count("id"), revenue_nanos=Sum("cost_nanos"),
                  input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"))
        .order_by("-revenue_nanos", "model")
    )  # fmt: skip
    for row in rows:
        row["provider_cost_nanos"] = costs.get(row["model"]) or 0
        row["margin_nanos"] = row["revenue_nanos"] - row["provider_cost_nanos"]
    return rows


def unscoped_revenue_by_org(*, since) -> list[dict]:
    """Staff only: revenue per organisation since `since`, with top-ups received."""
    usage = dict(
        UsageEvent.objects.filter(created_at__gte=since)
        .values("org__name").annotate(total=Sum("cost_nanos")).values_list("org__name", "total")
    )  # fmt: skip
    topups = dict(
        LedgerEntry.objects.filter(created_at__gte=since, kind=LedgerEntry.Kind.TOPUP)
        .values("org__name").annotate(total=Sum("amount_nanos")).values_list("org__name", "total")
    )  # fmt: skip
    names = sorted(set(usage) | set(topups), key=lambda n: -(usage.get(n) or 0))
    return [{"org": n, "revenue_nanos": usage.get(n) or 0, "topups_nanos": topups.get(n) or 0} for n in names]
