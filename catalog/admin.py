"""The catalog in Django's admin: thin forms and actions over catalog.services.

Stock admin, not django-unfold: unfold restyles only ModelAdmins that subclass its own classes,
so adopting it means changing every app's admin at once (accounts/, billing/ are other areas).
Keys are write-only here: forms take a new key, lists show its last four characters.
"""

import json
from decimal import Decimal, InvalidOperation

import yaml
from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.money import MoneyError, nanos_to_usd, usd_to_nanos
from catalog import services
from catalog.crypto import decrypt_secret, mask_secret
from catalog.models import AuditEntry, Model, Price, Provider, ProviderKey, Route


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Primary key, stored encrypted. Leave empty to keep the current one.",
    )
    add_api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="Add a rotation key",
        help_text="Another key of the same account or a second account; requests round-robin over all keys.",
    )

    class Meta:
        model = Provider
        fields = [
            "name", "kind", "base_url", "api_key", "add_api_key", "api_key_env", "extra_headers", "options",
            "connect_timeout_s", "read_timeout_s", "is_enabled",
        ]  # fmt: skip


class ProviderKeyInline(admin.TabularInline):
    model = ProviderKey
    extra = 0
    fields = ["label", "key_hint", "is_enabled", "created_at"]
    readonly_fields = ["key_hint", "created_at"]
    verbose_name = "rotation key"

    def has_add_permission(self, request, obj=None):
        return False  # added through the provider form's write-only field (encrypted, audited)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "is_enabled", "health", "last_latency_ms", "last_checked_at",
                    "key_hint"]  # fmt: skip
    list_filter = ["kind", "is_enabled", "health_status"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["health_status", "last_latency_ms", "last_checked_at", "last_check_error"]
    inlines = [ProviderKeyInline]
    actions = ["enable", "disable", "test_connection", "sync_models"]
    change_list_template = "admin/catalog/change_list_with_io.html"

    @admin.display(description="API key")
    def key_hint(self, provider: Provider) -> str:
        primary = mask_secret(decrypt_secret(provider.api_key_encrypted)) if provider.api_key_encrypted else "—"
        extra = provider.keys.count()
        return f"{primary} (+{extra})" if extra else primary

    @admin.display(description="Health", ordering="health_status")
    def health(self, provider: Provider) -> str:
        colour = {"healthy": "#1a7f37", "unhealthy": "#cf222e"}.get(provider.health_status, "#6e7781")
        return format_html('<b style="color:{}">{}</b>', colour, provider.get_health_status_display())

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("api_key"):
            services.provider_set_api_key(provider=obj, api_key=form.cleaned_data["api_key"], actor=request.user)
        if form.cleaned_data.get("add_api_key"):
            services.provider_key_add(provider=obj, api_key=form.cleaned_data["add_api_key"], actor=request.user)
        services.catalog_changed()

    def save_formset(self, request, form, formset, change):
        if formset.model is not ProviderKey:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)
        for key in formset.deleted_objects:
            services.provider_key_remove(key=key, actor=request.user)
        for key, _ in formset.changed_objects:
            key.save(update_fields=["label", "is_enabled"])
        services.catalog_changed()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        services.catalog_changed()

    @admin.action(description="Enable selected providers")
    def enable(self, request, queryset):
        count = services.providers_set_enabled(providers=queryset, enabled=True, actor=request.user)
        self.message_user(request, f"{count} provider(s) enabled.")

    @admin.action(description="Disable selected providers")
    def disable(self, request, queryset):
        count = services.providers_set_enabled(providers=queryset, enabled=False, actor=request.user)
        self.message_user(request, f"{count} provider(s) disabled.")

    @admin.action(description="Test connection (lists the provider's models)")
    def test_connection(self, request, queryset):
        for provider in queryset:
            result = services.provider_test_connection(provider=provider)
            if result.ok:
                self.message_user(request, f"{provider}: healthy, {result.latency_ms} ms, "
                                           f"{len(result.model_ids)} models.")  # fmt: skip
            else:
                self.message_user(request, f"{provider}: {result.error}", level=messages.ERROR)

    @admin.action(description="Sync models from the provider…")
    def sync_models(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one provider to sync.", level=messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:catalog_provider_sync", args=[queryset.get().pk]))

    def get_urls(self):
        urls = [
            path("<int:pk>/sync/", self.admin_site.admin_view(self.sync_view), name="catalog_provider_sync"),
            path("import/", self.admin_site.admin_view(self.import_view), name="catalog_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="catalog_export"),
        ]
        return urls + super().get_urls()

    def sync_view(self, request, pk: int):
        """GET: the provider's models not yet routed to it; POST: add the ticked ones (disabled, unpriced)."""
        provider = get_object_or_404(Provider, pk=pk)
        if not self.has_change_permission(request, provider):
            return HttpResponseRedirect(reverse("admin:index"))
        if request.method == "POST":
            chosen = request.POST.getlist("model")
            result = services.models_add_from_upstream(provider=provider, upstream_ids=chosen, actor=request.user)
            self.message_user(request, f"Added {len(result.created)} model(s), routed {len(result.routed)} existing "
                                       "one(s). New models start disabled: set prices, then enable them.")  # fmt: skip
            return HttpResponseRedirect(reverse("admin:catalog_model_changelist"))
        result = services.provider_test_connection(provider=provider)
        routed = set(provider.routes.values_list("upstream_model", flat=True))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Sync models from {provider}",
            "provider": provider,
            "result": result,
            "candidates": [model_id for model_id in result.model_ids if model_id not in routed],
            "routed": sorted(routed),
            "opts": self.model._meta,
        }
        return render(request, "admin/catalog/sync_models.html", context)

    def import_view(self, request):
        """Paste or upload a catalog in the loadcatalog format (YAML or JSON); loaded by catalog_load."""
        if not self.has_change_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        text = ""
        if request.method == "POST":
            upload = request.FILES.get("file")
            text = upload.read().decode("utf-8", "replace") if upload else request.POST.get("text", "")
            try:
                data = yaml.safe_load(text)  # JSON is YAML too
                result = services.catalog_load(data, actor=request.user)
            except (yaml.YAMLError, services.CatalogError) as exc:
                self.message_user(request, f"Import failed, nothing changed: {exc}", level=messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Imported: providers {len(result.providers_created)} new, {len(result.providers_updated)} "
                    f"updated; models {len(result.models_created)} new, {len(result.models_updated)} updated; "
                    f"prices changed {len(result.prices_changed)}.",
                )
                return HttpResponseRedirect(reverse("admin:catalog_model_changelist"))
        context = {**self.admin_site.each_context(request), "title": "Import catalog", "text": text,
                   "opts": self.model._meta}  # fmt: skip
        return render(request, "admin/catalog/import.html", context)

    def export_view(self, request):
        """The catalog as a download (no secrets: keys never leave through the admin)."""
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        data = services.catalog_dump(include_secrets=False)
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        if request.GET.get("format") == "json":
            response = HttpResponse(json.dumps(data, indent=2, ensure_ascii=False), content_type="application/json")
            response["Content-Disposition"] = f'attachment; filename="catalog-{stamp}.json"'
        else:
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
            response = HttpResponse(text, content_type="application/yaml")
            response["Content-Disposition"] = f'attachment; filename="catalog-{stamp}.yaml"'
        return response


