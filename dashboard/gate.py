"""The dashboard's tenancy gate: the one place a session becomes (organisation, membership, role).

Every dashboard view that shows tenant data is wrapped in `@tenant_view(perm)`; views then read
`request.tenant` and pass `org=request.tenant.org` to selectors, which are the only way to reach
tenant rows. An object id from another organisation is simply not found (404).
"""

from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect

from accounts.models import Membership, Organization
from accounts.permissions import Perm, role_has
from accounts.selectors import membership_for, org_list_for_user

SESSION_ORG = "ruapi_org_id"


@dataclass(frozen=True)
class Tenant:
    org: Organization
    membership: Membership

    @property
    def role(self) -> str:
        return self.membership.role

    def can(self, perm: Perm | str) -> bool:
        return role_has(self.role, Perm(perm))


def current_tenant(request) -> Tenant | None:
    """The session's current organisation (or the user's first one), if the user is a member."""
    user = request.user
    if not user.is_authenticated:
        return None
    org_id = request.session.get(SESSION_ORG)
    membership = membership_for(org_id=org_id, user=user) if org_id else None
    if membership is None:
        first = org_list_for_user(user=user).first()
        if first is None:
            return None
        membership = membership_for(org_id=first.id, user=user)
        request.session[SESSION_ORG] = first.id
    return Tenant(org=membership.org, membership=membership)


def tenant_view(perm: Perm = Perm.ORG_VIEW):
    """Require a signed-in member of the current organisation holding `perm` (403 otherwise)."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            tenant = current_tenant(request)
            if tenant is None:
                return redirect("dashboard:org_create")
            if not tenant.can(perm):
                raise PermissionDenied(f"Your role ({tenant.membership.get_role_display()}) cannot do this.")
            request.tenant = tenant
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
