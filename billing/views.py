"""Billing dashboard pages and the Stripe webhook endpoint. Views call services and selectors only."""

import csv
from datetime import date, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.permissions import Perm
from billing import selectors, services
from billing.models import Invoice, LedgerEntry
from billing.money import MoneyError, nanos_to_usd, usd_to_nanos
from billing.services import credits
from billing.tasks import process_stripe_event
from billing.templatetags.money import usd_cents
from dashboard.gate import tenant_view

# What customers read when card payments are off (STRIPE_OFF_MESSAGE is the operator's version).
CARD_TOPUPS_OFF = (
    "Top-ups by card are not available here. Redeem a credit code below, or contact the operator of this "
    "service to add credit to your organisation."
)
CARD_SAVING_OFF = "Card payments are not available here, so no card can be saved for auto-recharge."


@csrf_exempt
@transaction.non_atomic_requests
@require_POST
def stripe_webhook(request):
    """POST /billing/stripe/webhook/: verify, store, answer 2xx at once; a task does the work.

    non_atomic_requests: the raw event must be stored (and committed) even if processing fails
    later, and processing runs in its own atomic() inside the task, so this view must never run
    inside one request-wide transaction. CSRF-exempt: Stripe signs the body instead.
    """
    try:
        row, is_new = services.stripe_event_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except services.WebhookSignatureError as exc:
        return HttpResponseBadRequest(f"invalid signature: {exc}", content_type="text/plain")
    if is_new or services.stripe_event_needs_processing(row):
        process_stripe_event.delay_on_commit(row.pk)
    return HttpResponse("ok", content_type="text/plain")


def _absolute(request, name: str) -> str:
    return request.build_absolute_uri(reverse(name))


@tenant_view(Perm.BILLING_VIEW)
def overview(request):
    org = request.tenant.org
    spend = selectors.spend_by_day(org=org, days=30)
    return render(request, "billing/overview.html", {
        "balance": selectors.balance_summary(org=org),
        "profile": services.profile_get(org_id=org.id),
        "payments": selectors.payment_list(org=org)[:10],
        "spend_labels": [d.isoformat() for d, _ in spend],
        "spend_values": [str(nanos_to_usd(v)) for _, v in spend],
        "stripe_enabled": services.stripe_enabled(),
        "stripe_off_message": CARD_TOPUPS_OFF,
    })  # fmt: skip


def _topup_context(request) -> dict:
    return {
        "stripe_enabled": services.stripe_enabled(),
        "stripe_off_message": CARD_TOPUPS_OFF,
        "min_usd": settings.RUAPI_TOPUP_MIN_USD,
        "max_usd": settings.RUAPI_TOPUP_MAX_USD,
        "amount": request.POST.get("amount", "25"),
        "result": request.GET.get("result", ""),
    }


@tenant_view(Perm.BILLING_MANAGE)
def topup(request):
    org = request.tenant.org
    context = {
        **_topup_context(request),
    }
    if request.method == "POST":
        if not services.stripe_enabled():
            context["error"] = CARD_TOPUPS_OFF
            return render(request, "billing/topup.html", context, status=503)
        try:
            amount_nanos = services.topup_amount_validate(request.POST.get("amount", ""))
            payment = services.topup_create(
                org=org, amount_nanos=amount_nanos, user=request.user,
                success_url=_absolute(request, "billing:topup") + "?result=success",
                cancel_url=_absolute(request, "billing:topup") + "?result=cancelled",
            )  # fmt: skip
        except services.TopUpAmountError as exc:
            context["error"] = str(exc)
            return render(request, "billing/topup.html", context, status=400)
        except services.StripeDisabledError:
            context["error"] = CARD_TOPUPS_OFF
            return render(request, "billing/topup.html", context, status=503)
        # A double click gets the same pending payment and Checkout session (services.topup_create).
        return redirect(payment.checkout_url)
    return render(request, "billing/topup.html", context)


@require_POST
@tenant_view(Perm.BILLING_MANAGE)
def redeem(request):
    """POST /billing/redeem/: a credit code -> the organisation's balance (303 to the balance page), or
    the top-up page again with the reason (400 unknown/expired, 409 used up/already redeemed, 429)."""
    code = (request.POST.get("code") or "").strip()[:100]
    try:
        if not code:
            raise credits.CreditCodeUnknownError("Enter a code.")
        redemption = credits.creditcode_redeem(org=request.tenant.org, user=request.user, code=code)
    except credits.CreditCodeError as exc:
        context = {**_topup_context(request), "redeem_error": str(exc), "redeem_code": code}
        response = render(request, "billing/topup.html", context, status=exc.status)
        if isinstance(exc, credits.CreditCodeThrottledError):
            response["Retry-After"] = str(exc.retry_after)
        return response
    messages.success(request, f"Code redeemed: {usd_cents(redemption.entry.amount_nanos)} added to your balance.")
    return _see_other(reverse("billing:overview"))


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303  # after a POST: the browser GETs the page (PRG)


