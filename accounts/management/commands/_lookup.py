from django.core.management.base import CommandError
from django.db.models import Q

from accounts.models import Organization


def find_org(name_or_slug: str) -> Organization:
    """An organisation by name or slug, or a CommandError naming what was not found."""
    org = Organization.objects.filter(Q(name=name_or_slug) | Q(slug=name_or_slug)).first()
    if org is None:
        raise CommandError(f"No organisation named {name_or_slug!r}")
    return org
