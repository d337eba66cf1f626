"""Issue 16's page fixes, checked on the rendered HTML: the landing page's links, the public model
pages' snippets per model type, the revenue page's provider cost, the sidebar, the sign-up e-mail,
the API docs served without a CDN, money to cents in the dashboard."""

import re

import pytest
from django.core import mail
from django.urls import reverse

from billing.models import UsageEvent
from billing.money import usd_to_nanos
from billing.tests.factories import org_with

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

CATALOG = {
    "providers": [{"name": "echo", "kind": "echo"}],
    "models": [
        {"name": "chat-m", "provider": "echo", "upstream_model": "echo-1", "input": "3", "output": "15",
         "cost": {"input": "1", "output": "5"}, "context_window": 200000, "max_output_tokens": 8192},
        {"name": "embed-m", "mode": "embedding", "provider": "echo", "upstream_model": "e", "input": "0.02",
         "output": 0},
        {"name": "image-m", "mode": "image", "provider": "echo", "upstream_model": "i", "input": 0, "output": 0,
         "image": "0.04"},
        {"name": "speech-m", "mode": "speech", "provider": "echo", "upstream_model": "s", "input": 0, "output": 0,
         "characters": "15"},
        {"name": "whisper-m", "mode": "transcription", "provider": "echo", "upstream_model": "w", "input": 0,
         "output": 0, "audio_minute": "0.006"},
    ],
}  # fmt: skip


@pytest.fixture
def catalog():
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate

    catalog_load(CATALOG)
    catalog_invalidate()


def _text(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    ("model", "endpoint", "absent"),
    [
        ("chat-m", "/v1/chat/completions", "/v1/embeddings"),
        ("embed-m", "/v1/embeddings", "/v1/chat/completions"),
        ("image-m", "/v1/images/generations", "/v1/chat/completions"),
        ("speech-m", "/v1/audio/speech", "/v1/chat/completions"),
        ("whisper-m", "/v1/audio/transcriptions", "/v1/chat/completions"),
    ],
)
def test_model_page_shows_its_endpoint_with_the_request_host(client, catalog, model, endpoint, absent):
    body = _text(client.get(reverse("pricing:model", kwargs={"name": model})))
    assert f"curl http://testserver{endpoint}" in body
    assert absent not in body
    assert 'base_url="/v1"' not in body and 'base_url=""' not in body and "curl /v1" not in body
    assert "— tokens" not in body and "Audio_minute" not in body
    assert ("/v1/messages" in body) == (model == "chat-m")  # the Anthropic SDK only for chat models


def test_model_page_labels_and_base_url_setting(client, catalog, settings):
    settings.RUAPI_PUBLIC_BASE_URL = "https://api.example.test/"
    chat = _text(client.get(reverse("pricing:model", kwargs={"name": "chat-m"})))
    assert 'OpenAI(base_url="https://api.example.test/v1"' in chat
    assert 'Anthropic(base_url="https://api.example.test"' in chat
    assert "200,000 tokens" in chat and "8,192 tokens" in chat
    whisper = _text(client.get(reverse("pricing:model", kwargs={"name": "whisper-m"})))
    assert re.search(r"<th>Audio</th><td>\$0\.006 per minute</td>", whisper)
    assert "Context window" not in whisper and "per 1M tokens" not in whisper
    speech = _text(client.get(reverse("pricing:model", kwargs={"name": "speech-m"})))
    assert re.search(r"<th>Speech input</th><td>\$15 per 1M characters</td>", speech)
    assert "200,000" in _text(client.get(reverse("pricing:list")))


def test_revenue_page_shows_provider_cost_from_the_catalog(client, catalog, django_user_model):
    from catalog.models import Price

    price = Price.objects.get(model__name="chat-m")
    org = org_with("Acme")
    UsageEvent.objects.create(request_id="req_1", org=org, endpoint="chat.completions", model="chat-m",
                              client_protocol="openai", status_code=200, input_tokens=1_000_000,
                              output_tokens=200_000, price=price, cost_nanos=usd_to_nanos("6"))  # fmt: skip
    staff = django_user_model.objects.create_user("ops", "ops@example.test", "pw", is_staff=True)
    client.force_login(staff)
    body = _text(client.get(reverse("billing:admin_revenue")))
    assert "not recorded yet" not in body
    # cost: 1M input at $1 + 0.2M output at $5 = $2.00; margin $6 - $2 = $4.00
    row = re.search(r"<tr><td>chat-m</td>.*?</tr>", body).group(0)
    assert re.findall(r'title="([^"]+)">', row) == ["6.00", "2.00", "4.00"]


def test_sidebar_highlights_only_the_current_section(client):
    org_with("Acme", usd="7", owner_email="owner@acme.test")
    client.login(username="owner@acme.test", password="pw-123456")
    for url, current in (("/billing/", "Billing"), ("/billing/settings/", "Billing"), ("/dashboard/", "Overview"),
                         ("/dashboard/settings/", "Settings")):
        body = _text(client.get(url))
        sidebar = re.search(r'<nav id="sidebar".*?</nav>', body, re.S).group(0)
        assert re.findall(r'aria-current="page">([^<]+)<', sidebar) == [current], url


def test_dashboard_money_is_shown_to_cents_with_the_exact_amount_on_hover(client):
    from billing.services import balance_adjust

    org = org_with("Acme", usd="10", owner_email="owner@acme.test")
    balance_adjust(org_id=org.id, amount_nanos=-157_560, reason="usage", actor="ops")
    client.login(username="owner@acme.test", password="pw-123456")
    body = _text(client.get("/dashboard/"))
    assert '<span class="money" title="9.99984244">$9.99</span>' in body
    assert "$9.99984244" not in body


def test_signup_email_names_the_product_not_the_host_or_a_username(client):
    response = client.post(reverse("account_signup"), {"email": "new@example.test", "password1": "Correct-Horse-42",
                                                       "password2": "Correct-Horse-42"})  # fmt: skip
    assert response.status_code == 302
    [message] = mail.outbox
    assert message.subject == "[RuAPI] Please Confirm Your Email Address"
    assert "testserver" not in message.body.split("http://testserver/accounts/confirm-email/")[0]
    assert "Hello from" not in message.body and "new@example.test" in message.body
    from django.contrib.auth import get_user_model

    username = get_user_model().objects.get(email="new@example.test").username
    assert username not in message.body.replace("new@example.test", "")
    assert "— RuAPI" in message.body


def test_api_docs_load_swagger_ui_from_this_server(client):
    body = _text(client.get(reverse("swagger-ui")))
    assert "cdn.jsdelivr.net" not in body and "unpkg.com" not in body
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in body


def test_favicon_is_served(client):
    body = _text(client.get(reverse("pricing:list")))
    assert '<link rel="icon" href="/static/favicon.svg"' in body
    assert client.get("/favicon.ico").status_code in (301, 302)


def test_admin_model_page_shows_the_saved_prices(client, catalog, django_user_model):
    from catalog.models import Model

    admin = django_user_model.objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(admin)
    model = Model.objects.get(name="chat-m")
    body = _text(client.get(reverse("admin:catalog_model_change", args=[model.pk])))
    section = re.sub(r"\s+", " ", body[body.lower().index("prices (usd"):])
    rows = section[:section.index("</tbody>")]
    assert "None" not in rows
    cells = re.findall(r'<td class="field-(input_usd|output_usd|cost_input_usd)"> <p>([^<]*)</p>', rows)
    assert cells == [("input_usd", "3"), ("output_usd", "15"), ("cost_input_usd", "1")]
    assert 'href="/static/css/admin.css"' in body
