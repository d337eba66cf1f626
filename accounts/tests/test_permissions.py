"""No role exceeds its permissions: the table itself, and every API endpoint and dashboard action per role."""

import pytest
from django.urls import reverse

from accounts.models import Invitation, Membership
from accounts.permissions import ROLE_PERMISSIONS, Perm, permission_table_markdown, role_can_assign, role_has
from accounts.services import invitation_create, managementkey_issue
from accounts.tests.factories import MembershipFactory, OrgFactory, UserFactory, key_for

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

ROLES = [r.value for r in Membership.Role]

EXPECTED = {  # the README's table, written out once more so a change to the code must be deliberate
    "owner": set(Perm),
    "admin": set(Perm) - {Perm.OWNERSHIP_TRANSFER},
    "developer": {Perm.ORG_VIEW, Perm.MEMBERS_VIEW, Perm.KEYS_VIEW, Perm.KEYS_MANAGE, Perm.USAGE_VIEW},
    "billing": {Perm.ORG_VIEW, Perm.MEMBERS_VIEW, Perm.USAGE_VIEW, Perm.BILLING_VIEW, Perm.BILLING_MANAGE},
    "viewer": {Perm.ORG_VIEW, Perm.MEMBERS_VIEW, Perm.KEYS_VIEW, Perm.USAGE_VIEW, Perm.BILLING_VIEW},
}


def test_permission_table_is_exactly_the_documented_one():
    assert {role: set(perms) for role, perms in ROLE_PERMISSIONS.items()} == EXPECTED


def test_readme_shows_the_table_from_code():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert permission_table_markdown() in readme


@pytest.mark.parametrize(
    ("_case", "actor", "target", "allowed"),
    [
        ("nobody assigns owner", "owner", "owner", False),
        ("owner assigns admin", "owner", "admin", True),
        ("admin assigns admin", "admin", "admin", True),
        ("admin assigns viewer", "admin", "viewer", True),
        ("developer assigns nothing", "developer", "viewer", False),
        ("billing assigns nothing", "billing", "viewer", False),
        ("viewer assigns nothing", "viewer", "viewer", False),
    ],
)
def test_role_can_assign(_case, actor, target, allowed):
    assert role_can_assign(actor, target) is allowed


class World:
    """One organisation with an actor of a given role, a target member, a key, an invitation, a token."""

    def __init__(self, role: str) -> None:
        self.org = OrgFactory()
        owner = MembershipFactory(org=self.org, role="owner")
        self.actor = owner if role == "owner" else MembershipFactory(org=self.org, role=role)
        self.target = MembershipFactory(org=self.org, role="viewer")
        self.key = key_for(self.org).api_key
        self.invitation = invitation_create(org=self.org, email="new@example.test", role="viewer",
                                            invited_by=owner.user, actor_role="owner", base_url="http://t").invitation
        self.token = managementkey_issue(org=self.org, name="t", role="viewer", actor_role="owner").management_key


API = [
    ("GET", "api-org", {}, None, Perm.ORG_VIEW),
    ("PATCH", "api-org", {}, {"rpm_limit": 10}, Perm.ORG_MANAGE),
    ("GET", "api-members", {}, None, Perm.MEMBERS_VIEW),
    ("PATCH", "api-member", {"membership_id": "target"}, {"role": "developer"}, Perm.MEMBERS_MANAGE),
    ("DELETE", "api-member", {"membership_id": "target"}, None, Perm.MEMBERS_MANAGE),
    ("POST", "api-transfer-ownership", {}, {"membership_id": "target"}, Perm.OWNERSHIP_TRANSFER),
    ("GET", "api-invitations", {}, None, Perm.MEMBERS_MANAGE),
    ("POST", "api-invitations", {}, {"email": "x@example.test", "role": "viewer"}, Perm.MEMBERS_MANAGE),
    ("DELETE", "api-invitation", {"invitation_id": "invitation"}, None, Perm.MEMBERS_MANAGE),
    ("GET", "api-keys", {}, None, Perm.KEYS_VIEW),
    ("POST", "api-keys", {}, {"name": "new"}, Perm.KEYS_MANAGE),
    ("GET", "api-key", {"api_key_id": "key"}, None, Perm.KEYS_VIEW),
    ("PATCH", "api-key", {"api_key_id": "key"}, {"rpm_limit": 5}, Perm.KEYS_MANAGE),
    ("POST", "api-key-revoke", {"api_key_id": "key"}, None, Perm.KEYS_MANAGE),
    ("GET", "api-management-keys", {}, None, Perm.MANAGEMENT_KEYS_MANAGE),
    ("POST", "api-management-keys", {}, {"name": "n", "role": "viewer"}, Perm.MANAGEMENT_KEYS_MANAGE),
    ("POST", "api-management-key-revoke", {"management_key_id": "token"}, None, Perm.MANAGEMENT_KEYS_MANAGE),
    ("GET", "api-balance", {}, None, Perm.BILLING_VIEW),
    ("GET", "api-usage", {}, None, Perm.USAGE_VIEW),
]
OBJECT_IDS = {"target": lambda w: w.target.id, "key": lambda w: w.key.id, "invitation": lambda w: w.invitation.id,
              "token": lambda w: w.token.id}  # fmt: skip


