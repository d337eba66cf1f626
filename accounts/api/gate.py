"""The management API's tenancy gate: every organisation-scoped view derives from OrgScopedView.

`initial()` (which DRF runs before any handler) resolves the URL's org_id against the caller:
a management key acts only in its own organisation with its own role; a session user acts where
they are a member with their membership's role. Anything else is 404 — another tenant's ids are
indistinguishable from ids that do not exist. Then the method's permission from
`accounts.permissions` is required (403). Handlers use self.org / self.role and org= selectors.
"""

from rest_framework import exceptions
from rest_framework.generics import GenericAPIView

from accounts.api.auth import ManagementPrincipal
from accounts.models import Organization
from accounts.permissions import Perm, role_has
from accounts.selectors import membership_for


class OrgScopedView(GenericAPIView):
    # method -> permission; a method missing here is refused (fail closed).
    required: dict[str, Perm] = {}
    org: Organization
    role: str

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        org_id = kwargs.get("org_id")
        if isinstance(request.user, ManagementPrincipal):
            key = request.user.management_key
            if key.org_id != org_id:
                raise exceptions.NotFound("No such organisation.")
            self.org, self.role, self.membership = key.org, key.role, None
        else:
            membership = membership_for(org_id=org_id, user=request.user)
            if membership is None:
                raise exceptions.NotFound("No such organisation.")
            self.org, self.role, self.membership = membership.org, membership.role, membership
        perm = self.required.get(request.method)
        if perm is None and request.method in ("HEAD", "OPTIONS"):
            perm = self.required.get("GET")
        if perm is None or not role_has(self.role, perm):
            raise exceptions.PermissionDenied(f"The {self.role} role does not have the {perm} permission.")

    @property
    def is_session(self) -> bool:
        return not isinstance(self.request.user, ManagementPrincipal)