class RouteInline(admin.TabularInline):
    model = Route
    extra = 0
    fields = ["provider", "upstream_model", "priority", "weight", "max_concurrency", "rpm_limit", "is_enabled"]
    autocomplete_fields = ["provider"]


USD_PRICE_FIELDS = {
    "input_usd": "input_nanos_per_mtok",
    "output_usd": "output_nanos_per_mtok",
    "cache_read_usd": "cache_read_nanos_per_mtok",
    "cache_write_usd": "cache_write_nanos_per_mtok",
    "image_usd": "image_nanos",
    "audio_minute_usd": "audio_minute_nanos",
    "characters_usd": "character_nanos_per_mchar",
    "web_search_usd": "web_search_nanos_per_kreq",
    "web_fetch_usd": "web_fetch_nanos_per_kreq",
    "cost_input_usd": "cost_input_nanos_per_mtok",
    "cost_output_usd": "cost_output_nanos_per_mtok",
    "cost_cache_read_usd": "cost_cache_read_nanos_per_mtok",
    "cost_cache_write_usd": "cost_cache_write_nanos_per_mtok",
}


def _usd_field(name: str) -> forms.DecimalField:
    label = name.removesuffix("_usd").replace("_", " ")
    return forms.DecimalField(required=False, min_value=Decimal(0), decimal_places=9, max_digits=20, label=label)


