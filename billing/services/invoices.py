"""Monthly invoices: one per organisation with activity per calendar month (UTC), numbered, HTML + PDF.

The totals are sums of the month's ledger entries by kind, so opening + movements = closing to the
nano-USD. Usage lines group the month's usage events by model and price; they cover exactly the
requests the month's usage entries debited (plus free ones). Re-running a month changes nothing:
(org, month) is unique. Postpaid organisations also get a Stripe invoice for the month's usage.
"""

import logging
from datetime import UTC, date, datetime, time
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import Organization
from billing.models import Invoice, LedgerEntry, Payment, UsageEvent
from billing.money import cents_to_nanos, format_usd, nanos_to_cents, tax_included, usd_per_kreq, usd_per_mtok
from billing.services.notifications import billing_email_send
from billing.services.payments import customer_ensure, profile_get
from billing.services.stripe_client import stripe_client, stripe_enabled

logger = logging.getLogger(__name__)
Kind = LedgerEntry.Kind


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def previous_month(today: date) -> date:
    first = month_start(today)
    return date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)


def _aware(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), UTC)


def _usage_lines(org_id: int, start: datetime, end: datetime) -> list[dict]:
    debited = LedgerEntry.objects.filter(org_id=org_id, kind=Kind.USAGE, created_at__gte=start, created_at__lt=end)
    events = UsageEvent.objects.filter(
        Q(request_id__in=debited.values("request_id")) | Q(created_at__gte=start, created_at__lt=end, cost_nanos=0),
        org_id=org_id,
    )
    rows = (
        events.values("model", "price_id", "price__input_nanos_per_mtok", "price__output_nanos_per_mtok",
                      "price__cache_read_nanos_per_mtok", "price__cache_write_nanos_per_mtok",
                      "price__web_search_nanos_per_kreq", "price__web_fetch_nanos_per_kreq")
        .annotate(requests=Count("id"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"),
                  cache_read_tokens=Sum("cache_read_tokens"), cache_write_tokens=Sum("cache_write_tokens"),
                  web_search_requests=Sum("web_search_requests"), web_fetch_requests=Sum("web_fetch_requests"),
                  amount_nanos=Sum("cost_nanos"))
        .order_by("model", "price_id")
    )  # fmt: skip
    lines = []
    for row in rows:
        lines.append({
            "model": row["model"],
            "requests": row["requests"],
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "cache_read_tokens": row["cache_read_tokens"] or 0,
            "cache_write_tokens": row["cache_write_tokens"] or 0,
            # Unit prices in USD per 1M tokens, as strings (exact).
            "input_price": str(usd_per_mtok(row["price__input_nanos_per_mtok"] or 0)),
            "output_price": str(usd_per_mtok(row["price__output_nanos_per_mtok"] or 0)),
            "cache_read_price": str(usd_per_mtok(row["price__cache_read_nanos_per_mtok"] or 0)),
            "cache_write_price": str(usd_per_mtok(row["price__cache_write_nanos_per_mtok"] or 0)),
            # Server tools (issue 14): counts, and USD per 1,000 requests.
            "web_search_requests": row["web_search_requests"] or 0,
            "web_fetch_requests": row["web_fetch_requests"] or 0,
            "web_search_price": str(usd_per_kreq(row["price__web_search_nanos_per_kreq"] or 0)),
            "web_fetch_price": str(usd_per_kreq(row["price__web_fetch_nanos_per_kreq"] or 0)),
            "amount_nanos": row["amount_nanos"] or 0,
        })  # fmt: skip
    return lines


def _totals(org_id: int, start: datetime, end: datetime) -> dict:
    entries = LedgerEntry.objects.filter(org_id=org_id)
    opening = entries.filter(created_at__lt=start).aggregate(total=Sum("amount_nanos"))["total"] or 0
    by_kind = dict(
        entries.filter(created_at__gte=start, created_at__lt=end)
        .values("kind")
        .annotate(total=Sum("amount_nanos"))
        .values_list("kind", "total")
    )
    totals = {
        "opening_balance_nanos": opening,
        "topups_nanos": by_kind.get(Kind.TOPUP, 0),
        "promo_nanos": by_kind.get(Kind.PROMO, 0) + by_kind.get(Kind.PROMO_EXPIRY, 0),
        "usage_nanos": by_kind.get(Kind.USAGE, 0),
        "refunds_nanos": by_kind.get(Kind.REFUND, 0),
        "disputes_nanos": by_kind.get(Kind.DISPUTE, 0),
        "adjustments_nanos": by_kind.get(Kind.ADJUSTMENT, 0),
    }
    totals["closing_balance_nanos"] = opening + sum(by_kind.values())
    return totals


def _has_activity(org_id: int, start: datetime, end: datetime) -> bool:
    return (
        LedgerEntry.objects.filter(org_id=org_id, created_at__gte=start, created_at__lt=end).exists()
        or UsageEvent.objects.filter(org_id=org_id, created_at__gte=start, created_at__lt=end).exists()
    )


def _tax(topups_nanos: int) -> dict:
    rate = Decimal(settings.RUAPI_TAX_RATE_PERCENT)
    return {
        "name": settings.RUAPI_TAX_NAME,
        "rate_percent": str(rate),
        "included_nanos": tax_included(max(topups_nanos, 0), rate),
        "seller_name": settings.RUAPI_SELLER_NAME,
        "seller_address": settings.RUAPI_SELLER_ADDRESS,
        "seller_tax_id": settings.RUAPI_SELLER_TAX_ID,
    }


def _number(period_start: date) -> str:
    prefix = f"{settings.RUAPI_INVOICE_PREFIX}-{period_start:%Y%m}-"
    taken = Invoice.objects.filter(number__startswith=prefix).count()
    return f"{prefix}{taken + 1:05d}"


def invoice_render_pdf(html: str) -> bytes:
    from weasyprint import HTML  # imported lazily: Pango is only needed where invoices are made

    return HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()


def invoice_create(*, org_id: int, period_start: date) -> Invoice | None:
    """The organisation's invoice for the month starting `period_start`; the existing one if made before.

    None when the organisation had no activity that month.
    """
    period_start = month_start(period_start)
    existing = Invoice.objects.filter(org_id=org_id, period_start=period_start).first()
    if existing is not None:
        return existing
    start, end = _aware(period_start), _aware(next_month(period_start))
    if end > timezone.now():
        raise ValueError("a month is invoiced once it has ended")
    if not _has_activity(org_id, start, end):
        return None
    org = Organization.objects.get(pk=org_id)
    profile = profile_get(org_id=org_id)
    totals = _totals(org_id, start, end)
    lines = _usage_lines(org_id, start, end)
    tax = _tax(totals["topups_nanos"])
    for attempt in range(5):
        invoice = Invoice(
            org_id=org_id, number=_number(period_start), period_start=period_start,
            period_end=next_month(period_start), lines=lines, tax=tax, is_postpaid=profile.is_postpaid,
            **totals,
        )  # fmt: skip
        invoice.html = render_to_string("billing/invoice_document.html", {"invoice": invoice, "org": org})
        invoice.pdf = invoice_render_pdf(invoice.html)
        try:
            with transaction.atomic():
                invoice.save()
            break
        except IntegrityError:
            existing = Invoice.objects.filter(org_id=org_id, period_start=period_start).first()
            if existing is not None:
                return existing  # made concurrently
            if attempt == 4:
                raise
    if profile.is_postpaid and stripe_enabled():
        postpaid_invoice_create(invoice=invoice)
    transaction.on_commit(lambda: invoice_email(invoice_id=invoice.pk))
    return invoice


def postpaid_invoice_create(*, invoice: Invoice) -> Payment | None:
    """A Stripe invoice for the month's usage (postpaid organisations); paying it credits the balance."""
    usage_cents = nanos_to_cents(-invoice.usage_nanos)
    if usage_cents <= 0:
        return None
    if invoice.stripe_invoice_id:
        return Payment.objects.filter(stripe_invoice_id=invoice.stripe_invoice_id).first()
    client = stripe_client()
    customer_id = customer_ensure(org=invoice.org)
    payment = Payment.objects.create(
        org_id=invoice.org_id, purpose=Payment.Purpose.POSTPAID_INVOICE, amount_nanos=cents_to_nanos(usage_cents),
    )  # fmt: skip
    metadata = {"org_id": str(invoice.org_id), "payment_id": str(payment.pk), "invoice_number": invoice.number}
    stripe_invoice = client.v1.invoices.create(
        params={"customer": customer_id, "collection_method": "send_invoice", "days_until_due": 14,
                "pending_invoice_items_behavior": "exclude", "metadata": metadata,
                "description": f"{settings.RUAPI_BRAND_NAME} usage {invoice.period_start:%B %Y} ({invoice.number})"},
        options={"idempotency_key": f"ruapi-invoice-{invoice.number}"},
    )  # fmt: skip
    client.v1.invoice_items.create(
        params={"customer": customer_id, "invoice": stripe_invoice.id, "amount": usage_cents, "currency": "usd",
                "description": f"API usage {invoice.period_start:%B %Y}", "metadata": metadata},
        options={"idempotency_key": f"ruapi-invoice-{invoice.number}-usage"},
    )  # fmt: skip
    client.v1.invoices.finalize_invoice(
        stripe_invoice.id, options={"idempotency_key": f"ruapi-finalize-{invoice.number}"}
    )
    Payment.objects.filter(pk=payment.pk).update(stripe_invoice_id=stripe_invoice.id)
    Invoice.objects.filter(pk=invoice.pk).update(stripe_invoice_id=stripe_invoice.id)
    return Payment.objects.get(pk=payment.pk)


def invoice_email(*, invoice_id: int) -> bool:
    """Email the invoice (PDF attached) to the billing contacts, once."""
    if not Invoice.objects.filter(pk=invoice_id, emailed_at__isnull=True).update(emailed_at=timezone.now()):
        return False
    invoice = Invoice.objects.select_related("org").get(pk=invoice_id)
    body = (f"Your {settings.RUAPI_BRAND_NAME} statement {invoice.number} for {invoice.period_start:%B %Y} is "
            f"attached.\nClosing balance: ${format_usd(invoice.closing_balance_nanos)}")  # fmt: skip
    billing_email_send(
        org_id=invoice.org_id, subject=f"Invoice {invoice.number}", body=body,
        attachments=[(f"{invoice.number}.pdf", bytes(invoice.pdf), "application/pdf")],
    )  # fmt: skip
    return True


def invoices_generate(*, period_start: date | None = None) -> list[int]:
    """Invoice every organisation with activity in the given month (default: last month); ids made or found."""
    period_start = month_start(period_start or previous_month(timezone.now().date()))
    start, end = _aware(period_start), _aware(next_month(period_start))
    org_ids = set(
        LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end).values_list("org_id", flat=True)
    ) | set(UsageEvent.objects.filter(created_at__gte=start, created_at__lt=end).values_list("org_id", flat=True))
    made = []
    for org_id in sorted(org_ids):
        try:
            invoice = invoice_create(org_id=org_id, period_start=period_start)
        except Exception:
            logger.exception("invoice of org %s for %s failed", org_id, period_start)
            continue
        if invoice is not None:
            made.append(invoice.pk)
    return made
