"""Every read of account data a view or the API needs. Tenant-facing selectors require org=.

The few reads that must work before an organisation is known are named unscoped_* so review
sees them (STYLE.md, Tenancy).
"""

from django.db.models import QuerySet

from accounts.models import ApiKey, Invitation, ManagementKey, Membership, Organization
from accounts.services.keys import apikey_hash
from accounts.services.members import invitation_token_hash


def org_list_for_user(*, user) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user, is_active=True).order_by("name")


def membership_for(*, org_id: int, user) -> Membership | None:
    """The user's membership in an active organisation, or None (the tenancy gate's question)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.select_related("org").filter(org_id=org_id, org__is_active=True, user=user).first()


def member_list(*, org: Organization, role: str | None = None) -> QuerySet[Membership]:
    members = Membership.objects.filter(org=org).select_related("user").order_by("created_at", "id")
    return members.filter(role=role) if role else members


def member_get(*, org: Organization, membership_id: int) -> Membership:
    """Raises Membership.DoesNotExist unless the membership belongs to `org`."""
    return Membership.objects.select_related("user").get(org=org, pk=membership_id)


def invitation_list(*, org: Organization, pending_only: bool = True) -> list[Invitation]:
    invitations = Invitation.objects.filter(org=org, accepted_at__isnull=True, revoked_at__isnull=True)
    invitations = invitations.select_related("invited_by")
    return [i for i in invitations if i.is_pending] if pending_only else list(invitations)


def invitation_get(*, org: Organization, invitation_id: int) -> Invitation:
    return Invitation.objects.get(org=org, pk=invitation_id)


def unscoped_invitation_by_token(*, token: str) -> Invitation | None:
    """The invitation a link carries; unscoped because the invitee is not a member yet."""
    invitations = Invitation.objects.select_related("org", "invited_by")
    return invitations.filter(token_hash=invitation_token_hash(token)).first()


def apikey_list(*, org: Organization, status: str | None = None, search: str | None = None) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.filter(org=org).select_related("created_by")
    if status == "active":
        keys = keys.filter(revoked_at__isnull=True)
    elif status == "revoked":
        keys = keys.filter(revoked_at__isnull=False)
    if search:
        keys = keys.filter(name__icontains=search) | keys.filter(prefix__startswith=search)
    return keys.order_by("-created_at", "-id")


def apikey_get(*, org: Organization, api_key_id: int) -> ApiKey:
    """Raises ApiKey.DoesNotExist unless the key belongs to `org`."""
    return ApiKey.objects.get(org=org, pk=api_key_id)


def managementkey_list(*, org: Organization) -> QuerySet[ManagementKey]:
    return ManagementKey.objects.filter(org=org).order_by("-created_at", "-id")


def managementkey_get(*, org: Organization, management_key_id: int) -> ManagementKey:
    return ManagementKey.objects.get(org=org, pk=management_key_id)


def unscoped_managementkey_by_secret(*, secret: str) -> ManagementKey | None:
    """The active management key for a presented token (authentication happens before any org is known)."""
    key = ManagementKey.objects.select_related("org").filter(key_hash=apikey_hash(secret)).first()
    if key is None or not key.is_active or not key.org.is_active:
        return None
    return key
