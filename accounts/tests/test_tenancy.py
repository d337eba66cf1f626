"""No tenant can read or change another tenant's keys, members, usage or balance — by page, API or id."""

import pytest
from django.urls import reverse

from accounts.models import ApiKey, Invitation, ManagementKey, Membership, Organization
from accounts.services import invitation_create, managementkey_issue
from accounts.tests.factories import MembershipFactory, OrgFactory, key_for
from billing.models import UsageEvent
from dashboard.gate import SESSION_ORG

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


class Tenant:
    def __init__(self) -> None:
        self.org = OrgFactory()
        self.owner = MembershipFactory(org=self.org, role="owner")
        self.member = MembershipFactory(org=self.org, role="viewer")
        self.key = key_for(self.org).api_key
        self.invitation = invitation_create(org=self.org, email=f"inv-{self.org.id}@example.test", role="viewer",
                                            invited_by=self.owner.user, actor_role="owner",
                                            base_url="http://t").invitation  # fmt: skip
        self.token = managementkey_issue(org=self.org, name="t", role="admin", actor_role="owner")
        UsageEvent.objects.create(request_id=f"req-{self.org.id}", org=self.org, api_key=self.key, endpoint="messages",
                                  model="m", client_protocol="openai", status_code=200, cost_nanos=123)  # fmt: skip


@pytest.fixture
def two():
    return Tenant(), Tenant()


def _snapshot(tenant: Tenant) -> tuple:
    return (
        list(ApiKey.objects.filter(org=tenant.org).values_list("id", "name", "revoked_at", "rpm_limit")),
        list(Membership.objects.filter(org=tenant.org).values_list("id", "role")),
        list(Invitation.objects.filter(org=tenant.org).values_list("id", "revoked_at")),
        list(ManagementKey.objects.filter(org=tenant.org).values_list("id", "revoked_at")),
        Organization.objects.filter(pk=tenant.org.pk).values_list("name", "rpm_limit").get(),
    )


# Another tenant's object ids in the *current* organisation's URLs: not found.
DASHBOARD_FOREIGN_IDS = [
    ("GET", "dashboard:key_edit", {"api_key_id": "key"}),
    ("POST", "dashboard:key_edit", {"api_key_id": "key"}),
    ("POST", "dashboard:key_revoke", {"api_key_id": "key"}),
    ("POST", "dashboard:member_role", {"membership_id": "member"}),
    ("POST", "dashboard:member_remove", {"membership_id": "member"}),
    ("POST", "dashboard:ownership_transfer", {"membership_id": "member"}),
    ("POST", "dashboard:invitation_revoke", {"invitation_id": "invitation"}),
    ("POST", "dashboard:management_key_revoke", {"management_key_id": "token"}),
]
IDS = {"key": lambda t: t.key.id, "member": lambda t: t.member.id, "invitation": lambda t: t.invitation.id,
       "token": lambda t: t.token.management_key.id}  # fmt: skip


@pytest.mark.parametrize(("method", "name", "kwargs"), DASHBOARD_FOREIGN_IDS, ids=[f"{m} {n}" for m, n, _ in DASHBOARD_FOREIGN_IDS])
def test_dashboard_with_other_tenants_ids_is_404(client, two, method, name, kwargs):
    # given
    mine, theirs = two
    client.force_login(mine.owner.user)
    before = _snapshot(theirs)
    url = reverse(name, kwargs={k: IDS[v](theirs) for k, v in kwargs.items()})
    # when
    response = client.get(url) if method == "GET" else client.post(url, {"role": "admin", "name": "pwned"})
    # then
    assert response.status_code == 404
    assert _snapshot(theirs) == before


def test_dashboard_pages_show_only_the_current_tenant(client, two):
    mine, theirs = two
    client.force_login(mine.owner.user)
    for name in ["dashboard:overview", "dashboard:keys", "dashboard:members", "dashboard:settings"]:
        body = client.get(reverse(name)).content.decode()
        assert theirs.org.name not in body
        assert theirs.key.prefix not in body
        assert theirs.owner.user.email not in body
        assert theirs.member.user.email not in body
    assert mine.key.prefix in client.get(reverse("dashboard:keys")).content.decode()


def test_cannot_switch_to_or_stay_in_an_org_one_is_not_a_member_of(client, two):
    mine, theirs = two
    client.force_login(mine.owner.user)
    assert client.post(reverse("dashboard:org_switch"), {"org_id": theirs.org.id}).status_code == 404
    # a session pointing at a foreign org (e.g. membership removed meanwhile) falls back to an own org
    session = client.session
    session[SESSION_ORG] = theirs.org.id
    session.save()
    body = client.get(reverse("dashboard:overview")).content.decode()
    assert mine.org.name in body and theirs.org.name not in body


