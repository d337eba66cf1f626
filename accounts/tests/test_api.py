"""The management API: token auth, error bodies, pagination and filtering, the OpenAPI 3 schema."""

import pytest
import yaml
from django.urls import reverse

from accounts.models import ApiKey
from accounts.services import apikey_disable, managementkey_issue, managementkey_revoke
from accounts.tests.factories import MembershipFactory, key_for

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture
def owner():
    return MembershipFactory(role="owner")


def _token(org, role="admin"):
    return managementkey_issue(org=org, name="ci", role=role, actor_role="owner")


def test_token_creates_lists_updates_and_revokes_keys(client, owner):
    # given
    token = _token(owner.org)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token.secret}"}
    url = reverse("api-keys", kwargs={"org_id": owner.org.id})
    # when
    created = client.post(url, {"name": "ci", "rpm_limit": 60, "monthly_spend_cap_usd": "12.50",
                                "allowed_models": ["gpt-test"], "ip_allowlist": ["10.0.0.0/8"]},
                          content_type="application/json", **auth)  # fmt: skip
    # then
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("sk-ru-") and body["prefix"] == body["secret"][:14]
    assert {k: body[k] for k in ("name", "rpm_limit", "monthly_spend_cap_usd", "allowed_models", "ip_allowlist")} == {
        "name": "ci", "rpm_limit": 60, "monthly_spend_cap_usd": "12.5", "allowed_models": ["gpt-test"],
        "ip_allowlist": ["10.0.0.0/8"],
    }  # fmt: skip
    key = ApiKey.objects.get()
    assert key.monthly_spend_cap_nanos == 12_500_000_000
    listed = client.get(url, **auth).json()
    assert "secret" not in listed["results"][0] and listed["count"] == 1
    patched = client.patch(reverse("api-key", kwargs={"org_id": owner.org.id, "api_key_id": key.id}),
                           {"rpm_limit": None, "tpm_limit": 1000}, content_type="application/json", **auth)
    assert (patched.json()["rpm_limit"], patched.json()["tpm_limit"], patched.json()["allowed_models"]) == (
        None, 1000, ["gpt-test"])
    revoked = client.post(reverse("api-key-revoke", kwargs={"org_id": owner.org.id, "api_key_id": key.id}), **auth)
    assert revoked.json()["is_active"] is False


def test_gateway_key_is_refused_by_the_management_api(client, owner):
    secret = key_for(owner.org).secret
    response = client.get(reverse("api-orgs"), HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert "Gateway API keys cannot use the management API" in response.json()["error"]["message"]


def test_revoked_token_is_refused(client, owner):
    token = _token(owner.org)
    managementkey_revoke(org=owner.org, management_key=token.management_key)
    response = client.get(reverse("api-orgs"), HTTP_AUTHORIZATION=f"Bearer {token.secret}")
    assert response.status_code == 401


def test_unauthenticated_is_401_with_the_error_body(client):
    response = client.get(reverse("api-orgs"))
    assert response.status_code in (401, 403)
    assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_validation_error_body(client, owner):
    client.force_login(owner.user)
    response = client.post(reverse("api-keys", kwargs={"org_id": owner.org.id}),
                           {"rpm_limit": -1, "ip_allowlist": ["x"]}, content_type="application/json")  # fmt: skip
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid", "message": "The request is not valid.",
                                         "fields": {"rpm_limit": ["Ensure this value is greater than or equal to 0."]}}}
    response = client.post(reverse("api-keys", kwargs={"org_id": owner.org.id}), {"ip_allowlist": ["x"]},
                           content_type="application/json")  # fmt: skip
    assert response.json()["error"] == {"code": "invalid", "message": "'x' is not an IP address or CIDR network",
                                        "fields": {"ip_allowlist": ["'x' is not an IP address or CIDR network"]}}
    assert not ApiKey.objects.exists()


def test_pagination_and_filters(client, owner):
    client.force_login(owner.user)
    keys = [key_for(owner.org, name=f"k{i}").api_key for i in range(5)]
    apikey_disable(org=owner.org, api_key=keys[0])
    url = reverse("api-keys", kwargs={"org_id": owner.org.id})
    page = client.get(url, {"limit": 2, "offset": 1}).json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"] and page["previous"]
    assert [k["name"] for k in client.get(url, {"status": "revoked"}).json()["results"]] == ["k0"]
    assert client.get(url, {"status": "active"}).json()["count"] == 4
    assert [k["name"] for k in client.get(url, {"search": "k3"}).json()["results"]] == ["k3"]
    MembershipFactory(org=owner.org, role="viewer")
    members = client.get(reverse("api-members", kwargs={"org_id": owner.org.id}), {"role": "viewer"}).json()
    assert [m["role"] for m in members["results"]] == ["viewer"]


def test_session_writes_need_csrf(owner):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner.user)
    response = client.post(reverse("api-keys", kwargs={"org_id": owner.org.id}), {"name": "x"},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_schema_is_valid_openapi_3_and_docs_render(client, owner):
    from openapi_spec_validator import validate

    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert "/api/orgs/{org_id}/keys/" in schema["paths"]
    assert "managementToken" in schema["components"]["securitySchemes"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