def _see_other(url: str) -> HttpResponse:
    return HttpResponseSeeOther(url)


def _usd_field(request, name: str) -> int:
    raw = (request.POST.get(name) or "0").strip()
    nanos = usd_to_nanos(raw)
    if nanos < 0:
        raise MoneyError("negative")
    return nanos


@tenant_view(Perm.BILLING_MANAGE)
def settings_view(request):
    org = request.tenant.org
    profile = services.profile_get(org_id=org.id)
    errors = []
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "card":
            if not services.stripe_enabled():
                messages.error(request, CARD_SAVING_OFF)
                return redirect("billing:settings")
            payment = services.card_setup_create(
                org=org, user=request.user, success_url=_absolute(request, "billing:settings") + "?card=saved",
                cancel_url=_absolute(request, "billing:settings"),
            )  # fmt: skip
            return redirect(payment.checkout_url)
        try:
            if action == "alerts":
                services.balance_alerts_configure(
                    org_id=org.id, notify=bool(request.POST.get("notify_low_balance")),
                    threshold_nanos=_usd_field(request, "low_balance_threshold"),
                )  # fmt: skip
            else:
                services.auto_recharge_configure(
                    org_id=org.id, enabled=bool(request.POST.get("enabled")),
                    threshold_nanos=_usd_field(request, "threshold"), amount_nanos=_usd_field(request, "amount"),
                    daily_cap_nanos=_usd_field(request, "daily_cap"),
                )  # fmt: skip
            messages.success(request, "Saved.")
            return redirect("billing:settings")
        except MoneyError:
            errors.append("Amounts are in dollars, e.g. 10 or 2.50.")
        except services.BillingError as exc:
            errors.append(str(exc))
    return render(request, "billing/settings.html", {
        "profile": profile, "errors": errors, "stripe_enabled": services.stripe_enabled(),
        "stripe_off_message": CARD_SAVING_OFF, "card_saved": request.GET.get("card") == "saved",
    }, status=400 if errors else 200)  # fmt: skip


def _ledger_filters(request) -> dict:
    def day(name):
        try:
            return date.fromisoformat(request.GET.get(name, ""))
        except ValueError:
            return None

    kind = request.GET.get("kind") or None
    return {"kind": kind if kind in LedgerEntry.Kind.values else None, "date_from": day("from"), "date_to": day("to")}


@tenant_view(Perm.BILLING_VIEW)
def transactions(request):
    filters = _ledger_filters(request)
    entries = selectors.ledger_list(org=request.tenant.org, **filters)
    if request.GET.get("format") == "csv":
        return _ledger_csv(entries, request.tenant.org.slug)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "billing/transactions.html", {
        "page": page, "filters": filters, "kinds": LedgerEntry.Kind.choices, "query": query.urlencode(),
    })  # fmt: skip


class _Echo:
    def write(self, value):
        return value


def _ledger_csv(entries, slug: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    header = ["created_at", "kind", "amount_usd", "description", "request_id", "reference", "created_by", "is_debt"]

    def rows():
        yield writer.writerow(header)
        for e in entries.iterator():
            yield writer.writerow([e.created_at.isoformat(), e.kind, f"{nanos_to_usd(e.amount_nanos)}", e.description,
                                   e.request_id, e.reference, e.created_by, e.is_debt])  # fmt: skip

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{slug}-transactions.csv"'
    return response


@tenant_view(Perm.BILLING_VIEW)
def invoices(request):
    return render(request, "billing/invoices.html", {"invoices": selectors.invoice_list(org=request.tenant.org)})


@tenant_view(Perm.BILLING_VIEW)
def invoice_download(request, invoice_id: int, fmt: str):
    try:
        invoice = selectors.invoice_get(org=request.tenant.org, invoice_id=invoice_id)
    except Invoice.DoesNotExist as exc:
        raise Http404("No such invoice") from exc
    if fmt == "pdf":
        response = HttpResponse(bytes(invoice.pdf), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice.number}.pdf"'
        return response
    return HttpResponse(invoice.html)


@staff_member_required
def admin_revenue(request):
    days = int(request.GET.get("days") or 30)
    since = timezone.now() - timedelta(days=days)
    return render(request, "billing/admin_revenue.html", {
        "days": days,
        "by_model": selectors.unscoped_revenue_by_model(since=since),
        "by_org": selectors.unscoped_revenue_by_org(since=since),
    })  # fmt: skip
