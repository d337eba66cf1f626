"""The whole customer path in a real browser (Playwright driving Debian's Chromium, never a download):
sign up, verify the email, create an organisation, create and copy a key, call the gateway with the
SDK, see the request on the dashboard, revoke the key, see the next call refused."""

import os
import re

import openai
import pytest
from django.core import mail

pytestmark = [pytest.mark.integration, pytest.mark.embedded, pytest.mark.browser]




def test_signup_to_revoked_key(gateway, page):
    from accounts.models import Organization
    from billing.money import usd_to_nanos
    from billing.services import balance_credit

    base = gateway.server.url
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)

    # sign up
    page.goto(base + "/")
    page.get_by_role("link", name="Create an account").click()
    page.wait_for_url(re.compile(r".*/accounts/signup/$"))
    page.fill("input[name=email]", "alice@example.test")
    page.fill("input[name=password1]", "Correct-Horse-42")
    page.fill("input[name=password2]", "Correct-Horse-42")
    page.click("form[action='/accounts/signup/'] button[type=submit]")
    page.wait_for_url(re.compile(r".*/accounts/confirm-email/$"))

    # verify the email from the outbox
    assert [m.to for m in mail.outbox] == [["alice@example.test"]]
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mail.outbox[0].body).group(0)
    page.goto(link)
    page.click("button[type=submit]")

    # create an organisation (the first page after verification asks for one)
    page.wait_for_url(re.compile(r".*/dashboard/orgs/new/$"))
    page.fill("input[name=name]", "Browser Co")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/$"))
    assert page.get_by_role("heading", name="Browser Co").is_visible()
    assert page.get_by_text("No requests yet").is_visible()
    org = Organization.objects.get(name="Browser Co")
    balance_credit(org_id=org.id, amount_nanos=usd_to_nanos("5"), kind="promo", description="browser test")

    # create a key; the secret appears once in a dialog; copy it
    page.get_by_role("link", name="API keys").click()
    page.get_by_text("Create a key").click()
    page.fill("#key-create input[name=name]", "laptop")
    page.click("#key-create button[type=submit]")
    dialog = page.locator("dialog#secret-dialog")
    dialog.wait_for(state="visible")
    secret = page.input_value("[data-testid=new-secret]")
    assert secret.startswith("sk-ru-")
    dialog.get_by_role("button", name="Copy").click()
    page.wait_for_selector("button[data-copied=true]")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == secret
    dialog.get_by_role("button", name="Done").click()
    dialog.wait_for(state="detached")  # the dialog's close event removes it (and the secret) from the page
    row = page.locator("tr", has_text="laptop")
    row.wait_for()
    assert secret not in page.content() and secret[:14] in row.inner_text()

    # an SDK call with the copied key
    client = openai.OpenAI(base_url=gateway.server.openai_base_url, api_key=copied, max_retries=0)
    reply = client.chat.completions.create(model="demo-echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content

    # the request is counted on the dashboard
    page.get_by_role("link", name="Overview").click()
    assert page.inner_text("[data-testid=requests-month]") == "1"
    page.get_by_role("link", name="API keys").click()
    assert "1 req" in page.locator("tr", has_text="laptop").inner_text()

    # revoke; the next call is refused
    page.once("dialog", lambda d: d.accept())  # hx-confirm
    page.locator("tr", has_text="laptop").get_by_role("button", name=re.compile("Revoke")).click()
    page.locator("tr", has_text="laptop").get_by_text("Revoked").wait_for()
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="demo-echo", messages=[{"role": "user", "content": "again"}])
    assert os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] == "true"
