from django.contrib import admin

from accounts.models import ApiKey, Invitation, ManagementKey, Membership, Organization


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


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "org", "created_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "org__name"]
    # The hash is not secret-equivalent, but nothing an admin does needs it.
    exclude = ["key_hash"]
    readonly_fields = ["prefix", "org", "created_by", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False  # keys are issued through the dashboard / createapikey, which show the secret once


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
