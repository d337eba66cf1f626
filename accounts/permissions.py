"""The one role → permission table. Views, the management API and tests all read it from here.

The README's "Roles" table is generated from ROLE_PERMISSIONS (see `permission_table_markdown`).
"""

from enum import StrEnum

from accounts.models import Membership

Role = Membership.Role


class Perm(StrEnum):
    ORG_VIEW = "org.view"  # see the organisation, its overview, quickstart and models
    ORG_MANAGE = "org.manage"  # rename, organisation-level limits
    MEMBERS_VIEW = "members.view"
    MEMBERS_MANAGE = "members.manage"  # invite, change roles, remove members
    OWNERSHIP_TRANSFER = "ownership.transfer"
    KEYS_VIEW = "keys.view"
    KEYS_MANAGE = "keys.manage"  # create, revoke, change limits of gateway API keys
    MANAGEMENT_KEYS_MANAGE = "management_keys.manage"  # create/revoke management API tokens
    USAGE_VIEW = "usage.view"
    BILLING_VIEW = "billing.view"  # balance, ledger, spend
    BILLING_MANAGE = "billing.manage"  # top-ups, invoices


ROLE_PERMISSIONS: dict[str, frozenset[Perm]] = {
    Role.OWNER: frozenset(Perm),
    Role.ADMIN: frozenset(Perm) - {Perm.OWNERSHIP_TRANSFER},
    Role.DEVELOPER: frozenset({Perm.ORG_VIEW, Perm.MEMBERS_VIEW, Perm.KEYS_VIEW, Perm.KEYS_MANAGE, Perm.USAGE_VIEW}),
    Role.BILLING: frozenset(
        {Perm.ORG_VIEW, Perm.MEMBERS_VIEW, Perm.USAGE_VIEW, Perm.BILLING_VIEW, Perm.BILLING_MANAGE}
    ),
    Role.VIEWER: frozenset({Perm.ORG_VIEW, Perm.MEMBERS_VIEW, Perm.KEYS_VIEW, Perm.USAGE_VIEW, Perm.BILLING_VIEW}),
}

# Higher rank may manage lower ranks. Nobody assigns the owner role except by a transfer.
ROLE_RANK: dict[str, int] = {Role.OWNER: 4, Role.ADMIN: 3, Role.DEVELOPER: 2, Role.BILLING: 2, Role.VIEWER: 1}


def role_has(role: str, perm: Perm) -> bool:
    return perm in ROLE_PERMISSIONS.get(role, frozenset())


def role_can_assign(actor_role: str, target_role: str) -> bool:
    """Whether `actor_role` may give someone `target_role` (invite, change role, management key)."""
    if target_role == Role.OWNER or not role_has(actor_role, Perm.MEMBERS_MANAGE):
        return False
    return ROLE_RANK[target_role] <= ROLE_RANK[actor_role]


def role_can_manage_member(actor_role: str, member_role: str) -> bool:
    """Whether `actor_role` may change or remove a member who has `member_role` (never the owner)."""
    if member_role == Role.OWNER or not role_has(actor_role, Perm.MEMBERS_MANAGE):
        return False
    return ROLE_RANK[member_role] <= ROLE_RANK[actor_role]


PERM_LABELS: dict[Perm, str] = {
    Perm.ORG_VIEW: "View organisation, overview, quickstart, models",
    Perm.ORG_MANAGE: "Rename organisation, set organisation limits",
    Perm.MEMBERS_VIEW: "View members",
    Perm.MEMBERS_MANAGE: "Invite, change roles, remove members (up to own rank)",
    Perm.OWNERSHIP_TRANSFER: "Transfer ownership",
    Perm.KEYS_VIEW: "View API keys, their spend and limits",
    Perm.KEYS_MANAGE: "Create, revoke and limit API keys",
    Perm.MANAGEMENT_KEYS_MANAGE: "Create and revoke management API tokens",
    Perm.USAGE_VIEW: "View usage charts and summaries",
    Perm.BILLING_VIEW: "View balance and spend",
    Perm.BILLING_MANAGE: "Top up, invoices (billing issue)",
}


def permission_table_markdown() -> str:
    """The README table, straight from ROLE_PERMISSIONS (a test keeps the README in sync)."""
    roles = list(Role)
    lines = [
        "| Permission | " + " | ".join(r.label for r in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for perm in Perm:
        marks = " | ".join("✓" if role_has(r, perm) else "—" for r in roles)
        lines.append(f"| {PERM_LABELS[perm]} (`{perm}`) | {marks} |")
    return "\n".join(lines)
