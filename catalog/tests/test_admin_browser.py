"""Issue 3's admin path in a real browser (Playwright driving Debian's Chromium, never a download):
log in to the admin, add a provider with its key, sync its models and add one, price it through the
price inline, enable it, call it within seconds through both SDKs, disable it, see both protocols
answer 404 in their own shape. The provider key never shows up in an admin page."""

import re
import time

import anthropic
import openai
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.embedded, pytest.mark.browser]

MODEL = "gpt-4.1"  # one of the ids the mock upstream lists on GET /v1/models, not in the gateway fixture's catalog
PROVIDER = "browser-openai"
PASSWORD = "Admin-Browser-Pass-42"
WITHIN_S = 5.0  # "within seconds"



def _eventually(call, *, within: float = WITHIN_S):
    """Call until it returns without raising; the last exception propagates after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _chat_openai(client: openai.OpenAI) -> str:
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi from openai"}])
    return reply.choices[0].message.content


def _chat_anthropic(client: anthropic.Anthropic) -> str:
    reply = client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    return "".join(block.text for block in reply.content if block.type == "text")


def _expect_not_found(call, error: type[Exception]) -> Exception:
    """`call` raises `error` (possibly after a few seconds of propagation); return the exception."""

    def attempt():
        try:
            call()
        except error as exc:
            return exc
        raise AssertionError(f"the call still succeeded instead of raising {error.__name__}")

    return _eventually(attempt)


def test_admin_adds_prices_enables_and_disables_a_model(gateway, page, django_user_model):
    from catalog.models import Model, Price, Provider

    base = gateway.server.url
    key = gateway.mock.api_key
    django_user_model.objects.create_superuser("catalog-admin", "catalog-admin@example.test", PASSWORD)
    html_after_save: dict[str, str] = {}

    def remember(label: str) -> None:
        html_after_save[label] = page.content()

    # log in through the admin's own login page
    page.goto(base + "/admin/")
    page.wait_for_url(re.compile(r".*/admin/login/\?next=/admin/$"))
    page.fill("input[name=username]", "catalog-admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))

    # add the provider with its key (a write-only password field)
    page.goto(base + "/admin/catalog/provider/add/")
    page.fill("input[name=name]", PROVIDER)
    page.select_option("select[name=kind]", "openai")
    page.fill("input[name=base_url]", gateway.mock.openai_base_url)
    page.fill("input[name=api_key]", key)
    assert page.is_checked("input[name=is_enabled]")
    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r".*/admin/catalog/provider/$"))
    remember("provider changelist")
    row = page.locator("#result_list tbody tr", has_text=PROVIDER)
    assert "…" + key[-4:] in row.inner_text()  # only the hint is shown
    provider = Provider.objects.get(name=PROVIDER)
    assert provider.kind == "openai" and provider.base_url == gateway.mock.openai_base_url
    assert provider.api_key_encrypted and key not in provider.api_key_encrypted
    page.goto(base + f"/admin/catalog/provider/{provider.pk}/change/")
    assert page.input_value("input[name=api_key]") == ""
    remember("provider change form")

    # "sync models": the bulk action on the provider list opens the list of the provider's models
    page.goto(base + "/admin/catalog/provider/")
    page.check(f"#result_list input[name=_selected_action][value='{provider.pk}']")
    page.select_option("select[name=action]", "sync_models")
    page.click("button[name=index]")
    page.wait_for_url(re.compile(rf".*/admin/catalog/provider/{provider.pk}/sync/$"))
    remember("sync page")
    offered = page.locator("input[type=checkbox][name=model]")
    values = [offered.nth(i).get_attribute("value") for i in range(offered.count())]
    assert MODEL in values and "gpt-4o-mini" in values, values
    for value in values:  # every listed model starts ticked: keep only the one we sell
        if value != MODEL:
            page.uncheck(f"input[name=model][value='{value}']")
    page.click("input[type=submit][value='Add selected models']")
    page.wait_for_url(re.compile(r".*/admin/catalog/model/$"))
    assert "Added 1 model(s)" in page.inner_text("ul.messagelist")
    remember("model changelist after sync")
    model = Model.objects.get(name=MODEL)
    assert not model.is_enabled and not model.prices.exists()
    assert [(r.provider.name, r.upstream_model) for r in model.routes.select_related("provider")] == [(PROVIDER, MODEL)]
    assert not Model.objects.filter(name="gpt-4o-mini").exists()

    # not sold yet: a disabled, unpriced model answers 404
    with pytest.raises(openai.NotFoundError):
        _chat_openai(gateway.openai())

    # set a price through the price inline and enable the model in the same save
    page.locator("#result_list a", has_text=MODEL).first.click()
    page.wait_for_url(re.compile(rf".*/admin/catalog/model/{model.pk}/change/$"))
    page.locator("#prices-group a.addlink").click()  # "Add another price (USD)", the inline's JS
    page.locator("#prices-0").wait_for()
    if not page.input_value("input[name=prices-0-effective_from_0]"):
        page.fill("input[name=prices-0-effective_from_0]", "2020-01-01")
        page.fill("input[name=prices-0-effective_from_1]", "00:00:00")
    page.fill("input[name=prices-0-input_usd]", "2")
    page.fill("input[name=prices-0-output_usd]", "8")
    page.fill("input[name=prices-0-cost_input_usd]", "1")
    page.check("input[name=is_enabled]")
    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r".*/admin/catalog/model/$"))
    saved_at = time.monotonic()
    remember("model changelist after pricing")
    row = page.locator("#result_list tbody tr", has_text=MODEL)
    assert "2 / 8" in row.inner_text()
    price = Price.objects.get(model__name=MODEL)
    assert (price.input_nanos_per_mtok, price.output_nanos_per_mtok, price.cost_input_nanos_per_mtok) == (
        2_000_000_000,
        8_000_000_000,
        1_000_000_000,
    )
    assert Model.objects.get(name=MODEL).is_enabled

    # within seconds, both protocols through the official SDKs with the tenant's key
    assert _eventually(lambda: _chat_openai(gateway.openai()))
    assert _eventually(lambda: _chat_anthropic(gateway.anthropic()))
    assert time.monotonic() - saved_at < WITHIN_S * 2
    upstream_models = {r.json.get("model") for r in gateway.mock.requests if r.path == "/v1/chat/completions"}
    assert upstream_models == {MODEL}  # served by the new provider under its own upstream name

    # disable it with the bulk action; the next calls are a clear 404 in each protocol's shape
    page.check(f"#result_list input[name=_selected_action][value='{model.pk}']")
    page.select_option("select[name=action]", "disable")
    page.click("button[name=index]")
    page.wait_for_url(re.compile(r".*/admin/catalog/model/$"))
    assert "1 model(s) disabled." in page.inner_text("ul.messagelist")
    remember("model changelist after disable")
    assert not Model.objects.get(name=MODEL).is_enabled
    not_found = _expect_not_found(lambda: _chat_openai(gateway.openai()), openai.NotFoundError)
    assert not_found.status_code == 404 and f"`{MODEL}` is currently disabled" in not_found.message
    assert not_found.body["type"] == "invalid_request_error" and not_found.body["param"] == "model"
    not_found = _expect_not_found(lambda: _chat_anthropic(gateway.anthropic()), anthropic.NotFoundError)
    assert not_found.status_code == 404 and f"`{MODEL}` is currently disabled" in not_found.message
    assert not_found.body["type"] == "error" and not_found.body["error"]["type"] == "not_found_error"

    # the key never appears in the admin's pages after it was saved
    page.goto(base + "/admin/catalog/auditentry/")
    remember("audit log")
    page.goto(base + f"/admin/catalog/model/{model.pk}/change/")
    remember("model change form")
    for label, html in html_after_save.items():
        assert key not in html, label