def _api_call(client, world, method, name, kwargs, payload):
    kwargs = {k: OBJECT_IDS[v](world) for k, v in kwargs.items()}
    url = reverse(name, kwargs={"org_id": world.org.id, **kwargs})
    if payload and payload.get("membership_id") == "target":
        payload = {"membership_id": world.target.id}
    return getattr(client, method.lower())(url, data=payload, content_type="application/json")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "name", "kwargs", "payload", "perm"), API, ids=[f"{a[0]} {a[1]}" for a in API])
def test_api_endpoint_per_role(client, role, method, name, kwargs, payload, perm):
    # given
    world = World(role)
    client.force_login(world.actor.user)
    # when
    response = _api_call(client, world, method, name, kwargs, payload)
    # then
    if role_has(role, perm):
        assert response.status_code in (200, 201, 204), response.content
    else:
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(("method", "name", "kwargs", "payload", "perm"), API, ids=[f"{a[0]} {a[1]}" for a in API])
def test_api_endpoint_with_a_viewer_token(client, method, name, kwargs, payload, perm):
    world = World("owner")
    secret = managementkey_issue(org=world.org, role="viewer", actor_role="owner").secret
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    response = _api_call(client, world, method, name, kwargs, payload)
    expected_ok = role_has("viewer", perm)
    assert (response.status_code in (200, 201, 204)) is expected_ok, response.content
    if not expected_ok:
        assert response.status_code == 403


PAGES = [
    ("GET", "dashboard:overview", {}, Perm.ORG_VIEW),
    ("GET", "dashboard:keys", {}, Perm.KEYS_VIEW),
    ("GET", "dashboard:members", {}, Perm.MEMBERS_VIEW),
    ("GET", "dashboard:settings", {}, Perm.ORG_MANAGE),
    ("GET", "dashboard:quickstart", {}, Perm.ORG_VIEW),
    ("GET", "dashboard:models", {}, Perm.ORG_VIEW),
    ("GET", "dashboard:key_edit", {"api_key_id": "key"}, Perm.KEYS_MANAGE),
    ("POST", "dashboard:key_create", {}, Perm.KEYS_MANAGE),
    ("POST", "dashboard:key_revoke", {"api_key_id": "key"}, Perm.KEYS_MANAGE),
    ("POST", "dashboard:member_role", {"membership_id": "target"}, Perm.MEMBERS_MANAGE),
    ("POST", "dashboard:member_remove", {"membership_id": "target"}, Perm.MEMBERS_MANAGE),
    ("POST", "dashboard:ownership_transfer", {"membership_id": "target"}, Perm.OWNERSHIP_TRANSFER),
    ("POST", "dashboard:invitation_revoke", {"invitation_id": "invitation"}, Perm.MEMBERS_MANAGE),
    ("POST", "dashboard:management_key_create", {}, Perm.MANAGEMENT_KEYS_MANAGE),
    ("POST", "dashboard:management_key_revoke", {"management_key_id": "token"}, Perm.MANAGEMENT_KEYS_MANAGE),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "name", "kwargs", "perm"), PAGES, ids=[f"{p[0]} {p[1]}" for p in PAGES])
def test_dashboard_action_per_role(client, role, method, name, kwargs, perm):
    # given
    world = World(role)
    client.force_login(world.actor.user)
    url = reverse(name, kwargs={k: OBJECT_IDS[v](world) for k, v in kwargs.items()})
    # when
    response = client.get(url) if method == "GET" else client.post(url, {"role": "viewer", "name": "x"})
    # then
    if role_has(role, perm):
        assert response.status_code in (200, 302), response.content[:500]
    else:
        assert response.status_code == 403


def test_refused_actions_change_nothing(client):
    # given: a developer (no members.manage)
    world = World("developer")
    client.force_login(world.actor.user)
    # when
    client.post(reverse("dashboard:member_remove", args=[world.target.id]))
    client.post(reverse("dashboard:invitation_revoke", args=[world.invitation.id]))
    # then
    assert Membership.objects.filter(pk=world.target.pk, role="viewer").exists()
    assert Invitation.objects.get(pk=world.invitation.pk).revoked_at is None


def test_admin_cannot_remove_or_demote_the_owner(client):
    world = World("admin")
    owner = Membership.objects.get(org=world.org, role="owner")
    client.force_login(world.actor.user)
    response = client.delete(reverse("api-member", kwargs={"org_id": world.org.id, "membership_id": owner.id}))
    assert response.status_code == 403
    response = client.patch(reverse("api-member", kwargs={"org_id": world.org.id, "membership_id": owner.id}),
                            data={"role": "viewer"}, content_type="application/json")  # fmt: skip
    assert response.status_code == 403
    assert Membership.objects.get(pk=owner.pk).role == "owner"


def test_admin_cannot_mint_a_token_above_viewer_for_a_viewer():
    from accounts.services import PermissionDeniedError

    world = World("owner")
    with pytest.raises(PermissionDeniedError):
        managementkey_issue(org=world.org, role="admin", actor_role="developer")
    with pytest.raises(PermissionDeniedError):
        managementkey_issue(org=world.org, role="owner", actor_role="owner")


def test_unverified_user_object_exists_for_factories():
    user = UserFactory(verified=False)
    assert not user.emailaddress_set.get().verified
