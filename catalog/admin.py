from django import forms
from django.contrib import admin

from catalog.crypto import decrypt_secret, encrypt_secret, mask_secret
from catalog.models import Model, Price, Provider, Route


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted. Leave empty to keep the current key.",
    )

    class Meta:
        model = Provider
        fields = [
            "name", "kind", "base_url", "api_key", "api_key_env", "extra_headers", "options",
            "connect_timeout_s", "read_timeout_s", "is_enabled",
        ]  # fmt: skip

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("api_key"):
            provider.api_key_encrypted = encrypt_secret(self.cleaned_data["api_key"])
        if commit:
            provider.save()
        return provider


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "is_enabled", "key_hint"]
    list_filter = ["kind", "is_enabled"]
    search_fields = ["name", "base_url"]

    @admin.display(description="API key")
    def key_hint(self, provider: Provider) -> str:
        return mask_secret(decrypt_secret(provider.api_key_encrypted)) if provider.api_key_encrypted else "—"


class RouteInline(admin.TabularInline):
    model = Route
    extra = 0


class PriceInline(admin.TabularInline):
    model = Price
    extra = 0
    readonly_fields = ["created_at"]

    def has_change_permission(self, request, obj=None):
        return False  # price history is append-only


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "mode", "is_enabled"]
    list_filter = ["mode", "is_enabled", "thinking"]
    search_fields = ["name", "display_name"]
    inlines = [RouteInline, PriceInline]
