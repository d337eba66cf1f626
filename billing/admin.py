"""Billing in the Django admin. Money rows change only through billing.services; the admin shows them
to the cent (exact amount on hover, billing.templatetags.money) and its forms and actions call services:
"Add credit" (credit_add), redemption codes (creditcode_issue), postpaid profiles (postpaid_configure),
Stripe events (stripe_event_process) and flagged payments (payment_mark_reviewed).
"""

import csv
import io
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import F
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.models import Organization
from billing.models import (
    Balance,
    BillingProfile,
    CreditCode,
    CreditCodeRedemption,
    Hold,
    LedgerEntry,
    Payment,
    StripeEvent,
    UsageEvent,
)
from billing.money import MoneyError, format_usd, usd_to_nanos
from billing.services import BillingError, balance_get, profile_get, stripe_event_process
from billing.services import credits as credit_services
from billing.services.payments import payment_mark_reviewed
from billing.templatetags.money import usd_plain_text, usd_span_html


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows change only through billing.services; the admin shows them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _money(field: str, label: str):
    def column(self, obj):
        return usd_span_html(getattr(obj, field))

    column.short_description = label
    column.admin_order_field = field
    return column


def _actor(request) -> str:
    return request.user.get_username() or f"user {request.user.pk}"


class UsdField(forms.DecimalField):
    """A USD amount (up to 9 decimals) cleaned to nano-USD."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=18, decimal_places=9, **kwargs)

    def clean(self, value):
        value = super().clean(value)
        if value is None:
            return None
        try:
            return usd_to_nanos(value)
        except MoneyError as exc:
            raise forms.ValidationError(str(exc)) from exc


# --- balances and operator credit -----------------------------------------------------------


class CreditForm(forms.Form):
    amount = UsdField(label="Amount (USD)", help_text="Credit to add. A negative amount (adjustment only) debits.")
    kind = forms.ChoiceField(
        choices=[("adjustment", "Manual adjustment"), ("promo", "Promotional credit (may expire)")],
        initial="adjustment",
    )
    expires_at = forms.DateTimeField(
        required=False, label="Expires (promotional credit only)", help_text="YYYY-MM-DD HH:MM, UTC. Optional."
    )
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}), help_text="Required.")

    def clean(self):
        data = super().clean()
        if data.get("amount") == 0:
            self.add_error("amount", "The amount must not be zero.")
        if data.get("kind") == "promo" and (data.get("amount") or 0) < 0:
            self.add_error("amount", "Promotional credit is positive.")
        if data.get("expires_at") and data.get("kind") != "promo":
            self.add_error("expires_at", "Only promotional credit expires.")
        return data


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ["org", "balance", "held", "credit_limit", "updated_at", "credit_link"]
    search_fields = ["org__name", "org__slug"]
    balance = _money("balance_nanos", "Balance")
    held = _money("held_nanos", "Held")
    credit_limit = _money("credit_limit_nanos", "Credit limit")

    @admin.display(description="")
    def credit_link(self, obj):
        return format_html('<a href="{}">Add credit</a>', reverse("admin:billing_balance_credit", args=[obj.org_id]))

    def get_urls(self):
        urls = [
            path("<int:org_id>/credit/", self.admin_site.admin_view(self.credit_view), name="billing_balance_credit"),
        ]
        return urls + super().get_urls()

    def credit_view(self, request, org_id: int):
        """GET: the form; POST: credit_add (ledger entry with actor and reason, audit entry)."""
        if not request.user.has_perm("billing.add_ledgerentry") and not request.user.is_superuser:
            return HttpResponseRedirect(reverse("admin:index"))
        org = get_object_or_404(Organization, pk=org_id)
        form = CreditForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                entry = credit_services.credit_add(
                    org=org, amount_nanos=data["amount"], reason=data["reason"], actor=request.user,
                    promo=data["kind"] == "promo", expires_at=data["expires_at"],
                )  # fmt: skip
            except BillingError as exc:
                form.add_error(None, str(exc))
            else:
                balance = balance_get(org_id=org.id).balance_nanos
                kind = entry.get_kind_display()
                self.message_user(
                    request,
                    f"Credited {usd_plain_text(entry.amount_nanos)} USD to {org} ({kind}). "
                    f"Balance now {format_usd(balance)} USD.",
                )
                return HttpResponseRedirect(
                    reverse("admin:billing_ledgerentry_changelist") + f"?org__id__exact={org.pk}"
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Add credit to {org}",
            "org": org,
            "form": form,
            "balance": balance_get(org_id=org.id),
            "opts": self.model._meta,
        }
        return render(request, "admin/billing/credit.html", context)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "org", "kind", "amount", "request_id", "description", "created_by", "is_debt"]
    list_filter = ["kind", "is_debt"]
    search_fields = ["org__name", "request_id", "reference", "description"]
    amount = _money("amount_nanos", "Amount")


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["request_id", "org", "amount", "status", "expires_at"]
    list_filter = ["status"]
    amount = _money("amount_nanos", "Amount")


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "org", "model", "provider", "status_code", "input_tokens", "output_tokens",
                    "cost", "latency_ms"]  # fmt: skip
    list_filter = ["status_code", "endpoint", "is_stream"]
    search_fields = ["request_id", "model", "org__name"]
    cost = _money("cost_nanos", "Cost")


# --- Stripe ---------------------------------------------------------------------------------


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "org", "purpose", "status", "amount", "refunded", "needs_review",
                    "checkout_session_id", "payment_intent_id"]  # fmt: skip
    list_filter = ["needs_review", "status", "purpose"]
    search_fields = ["org__name", "checkout_session_id", "payment_intent_id", "stripe_invoice_id"]
    amount = _money("amount_nanos", "Amount")
    refunded = _money("refunded_nanos", "Refunded")
    actions = ["mark_reviewed"]

    @admin.action(description="Mark selected payments as reviewed (keeps the reasons)")
    def mark_reviewed(self, request, queryset):
        for payment in queryset.filter(needs_review=True):
            payment_mark_reviewed(payment_id=payment.pk, actor=_actor(request))
        self.message_user(request, "Marked as reviewed.")


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "status", "attempts", "deliveries", "received_at", "processed_at", "short_error"]
    list_filter = ["status", "type"]
    search_fields = ["id", "type"]
    readonly_fields = ["id", "type", "status", "attempts", "deliveries", "received_at", "processed_at", "error",
                       "payload"]  # fmt: skip
    actions = ["retry"]

    @admin.display(description="Error")
    def short_error(self, obj):
        return (obj.error.splitlines() or [""])[0][:120]

    @admin.action(description="Retry selected events (received or failed ones)")
    def retry(self, request, queryset):
        results = [stripe_event_process(event_id=event_id) for event_id in queryset.values_list("pk", flat=True)]
        summary = ", ".join(f"{results.count(s)} {s}" for s in sorted(set(results)))
        self.message_user(request, f"Processed: {summary}." if results else "Nothing selected.")


class BillingProfileForm(forms.ModelForm):
    credit_limit = UsdField(
        label="Credit limit (USD)", required=False, min_value=Decimal(0),
        help_text="Postpaid only: how far below zero the organisation may spend before requests get 402.",
    )  # fmt: skip

    class Meta:
        model = BillingProfile
        fields = ["org", "is_postpaid", "needs_review", "review_reason"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            limit = Balance.objects.filter(org_id=self.instance.pk).values_list("credit_limit_nanos", flat=True).first()
            self.initial["credit_limit"] = usd_plain_text(limit or 0)
            self.fields["org"].disabled = True

    def clean(self):
        data = super().clean()
        if (data.get("credit_limit") or 0) and not data.get("is_postpaid"):
            self.add_error("credit_limit", "Only postpaid organisations have a credit limit.")
        return data


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    form = BillingProfileForm
    list_display = ["org", "is_postpaid", "credit_limit", "auto_recharge_enabled", "card", "alert_state",
                    "needs_review", "updated_at"]  # fmt: skip
    list_filter = ["is_postpaid", "needs_review", "auto_recharge_enabled"]
    search_fields = ["org__name", "stripe_customer_id"]
    readonly_fields = ["stripe_customer_id", "card", "auto_recharge_enabled", "auto_recharge_threshold_nanos",
                       "auto_recharge_amount_nanos", "auto_recharge_daily_cap_nanos", "auto_recharge_error",
                       "auto_recharge_failed_at", "notify_low_balance", "low_balance_threshold_nanos", "alert_state",
                       "updated_at"]  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(credit_limit_nanos=F("org__balance__credit_limit_nanos"))

    @admin.display(description="Credit limit", ordering="credit_limit_nanos")
    def credit_limit(self, obj):
        return usd_span_html(getattr(obj, "credit_limit_nanos", None) or 0)

    @admin.display(description="Card")
    def card(self, obj):
        return f"{obj.card_brand} …{obj.card_last4}" if obj.has_card else "—"

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # is_postpaid and the credit limit go through the service (the limit lives on the balance row).
        profile_get(org_id=obj.org_id)
        BillingProfile.objects.filter(pk=obj.org_id).update(
            needs_review=obj.needs_review, review_reason=obj.review_reason
        )
        limit = form.cleaned_data.get("credit_limit") or 0
        credit_services.postpaid_configure(
            org_id=obj.org_id, is_postpaid=obj.is_postpaid, credit_limit_nanos=limit, actor=request.user
        )
        obj.refresh_from_db()


# --- redemption codes -----------------------------------------------------------------------


class GenerateCodesForm(forms.Form):
    count = forms.IntegerField(min_value=1, max_value=credit_services.MAX_CODES_PER_BATCH, initial=1)
    amount = UsdField(label="Credit per redemption (USD)", min_value=Decimal("0.01"))
    max_redemptions = forms.IntegerField(min_value=1, initial=1, help_text="1: single use. Per code.")
    per_org_limit = forms.IntegerField(min_value=1, initial=1, label="Redemptions per organisation")
    expires_at = forms.DateTimeField(required=False, help_text="YYYY-MM-DD HH:MM, UTC. Optional.")
    note = forms.CharField(max_length=200, required=False, help_text="Campaign or batch; staff only.")
    code = forms.CharField(
        max_length=64, required=False, label="Chosen code (optional)",
        help_text=f"Only with a count of 1; at least {credit_services.CUSTOM_CODE_MIN_CHARS} letters or digits. "
                  "Random codes are safer.",
    )  # fmt: skip


def _codes_csv(issued) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["code", "amount_usd", "max_redemptions", "per_org_limit", "expires_at", "note"])
    for item in issued:
        code = item.credit_code
        writer.writerow([item.code, format_usd(code.amount_nanos), code.max_redemptions, code.per_org_limit,
                         code.expires_at.isoformat() if code.expires_at else "", code.note])  # fmt: skip
    return out.getvalue()


class RedemptionInline(admin.TabularInline):
    model = CreditCodeRedemption
    extra = 0
    can_delete = False
    fields = ["created_at", "org", "user", "n", "number", "entry"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CreditCode)
class CreditCodeAdmin(admin.ModelAdmin):
    """Codes are generated by "Generate codes" (shown once, with a CSV); afterwards only their state and
    note change. Stored as SHA-256 only (billing.models.CreditCode)."""

    list_display = ["prefix", "note", "amount", "usage", "per_org_limit", "expires_at", "is_active", "created_by",
                    "created_at"]  # fmt: skip
    list_filter = ["is_active", "note"]
    search_fields = ["prefix", "note"]
    fields = ["prefix", "note", "amount", "max_redemptions", "remaining", "per_org_limit", "expires_at",
              "is_active", "created_by", "created_at"]  # fmt: skip
    readonly_fields = ["prefix", "amount", "max_redemptions", "remaining", "per_org_limit", "created_by",
                       "created_at"]  # fmt: skip
    inlines = [RedemptionInline]
    actions = ["deactivate", "export_csv"]
    amount = _money("amount_nanos", "Amount")

    @admin.display(description="Used / max")
    def usage(self, obj):
        return f"{obj.used} / {obj.max_redemptions}"

    def has_delete_permission(self, request, obj=None):
        return False  # redemptions point at it; deactivate instead

    def get_urls(self):
        urls = [
            path("generate/", self.admin_site.admin_view(self.generate_view), name="billing_creditcode_generate"),
        ]
        return urls + super().get_urls()

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:billing_creditcode_generate"))

    def generate_view(self, request):
        """GET: the form; POST: creditcode_issue, then the codes once, on screen and as a CSV download."""
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = GenerateCodesForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                issued = credit_services.creditcode_issue(
                    amount_nanos=data["amount"], count=data["count"], max_redemptions=data["max_redemptions"],
                    per_org_limit=data["per_org_limit"], expires_at=data["expires_at"], note=data["note"],
                    created_by=request.user, code=data["code"] or None,
                )  # fmt: skip
            except BillingError as exc:
                form.add_error(None, str(exc))
            else:
                if request.POST.get("format") == "csv":
                    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
                    response = HttpResponse(_codes_csv(issued), content_type="text/csv")
                    response["Content-Disposition"] = f'attachment; filename="credit-codes-{stamp}.csv"'
                    response["Cache-Control"] = "no-store"
                    return response
                context = {
                    **self.admin_site.each_context(request),
                    "title": f"{len(issued)} code(s) generated",
                    "issued": issued,
                    "csv": _codes_csv(issued),
                    "opts": self.model._meta,
                }
                response = render(request, "admin/billing/codes_issued.html", context)
                response["Cache-Control"] = "no-store"
                return response
        context = {**self.admin_site.each_context(request), "title": "Generate redemption codes", "form": form,
                   "opts": self.model._meta}  # fmt: skip
        return render(request, "admin/billing/generate_codes.html", context)

    @admin.action(description="Deactivate selected codes")
    def deactivate(self, request, queryset):
        count = queryset.update(is_active=False)
        self.message_user(request, f"Deactivated {count} code(s).", messages.SUCCESS)

    @admin.action(description="Export selected codes' usage as CSV (no codes: they are not stored)")
    def export_csv(self, request, queryset):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["prefix", "note", "amount_usd", "used", "max_redemptions", "per_org_limit", "expires_at",
                         "is_active", "created_at"])  # fmt: skip
        for code in queryset:
            writer.writerow([code.prefix, code.note, format_usd(code.amount_nanos), code.used, code.max_redemptions,
                             code.per_org_limit, code.expires_at.isoformat() if code.expires_at else "",
                             code.is_active, code.created_at.isoformat()])  # fmt: skip
        response = HttpResponse(out.getvalue(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="credit-code-usage.csv"'
        return response


@admin.register(CreditCodeRedemption)
class CreditCodeRedemptionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "code", "org", "user", "n", "number", "amount"]
    list_filter = ["code__note"]
    search_fields = ["code__prefix", "org__name"]

    @admin.display(description="Credited")
    def amount(self, obj):
        return usd_span_html(obj.entry.amount_nanos)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("code", "org", "user", "entry")