class PriceForm(forms.ModelForm):
    """A new price row in USD (per 1M tokens; per image / audio minute / 1M characters; per 1,000 web searches
    or web fetches)."""

    locals().update({name: _usd_field(name) for name in USD_PRICE_FIELDS})

    class Meta:
        model = Price
        fields = ["effective_from"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            for name, field_name in USD_PRICE_FIELDS.items():
                self.initial[name] = f"{nanos_to_usd(getattr(self.instance, field_name)).normalize():f}"

    def nanos(self) -> dict[str, int]:
        values = {}
        for name, field_name in USD_PRICE_FIELDS.items():
            value = self.cleaned_data.get(name)
            if value:
                try:
                    values[field_name] = usd_to_nanos(value)
                except (MoneyError, InvalidOperation) as exc:
                    raise forms.ValidationError({name: str(exc)}) from exc
        return values


def _usd_display(field_name: str, label: str):
    """A read-only column of a saved price row: the price in USD, e.g. "2.5"."""

    def display(self, price: Price) -> str:
        return f"{nanos_to_usd(getattr(price, field_name)).normalize():f}"

    display.short_description = label
    return display


class PriceInline(admin.TabularInline):
    model = Price
    form = PriceForm
    extra = 0
    fields = ["effective_from", *USD_PRICE_FIELDS]
    ordering = ["-effective_from"]
    verbose_name = "price (USD)"
    verbose_name_plural = "prices (USD; history is append-only: add a row to change a price)"

    def has_change_permission(self, request, obj=None):
        return False  # rows are history: usage points at the row it was billed with

    # The saved rows are shown read-only, by these names (the form's USD fields exist only on new rows).
    locals().update({name: _usd_display(field_name, name.removesuffix("_usd").replace("_", " "))
                     for name, field_name in USD_PRICE_FIELDS.items()})  # fmt: skip

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "mode", "is_enabled", "visibility", "price", "providers"]
    list_filter = ["is_enabled", "mode", "visibility", "thinking", "supports_tools", "supports_vision",
                   "routes__provider"]  # fmt: skip
    search_fields = ["name", "display_name", "description", "aliases"]
    filter_horizontal = ["organizations"]
    inlines = [RouteInline, PriceInline]
    actions = ["enable", "disable"]
    change_list_template = "admin/catalog/change_list_with_io.html"
    fieldsets = [
        (None, {"fields": ["name", "aliases", "display_name", "description", "mode", "is_enabled"]}),
        ("Limits and capabilities", {"fields": [
            "context_window", "max_output_tokens", "thinking", "supports_tools", "supports_vision",
            "structured_output", "supports_audio", "supports_images"]}),
        ("Protocol flags", {"fields": ["options"], "description": (
            "JSON: mid_conv_system (an Anthropic upstream takes mid-conversation system messages), auto_cache "
            "(prompt-cache breakpoints for converted requests), reasoning_efforts (list of accepted words).")}),
        ("Visibility", {"fields": ["visibility", "organizations"]}),
    ]  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("prices", "routes__provider").distinct()

    @admin.display(description="Price in / out (USD per 1M)")
    def price(self, model: Model) -> str:
        now = timezone.now()
        current = max((p for p in model.prices.all() if p.effective_from <= now),
                      key=lambda p: (p.effective_from, p.id), default=None)  # fmt: skip
        if current is None:
            return "—"
        return f"{nanos_to_usd(current.input_nanos_per_mtok).normalize():f} / " \
               f"{nanos_to_usd(current.output_nanos_per_mtok).normalize():f}"  # fmt: skip

    @admin.display(description="Providers")
    def providers(self, model: Model) -> str:
        return ", ".join(route.provider.name for route in model.routes.all())

    def save_model(self, request, obj, form, change):
        if change and "is_enabled" in form.changed_data:
            wanted = obj.is_enabled
            obj.is_enabled = not wanted
            super().save_model(request, obj, form, change)
            services.models_set_enabled(models=[obj], enabled=wanted, actor=request.user)
        else:
            super().save_model(request, obj, form, change)
        services.catalog_changed()

    def save_formset(self, request, form, formset, change):
        if formset.model is not Price:
            super().save_formset(request, form, formset, change)
            services.catalog_changed()
            return
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []  # for the change message
        for price_form in formset.forms:
            if price_form.instance.pk or not price_form.has_changed():
                continue
            formset.new_objects.append(price_form.instance)
            services.price_set(
                model=form.instance,
                nanos=price_form.nanos(),
                effective_from=price_form.cleaned_data.get("effective_from"),
                actor=request.user,
            )

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        services.catalog_changed()

    @admin.action(description="Enable selected models")
    def enable(self, request, queryset):
        count = services.models_set_enabled(models=queryset, enabled=True, actor=request.user)
        self.message_user(request, f"{count} model(s) enabled.")

    @admin.action(description="Disable selected models")
    def disable(self, request, queryset):
        count = services.models_set_enabled(models=queryset, enabled=False, actor=request.user)
        self.message_user(request, f"{count} model(s) disabled.")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "target_type", "target_repr", "before", "after"]
    list_filter = ["action", "target_type"]
    search_fields = ["actor_label", "target_repr", "action"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
