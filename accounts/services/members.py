"""Every write to memberships and invitations: invite, accept, change role, remove, leave, transfer."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import Invitation, Membership, Organization
from accounts.permissions import Role, role_can_assign, role_can_manage_member
from accounts.services.errors import (
    ConflictError,
    InvitationInvalidError,
    PermissionDeniedError,
    ValidationError,
)


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # only in the emailed link
    accept_url: str


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def invitation_create(
    *, org: Organization, email: str, role: str, invited_by, actor_role: str, base_url: str
) -> IssuedInvitation:
    """Invite `email` with `role` (at most the inviter's rank) and email the link after commit."""
    email = email.strip().lower()
    if "@" not in email:
        raise ValidationError("Enter an email address", field="email")
    if role not in Role.values:
        raise ValidationError("Unknown role", field="role")
    if not role_can_assign(actor_role, role):
        raise PermissionDeniedError(f"You cannot invite someone as {role}", field="role")
    if Membership.objects.filter(org=org, user__email__iexact=email).exists():
        raise ConflictError(f"{email} is already a member", field="email")
    # A fresh invitation replaces a pending one for the same address.
    Invitation.objects.filter(org=org, email=email, accepted_at__isnull=True, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        org=org,
        email=email,
        role=role,
        token_hash=invitation_token_hash(token),
        invited_by=invited_by,
        expires_at=timezone.now() + timedelta(seconds=settings.RUAPI_INVITATION_TTL),
    )
    accept_url = base_url.rstrip("/") + reverse("dashboard:invitation_accept", args=[token])
    context = {"invitation": invitation, "accept_url": accept_url, "inviter": invited_by}
    subject = f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}You are invited to {org.name}"
    body = render_to_string("dashboard/email/invitation.txt", context)
    transaction.on_commit(lambda: send_mail(subject, body, None, [email]))
    return IssuedInvitation(invitation=invitation, token=token, accept_url=accept_url)


def invitation_revoke(*, org: Organization, invitation: Invitation) -> Invitation:
    if invitation.org_id != org.id:
        raise InvitationInvalidError("No such invitation")
    if invitation.accepted_at is None and invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user) -> Membership:
    """Join the invitation's organisation. The signed-in user's verified email must match."""
    if not invitation.is_pending:
        raise InvitationInvalidError("This invitation has expired, was revoked or was already used")
    if not user.emailaddress_set.filter(email__iexact=invitation.email, verified=True).exists():
        raise InvitationInvalidError(
            f"This invitation is for {invitation.email}; sign in with that (verified) address to accept it"
        )
    claimed = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
        accepted_at=timezone.now(), accepted_by=user
    )
    if not claimed:  # accepted concurrently
        raise InvitationInvalidError("This invitation was already used")
    membership, _ = Membership.objects.get_or_create(org=invitation.org, user=user, defaults={"role": invitation.role})
    return membership


@transaction.atomic
def membership_change_role(*, org: Organization, membership: Membership, role: str, actor_role: str) -> Membership:
    if membership.org_id != org.id:
        raise PermissionDeniedError("No such member")
    if role not in Role.values:
        raise ValidationError("Unknown role", field="role")
    if not role_can_manage_member(actor_role, membership.role) or not role_can_assign(actor_role, role):
        raise PermissionDeniedError("You cannot change this member to that role", field="role")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, org: Organization, membership: Membership, actor_role: str) -> None:
    if membership.org_id != org.id:
        raise PermissionDeniedError("No such member")
    if not role_can_manage_member(actor_role, membership.role):
        raise PermissionDeniedError("You cannot remove this member")
    membership.delete()


@transaction.atomic
def membership_leave(*, org: Organization, user) -> None:
    """Leave an organisation; the owner must transfer ownership first."""
    membership = Membership.objects.filter(org=org, user=user).first()
    if membership is None:
        raise PermissionDeniedError("You are not a member")
    if membership.role == Role.OWNER:
        raise ConflictError("The owner cannot leave; transfer ownership first")
    membership.delete()


@transaction.atomic
def ownership_transfer(*, org: Organization, from_user, to_membership: Membership) -> Membership:
    """Make another member the owner; the previous owner becomes an admin."""
    current = Membership.objects.select_for_update().filter(org=org, user=from_user, role=Role.OWNER).first()
    if current is None:
        raise PermissionDeniedError("Only the owner can transfer ownership")
    if to_membership.org_id != org.id or to_membership.pk == current.pk:
        raise ValidationError("Choose another member of this organisation", field="membership")
    current.role = Role.ADMIN
    current.save(update_fields=["role"])
    to_membership.role = Role.OWNER
    to_membership.save(update_fields=["role"])
    return to_membership


def membership_add(*, org: Organization, user, role: str) -> Membership:
    """Add a user directly (operator commands and tests; the product path is an invitation)."""
    try:
        with transaction.atomic():
            return Membership.objects.create(org=org, user=user, role=role)
    except IntegrityError as exc:
        raise ConflictError("Already a member") from exc
