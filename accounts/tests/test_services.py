"""Account services: keys, limits, invitations, membership changes."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import ApiKey, Invitation, Membership
from accounts.services import (
    ConflictError,
    InvitationInvalidError,
    KeyLimits,
    PermissionDeniedError,
    ValidationError,
    apikey_hash,
    apikey_issue,
    apikey_update,
    invitation_accept,
    invitation_create,
    membership_change_role,
    membership_leave,
    membership_remove,
    org_create,
    ownership_transfer,
)
from accounts.tests.factories import MembershipFactory, OrgFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.embedded]


def test_apikey_issue_stores_only_the_hash_and_a_prefix():
    org = OrgFactory()
    issued = apikey_issue(org=org, name=" ci ", limits=KeyLimits(allowed_models=["a", "a", " b "],
                                                                 ip_allowlist=["10.1.2.3/8"], rpm_limit=5))
    key = ApiKey.objects.get()
    assert issued.secret.startswith("sk-ru-") and len(issued.secret) == 46
    assert key.key_hash == apikey_hash(issued.secret)
    assert key.prefix == issued.secret[:14]
    assert issued.secret not in str(ApiKey.objects.values().get())
    assert (key.name, key.allowed_models, key.ip_allowlist, key.rpm_limit) == ("ci", ["a", "b"], ["10.0.0.0/8"], 5)


@pytest.mark.parametrize(
    ("_case", "limits", "field"),
    [
        ("bad ip", KeyLimits(allowed_models=[], ip_allowlist=["not-an-ip"]), "ip_allowlist"),
        ("negative rpm", KeyLimits(allowed_models=[], ip_allowlist=[], rpm_limit=-1), "rpm_limit"),
        ("float cap", KeyLimits(allowed_models=[], ip_allowlist=[], monthly_spend_cap_nanos=1.5), "monthly_spend_cap_nanos"),
    ],
)
def test_apikey_limits_are_validated(_case, limits, field):
    org = OrgFactory()
    with pytest.raises(ValidationError) as caught:
        apikey_issue(org=org, limits=limits)
    assert caught.value.field == field
    assert not ApiKey.objects.exists()


def test_apikey_update_refuses_a_key_of_another_org():
    from accounts.services import ApiKeyNotFoundError

    key = apikey_issue(org=OrgFactory()).api_key
    with pytest.raises(ApiKeyNotFoundError):
        apikey_update(org=OrgFactory(), api_key=key, name="x")
    assert ApiKey.objects.get().name == ""


def test_apikey_expiry_must_be_in_the_future():
    with pytest.raises(ValidationError):
        apikey_issue(org=OrgFactory(), expires_at=timezone.now() - timedelta(seconds=1))


def test_org_create_makes_the_creator_owner_with_a_zero_balance():
    from billing.models import Balance

    user = UserFactory()
    org = org_create(name="Acme", owner=user)
    assert Membership.objects.get(org=org).role == "owner"
    assert Balance.objects.get(org=org).balance_nanos == 0
    with pytest.raises(ConflictError):
        org_create(name="Acme")


def test_invitation_round_trip():
    # given
    owner = MembershipFactory(role="owner")
    invitee = UserFactory(email="dev@example.test")
    # when
    issued = invitation_create(org=owner.org, email="DEV@example.test", role="developer", invited_by=owner.user,
                               actor_role="owner", base_url="https://gw.example/")  # fmt: skip
    # then: one email with the link; the token is not stored
    assert [m.to for m in mail.outbox] == [["dev@example.test"]]
    assert issued.accept_url in mail.outbox[0].body
    assert issued.accept_url.startswith("https://gw.example/dashboard/invite/")
    assert issued.token not in str(Invitation.objects.values().get())
    membership = invitation_accept(invitation=issued.invitation, user=invitee)
    assert (membership.org, membership.role) == (owner.org, "developer")
    with pytest.raises(InvitationInvalidError):  # single use
        invitation_accept(invitation=Invitation.objects.get(), user=invitee)


def test_expired_invitation_is_refused():
    owner = MembershipFactory(role="owner")
    issued = invitation_create(org=owner.org, email="late@example.test", role="viewer", invited_by=owner.user,
                               actor_role="owner", base_url="http://t")  # fmt: skip
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(InvitationInvalidError):
        invitation_accept(invitation=Invitation.objects.get(), user=UserFactory(email="late@example.test"))
    assert not Membership.objects.filter(org=owner.org, user__email="late@example.test").exists()
    assert issued.invitation.pk


def test_unverified_address_cannot_accept():
    owner = MembershipFactory(role="owner")
    issued = invitation_create(org=owner.org, email="u@example.test", role="viewer", invited_by=owner.user,
                               actor_role="owner", base_url="http://t")  # fmt: skip
    with pytest.raises(InvitationInvalidError):
        invitation_accept(invitation=issued.invitation, user=UserFactory(email="u@example.test", verified=False))


def test_admin_cannot_invite_an_owner_and_developer_cannot_invite():
    owner = MembershipFactory(role="owner")
    with pytest.raises(PermissionDeniedError):
        invitation_create(org=owner.org, email="a@example.test", role="owner", invited_by=None, actor_role="admin",
                          base_url="http://t")  # fmt: skip
    with pytest.raises(PermissionDeniedError):
        invitation_create(org=owner.org, email="a@example.test", role="viewer", invited_by=None,
                          actor_role="developer", base_url="http://t")  # fmt: skip
    assert not Invitation.objects.exists()


def test_transfer_ownership_and_leave():
    owner = MembershipFactory(role="owner")
    dev = MembershipFactory(org=owner.org, role="developer")
    with pytest.raises(ConflictError):
        membership_leave(org=owner.org, user=owner.user)
    with pytest.raises(PermissionDeniedError):
        ownership_transfer(org=owner.org, from_user=dev.user, to_membership=owner)
    ownership_transfer(org=owner.org, from_user=owner.user, to_membership=dev)
    roles = dict(Membership.objects.filter(org=owner.org).values_list("user_id", "role"))
    assert roles == {owner.user_id: "admin", dev.user_id: "owner"}
    membership_leave(org=owner.org, user=owner.user)
    assert list(Membership.objects.filter(org=owner.org).values_list("role", flat=True)) == ["owner"]


def test_change_role_and_remove_respect_ranks():
    owner = MembershipFactory(role="owner")
    admin = MembershipFactory(org=owner.org, role="admin")
    viewer = MembershipFactory(org=owner.org, role="viewer")
    membership_change_role(org=owner.org, membership=viewer, role="billing", actor_role="admin")
    with pytest.raises(PermissionDeniedError):
        membership_change_role(org=owner.org, membership=viewer, role="owner", actor_role="owner")
    with pytest.raises(PermissionDeniedError):
        membership_remove(org=owner.org, membership=owner, actor_role="admin")
    membership_remove(org=owner.org, membership=admin, actor_role="owner")
    assert dict(Membership.objects.filter(org=owner.org).values_list("id", "role")) == {owner.id: "owner",
                                                                                        viewer.id: "billing"}
