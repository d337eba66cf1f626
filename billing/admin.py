from django.contrib import admin

from billing.models import Balance, Hold, LedgerEntry, UsageEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows change only through billing.services; the admin shows them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ["org", "balance_nanos", "held_nanos", "updated_at"]
    search_fields = ["org__name"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "org", "kind", "amount_nanos", "request_id", "description"]
    list_filter = ["kind"]
    search_fields = ["org__name", "request_id"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["request_id", "org", "amount_nanos", "status", "expires_at"]
    list_filter = ["status"]


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "org", "model", "provider", "status_code", "input_tokens", "output_tokens",
                    "cost_nanos", "latency_ms"]  # fmt: skip
    list_filter = ["status_code", "endpoint", "is_stream"]
    search_fields = ["request_id", "model", "org__name"]