API_ENDPOINTS = [
    ("GET", "api-org", {}), ("PATCH", "api-org", {}), ("POST", "api-org-leave", {}),
    ("GET", "api-members", {}), ("PATCH", "api-member", {"membership_id": "member"}),
    ("DELETE", "api-member", {"membership_id": "member"}), ("POST", "api-transfer-ownership", {}),
    ("GET", "api-invitations", {}), ("POST", "api-invitations", {}),
    ("DELETE", "api-invitation", {"invitation_id": "invitation"}),
    ("GET", "api-keys", {}), ("POST", "api-keys", {}), ("GET", "api-key", {"api_key_id": "key"}),
    ("PATCH", "api-key", {"api_key_id": "key"}), ("POST", "api-key-revoke", {"api_key_id": "key"}),
    ("GET", "api-management-keys", {}), ("POST", "api-management-keys", {}),
    ("POST", "api-management-key-revoke", {"management_key_id": "token"}),
    ("GET", "api-balance", {}), ("GET", "api-usage", {}),
]  # fmt: skip
API_IDS = [f"{m} {n}" for m, n, _ in API_ENDPOINTS]
PAYLOAD = {"role": "admin", "name": "pwned", "rpm_limit": 1, "email": "x@example.test"}


def _call(client, method, url, payload):
    return getattr(client, method.lower())(url, data=payload, content_type="application/json")


@pytest.mark.parametrize("auth", ["session", "token"])
@pytest.mark.parametrize(("method", "name", "kwargs"), API_ENDPOINTS, ids=API_IDS)
def test_api_on_another_tenants_org_is_404(client, two, auth, method, name, kwargs):
    # given: authenticated as (or with a token of) tenant A, addressing tenant B's organisation and objects
    mine, theirs = two
    if auth == "session":
        client.force_login(mine.owner.user)
    else:
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {mine.token.secret}"
    before = _snapshot(theirs)
    url = reverse(name, kwargs={"org_id": theirs.org.id, **{k: IDS[v](theirs) for k, v in kwargs.items()}})
    # when
    response = _call(client, method, url, {**PAYLOAD, "membership_id": theirs.member.id})
    # then
    assert response.status_code == 404, response.content
    assert response.json() == {"error": {"code": "not_found", "message": "No such organisation.", "fields": {}}}
    assert _snapshot(theirs) == before


@pytest.mark.parametrize(
    ("method", "name", "kwargs"), [e for e in API_ENDPOINTS if e[2]], ids=[i for i, e in zip(API_IDS, API_ENDPOINTS, strict=True) if e[2]]
)
def test_api_with_other_tenants_object_ids_under_own_org_is_404(client, two, method, name, kwargs):
    mine, theirs = two
    client.force_login(mine.owner.user)
    before = _snapshot(theirs)
    url = reverse(name, kwargs={"org_id": mine.org.id, **{k: IDS[v](theirs) for k, v in kwargs.items()}})
    response = _call(client, method, url, PAYLOAD)
    assert response.status_code == 404, response.content
    assert _snapshot(theirs) == before


def test_api_lists_and_usage_contain_only_own_rows(client, two):
    mine, theirs = two
    client.force_login(mine.owner.user)
    org = mine.org.id
    keys = client.get(reverse("api-keys", kwargs={"org_id": org})).json()["results"]
    assert [k["id"] for k in keys] == [mine.key.id]
    members = client.get(reverse("api-members", kwargs={"org_id": org})).json()["results"]
    assert {m["id"] for m in members} == {mine.owner.id, mine.member.id}
    orgs = client.get(reverse("api-orgs")).json()["results"]
    assert [o["id"] for o in orgs] == [org]
    usage = client.get(reverse("api-usage", kwargs={"org_id": org}), {"group_by": "api_key"}).json()["results"]
    assert usage == [{"group": mine.key.id, "requests": 1, "input_tokens": 0, "output_tokens": 0, "cost_usd": "0.000000123"}]
    foreign_filter = client.get(reverse("api-usage", kwargs={"org_id": org}), {"api_key_id": theirs.key.id})
    assert foreign_filter.status_code == 404


def test_invitation_link_of_another_org_only_joins_with_the_invited_address(client, two):
    from accounts.services import invitation_create as create

    mine, theirs = two
    issued = create(org=theirs.org, email="someone-else@example.test", role="admin", invited_by=theirs.owner.user,
                    actor_role="owner", base_url="http://t")  # fmt: skip
    client.force_login(mine.owner.user)
    response = client.post(reverse("dashboard:invitation_accept", args=[issued.token]))
    assert response.status_code == 200
    assert "sign in with that (verified) address" in response.content.decode()
    assert not Membership.objects.filter(org=theirs.org, user=mine.owner.user).exists()
