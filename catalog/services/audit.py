"""The catalog's audit log and change publication."""

from django.db import transaction

from catalog import snapshot
from catalog.models import AuditEntry


def catalog_changed() -> None:
    """Publish a catalog write once it commits (snapshot rebuild here, version bump for the others)."""
    transaction.on_commit(snapshot.catalog_publish_change)


def _actor_label(actor) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return getattr(actor, "email", "") or getattr(actor, "username", "") or str(actor.pk)


def audit_record(*, actor, action: str, target, before: dict | None = None, after: dict | None = None) -> AuditEntry:
    """Append one audit entry. `actor` is a user, a label ("loadcatalog") or None; never pass secrets."""
    user = actor if getattr(actor, "pk", None) is not None and not isinstance(actor, str) else None
    return AuditEntry.objects.create(
        actor=user,
        actor_label=_actor_label(actor)[:200],
        action=action,
        target_type=target._meta.model_name,
        target_id=str(target.pk or ""),
        target_repr=str(target)[:200],
        before=before,
        after=after,
    )
