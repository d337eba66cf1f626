from django.contrib import admin

from accounts.models import ApiKey, Membership, Organization


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "created_at"]
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
