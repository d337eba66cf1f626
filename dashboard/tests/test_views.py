"""Dashboard pages: root redirect, org creation, key secret shown once, empty states, quickstart."""

import pytest
from django.urls import reverse

from accounts.models import ApiKey, Membership
from accounts.tests.factories import MembershipFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


def test_root_is_the_landing_page_for_visitors_and_the_dashboard_for_members(client, settings):
    settings.RUAPI_PUBLIC_BASE_URL = "https://api.example.test"
    landing = client.get("/")
    assert landing.status_code == 200
    body = landing.content.decode()
    for link in (reverse("account_signup"), reverse("account_login"), reverse("pricing:list"), reverse("swagger-ui")):
        assert f'href="{link}"' in body
    assert "curl https://api.example.test/v1/chat/completions" in body
    assert 'OpenAI(base_url="https://api.example.test/v1"' in body
    assert 'Anthropic(base_url="https://api.example.test"' in body
    member = MembershipFactory(role="viewer")
    client.force_login(member.user)
    assert client.get("/")["Location"] == reverse("dashboard:overview")


def test_user_without_org_is_asked_to_create_one(client):
    user = UserFactory()
    client.force_login(user)
    assert client.get(reverse("dashboard:overview"))["Location"] == reverse("dashboard:org_create")
    response = client.post(reverse("dashboard:org_create"), {"name": "Acme"})
    assert response.status_code == 302
    assert Membership.objects.get(user=user).role == "owner"
    error = client.post(reverse("dashboard:org_create"), {"name": "Acme"})
    assert "already exists" in error.content.decode()


def test_key_secret_is_shown_once_then_only_the_prefix(client):
    # given
    owner = MembershipFactory(role="owner")
    client.force_login(owner.user)
    # when
    created = client.post(reverse("dashboard:key_create"), {"name": "app", "rpm_limit": "60"}, HTTP_HX_REQUEST="true")
    # then
    key = ApiKey.objects.get()
    body = created.content.decode()
    secret = body.split('data-testid="new-secret" ')[0].rsplit('value="', 1)[1].split('"')[0]
    assert secret.startswith(key.prefix) and len(secret) == 46
    assert created["HX-Trigger"] == '{"keys-changed": {}}'
    listing = client.get(reverse("dashboard:keys")).content.decode()
    assert key.prefix in listing and secret not in listing
    assert key.rpm_limit == 60


def test_key_create_form_errors_are_shown(client):
    owner = MembershipFactory(role="owner")
    client.force_login(owner.user)
    response = client.post(reverse("dashboard:key_create"),
                           {"name": "x", "ip_allowlist": "nope", "monthly_spend_cap": "1.2.3"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "not an IP address" in body or "Enter an amount in USD" in body
    assert "Enter an amount in USD" in body
    assert not ApiKey.objects.exists()


def test_empty_states(client):
    owner = MembershipFactory(role="owner")
    client.force_login(owner.user)
    assert "No requests yet" in client.get(reverse("dashboard:overview")).content.decode()
    assert "No keys here yet" in client.get(reverse("dashboard:keys")).content.decode()
    assert "No models yet" in client.get(reverse("dashboard:models")).content.decode()


def test_quickstart_is_prefilled_with_this_gateways_base_url(client, settings):
    owner = MembershipFactory(role="owner")
    client.force_login(owner.user)
    body = client.get(reverse("dashboard:quickstart")).content.decode()
    assert "http://testserver/v1/chat/completions" in body
    assert 'OpenAI(base_url="http://testserver/v1"' in body
    assert 'Anthropic(base_url="http://testserver"' in body
    assert 'new Anthropic({ baseURL: "http://testserver"' in body
    settings.RUAPI_PUBLIC_BASE_URL = "https://api.example.com"
    assert 'baseURL: "https://api.example.com/v1"' in client.get(reverse("dashboard:quickstart")).content.decode()


def test_overview_hides_balance_from_roles_without_billing_view(client):
    dev = MembershipFactory(role="developer")
    client.force_login(dev.user)
    assert 'data-testid="balance"' not in client.get(reverse("dashboard:overview")).content.decode()
    billing = MembershipFactory(org=dev.org, role="billing")
    client.force_login(billing.user)
    assert 'data-testid="balance"' in client.get(reverse("dashboard:overview")).content.decode()


def test_login_is_rate_limited(client, settings):
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/m/ip"}
    user = UserFactory(email="victim@example.test")
    for _ in range(3):
        client.post(reverse("account_login"), {"login": user.email, "password": "wrong"})
    response = client.post(reverse("account_login"), {"login": user.email, "password": "correct horse battery"})
    assert response.status_code == 429 or "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_signup_sends_a_verification_email_and_login_waits_for_it(client, mailoutbox):
    response = client.post(reverse("account_signup"), {"email": "new@example.test", "password1": "Very-secret-pw-1",
                                                       "password2": "Very-secret-pw-1"})  # fmt: skip
    assert response.status_code == 302
    assert [m.to for m in mailoutbox] == [["new@example.test"]]
    assert "/accounts/confirm-email/" in mailoutbox[0].body
    assert "_auth_user_id" not in client.session  # mandatory verification
