"""The catalog admin and the public pricing pages, through Django's test client (real views and templates)."""

import pytest
from django.urls import reverse

from catalog.models import AuditEntry, Model, Price, Provider, ProviderKey
from catalog.services import catalog_load

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

CATALOG = {
    "providers": [{"name": "up", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-admin-test-4321"}],
    "models": [
        {"name": "pub", "display_name": "Public One", "provider": "up", "input": "1.5", "output": "6",
         "context_window": 128000, "supports_vision": True},
        {"name": "hidden", "visibility": "restricted", "provider": "up", "input": 1, "output": 1},
        {"name": "off", "enabled": False, "provider": "up", "input": 1, "output": 1},
    ],
}  # fmt: skip


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.test", "pw")
    client.force_login(user)
    catalog_load(CATALOG)
    return client


def test_changelists_and_forms_render_without_keys(staff):
    for name in ("catalog_provider_changelist", "catalog_model_changelist", "catalog_auditentry_changelist"):
        response = staff.get(reverse(f"admin:{name}"), {"q": "up"} if "provider" in name else {})
        assert response.status_code == 200, name
        assert b"sk-admin-test-4321" not in response.content
    provider = Provider.objects.get(name="up")
    page = staff.get(reverse("admin:catalog_provider_change", args=[provider.pk]))
    assert page.status_code == 200 and b"sk-admin-test-4321" not in page.content
    assert "…4321".encode() in staff.get(reverse("admin:catalog_provider_changelist")).content
    model = Model.objects.get(name="pub")
    assert staff.get(reverse("admin:catalog_model_change", args=[model.pk])).status_code == 200


def test_provider_form_sets_keys_through_audited_services(staff):
    provider = Provider.objects.get(name="up")
    data = {
        "name": "up", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "", "add_api_key": "sk-extra-5555",
        "api_key_env": "", "extra_headers": "{}", "options": "{}", "is_enabled": "on",
        "keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0", "keys-MIN_NUM_FORMS": "0", "keys-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    response = staff.post(reverse("admin:catalog_provider_change", args=[provider.pk]), data)
    assert response.status_code == 302, response.content[:2000]
    key = ProviderKey.objects.get(provider=provider)
    assert key.key_hint == "…5555" and "sk-extra-5555" not in key.key_encrypted
    entry = AuditEntry.objects.get(action="key.add")
    assert (entry.actor.username, entry.after) == ("admin", {"key": "…5555", "label": ""})


def test_price_inline_adds_a_row_in_usd(staff):
    model = Model.objects.get(name="pub")
    old = model.prices.get()
    data = {
        "name": "pub", "aliases": "[]", "display_name": "Public One", "description": "", "mode": "chat",
        "is_enabled": "on", "context_window": "128000", "max_output_tokens": "", "thinking": "",
        "supports_tools": "on", "supports_vision": "on", "visibility": "public",
        "routes-TOTAL_FORMS": "0", "routes-INITIAL_FORMS": "0", "routes-MIN_NUM_FORMS": "0", "routes-MAX_NUM_FORMS": "1000",
        "prices-TOTAL_FORMS": "1", "prices-INITIAL_FORMS": "0", "prices-MIN_NUM_FORMS": "0", "prices-MAX_NUM_FORMS": "1000",
        "prices-0-effective_from_0": "2020-01-01", "prices-0-effective_from_1": "00:00:00",
        "prices-0-input_usd": "2", "prices-0-output_usd": "8.25", "prices-0-cost_input_usd": "1",
    }  # fmt: skip
    response = staff.post(reverse("admin:catalog_model_change", args=[model.pk]), data)
    assert response.status_code == 302, response.content[:3000]
    new = Price.objects.exclude(pk=old.pk).get(model=model)
    assert (new.input_nanos_per_mtok, new.output_nanos_per_mtok, new.cost_input_nanos_per_mtok) == (
        2_000_000_000, 8_250_000_000, 1_000_000_000)
    old.refresh_from_db()
    assert old.input_nanos_per_mtok == 1_500_000_000  # history untouched
    assert AuditEntry.objects.filter(action="price.set", actor__username="admin").count() == 1


def test_bulk_disable_and_test_connection_record_health(staff):
    url = reverse("admin:catalog_model_changelist")
    pub = Model.objects.get(name="pub")
    response = staff.post(url, {"action": "disable", "_selected_action": [pub.pk]})
    assert response.status_code == 302
    pub.refresh_from_db()
    assert not pub.is_enabled
    provider = Provider.objects.get(name="up")
    staff.post(reverse("admin:catalog_provider_changelist"), {"action": "test_connection", "_selected_action": [provider.pk]})
    provider.refresh_from_db()
    assert provider.health_status == "unhealthy"  # port 9 refuses connections
    assert provider.last_checked_at is not None and "could not be reached" in provider.last_check_error
    assert "sk-admin-test-4321" not in provider.last_check_error


def test_import_and_export(staff):
    export = staff.get(reverse("admin:catalog_export"), {"format": "yaml"})
    assert export.status_code == 200 and b"name: pub" in export.content
    assert b"sk-admin-test-4321" not in export.content
    text = export.content.decode().replace("display_name: Public One", "display_name: Renamed")
    response = staff.post(reverse("admin:catalog_import"), {"text": text})
    assert response.status_code == 302
    assert Model.objects.get(name="pub").display_name == "Renamed"
    bad = staff.post(reverse("admin:catalog_import"), {"text": "providers: [{name: x, kind: nope}]"})
    assert bad.status_code == 200 and b"Import failed" in bad.content
    assert not Provider.objects.filter(name="x").exists()


def test_pricing_pages_show_only_public_enabled_models(client, settings):
    settings.RUAPI_PUBLIC_BASE_URL = "https://api.ruapi.test"
    catalog_load(CATALOG)
    page = client.get("/pricing/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Public One" in html and ">hidden</code>" not in html and ">off</code>" not in html
    assert "$1.5" in html and "$6" in html and "128,000" in html and "vision" in html
    detail = client.get("/pricing/pub/").content.decode()
    assert 'base_url="https://api.ruapi.test/v1"' in detail
    assert 'base_url="https://api.ruapi.test"' in detail and "@anthropic-ai/sdk" in detail and "curl" in detail
    assert client.get("/pricing/hidden/").status_code == 404


def test_pricing_pages_show_server_tool_prices(client):
    catalog_load({
        "providers": [{"name": "anthropic", "kind": "anthropic", "base_url": "https://api.anthropic.com"}],
        "models": [{"name": "searcher", "provider": "anthropic", "upstream_model": "c", "input": 3, "output": 15,
                    "web_search": 10}],
    })  # fmt: skip
    listing = client.get("/pricing/").content.decode()
    assert "Web search / 1K" in listing and "$10</td>" in listing
    detail = client.get("/pricing/searcher/").content.decode()
    assert "$10 per 1,000 requests" in detail
