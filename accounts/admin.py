"""Django admin for organisations and keys.

Every admin write that can change what the gateway's key cache holds (a key's row, an organisation's
activity, limits or slug, a deletion) publishes the change exactly like accounts.services do
(`keycache.publish_change` after commit): effective in every gateway process within ~1 s with
Redis (issue 12), instead of waiting out RUAPI_KEY_CACHE_TTL. Revocation and (de)activation go
through the services themselves. Membership changes do not touch keys (a KeyContext names no user).
"""

from django.contrib import admin, messages
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse

from accounts import keycache
from accounts.models import ApiKey, Invitation, ManagementKey, Membership, Organization
from accounts.services import apikey_disable, org_set_active


def _publish_after_commit(key_hash: str | None = None) -> None:
    transaction.on_commit(lambda: keycache.publish_change(key_hash))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "rpm_limit", "tpm_limit", "monthly_spend_cap_nanos", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]
    actions = ["deactivate", "activate", "add_credit"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change:  # activity, limits and slug travel in every cached KeyContext of the organisation
            _publish_after_commit()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        _publish_after_commit()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        _publish_after_commit()

    @admin.action(description="Deactivate selected organisations (their API keys stop working)")
    def deactivate(self, request, queryset):
        for org in queryset:
            org_set_active(org=org, is_active=False)
        self.message_user(request, f"Deactivated {queryset.count()} organisation(s).", messages.SUCCESS)

    @admin.action(description="Activate selected organisations")
    def activate(self, request, queryset):
        for org in queryset:
            org_set_active(org=org, is_active=True)
        self.message_user(request, f"Activated {queryset.count()} organisation(s).", messages.SUCCESS)

    @admin.action(description="Add credit to the selected organisation…")
    def add_credit(self, request, queryset):
        orgs = list(queryset[:2])
        if len(orgs) != 1:
            self.message_user(request, "Select exactly one organisation to credit.", messages.ERROR)
            return None
        return redirect(reverse("admin:billing_balance_credit", args=[orgs[0].pk]))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "org", "created_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "org__name"]
    # The hash is not secret-equivalent, but nothing an admin does needs it.
    exclude = ["key_hash"]
    readonly_fields = ["prefix", "org", "created_by", "created_at", "last_used_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # keys are issued through the dashboard / createapikey, which show the secret once

    def has_delete_permission(self, request, obj=None):
        # Revoke instead: usage events name their key, and a request admitted from a process's key
        # cache just before a deletion reached it would fail to record its usage (foreign key).
        return False

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _publish_after_commit(obj.key_hash)  # revoked_at, expiry and limits are all in the cached KeyContext

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request, queryset):
        revoked = 0
        for api_key in queryset.select_related("org"):
            if api_key.revoked_at is None:
                revoked += 1
            apikey_disable(org=api_key.org, api_key=api_key)
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "org", "role", "created_at", "expires_at", "accepted_at", "revoked_at"]
    search_fields = ["email", "org__name"]
    exclude = ["token_hash"]
    readonly_fields = ["org", "invited_by", "accepted_by", "accepted_at"]

    def has_add_permission(self, request):
        return False  # the link's token is only ever in the email; invite from the dashboard or API


@admin.register(ManagementKey)
class ManagementKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "org", "role", "created_at", "last_used_at", "revoked_at"]
    search_fields = ["prefix", "name", "org__name"]
    exclude = ["key_hash"]
    readonly_fields = ["prefix", "org", "created_by", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False
