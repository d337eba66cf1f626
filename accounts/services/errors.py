"""Errors the account services raise; interfaces map them to 400/403/404/409."""


class AccountsError(Exception):
    """Base: a refused account operation with a message safe to show to the user."""

    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationError(AccountsError):
    code = "invalid"


class PermissionDeniedError(AccountsError):
    code = "permission_denied"


class ConflictError(AccountsError):
    code = "conflict"


class OrganizationNameTakenError(ConflictError):
    code = "organization_name_taken"


class ApiKeyNotFoundError(AccountsError):
    code = "not_found"


class AmbiguousApiKeyPrefixError(AccountsError):
    code = "ambiguous_prefix"


class InvitationInvalidError(AccountsError):
    code = "invitation_invalid"
