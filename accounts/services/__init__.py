"""Every write to organisations, memberships, invitations, API keys and management keys.

Split by sub-domain (STYLE.md); import from here.
"""

from accounts.services.errors import (
    AccountsError,
    AmbiguousApiKeyPrefixError,
    ApiKeyNotFoundError,
    ConflictError,
    InvitationInvalidError,
    OrganizationNameTakenError,
    PermissionDeniedError,
    ValidationError,
)
from accounts.services.keys import (
    IssuedKey,
    IssuedManagementKey,
    KeyLimits,
    apikey_disable,
    apikey_hash,
    apikey_issue,
    apikey_revoke,
    apikey_update,
    managementkey_issue,
    managementkey_revoke,
    managementkey_touch,
)
from accounts.services.members import (
    IssuedInvitation,
    invitation_accept,
    invitation_create,
    invitation_revoke,
    invitation_token_hash,
    membership_add,
    membership_change_role,
    membership_leave,
    membership_remove,
    ownership_transfer,
)
from accounts.services.orgs import org_create, org_set_active, org_update

__all__ = [
    "AccountsError", "AmbiguousApiKeyPrefixError", "ApiKeyNotFoundError", "ConflictError", "InvitationInvalidError",
    "IssuedInvitation", "IssuedKey", "IssuedManagementKey", "KeyLimits", "OrganizationNameTakenError",
    "PermissionDeniedError", "ValidationError", "apikey_disable", "apikey_hash", "apikey_issue", "apikey_revoke",
    "apikey_update", "invitation_accept", "invitation_create", "invitation_revoke", "invitation_token_hash",
    "managementkey_issue", "managementkey_revoke", "managementkey_touch", "membership_add",
    "membership_change_role", "membership_leave", "membership_remove", "org_create", "org_set_active", "org_update",
    "ownership_transfer",
]  # fmt: skip
