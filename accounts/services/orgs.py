"""Every write to organisations: creation, settings and organisation-level limits."""

import secrets

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from accounts import keycache
from accounts.models import Membership, Organization
from accounts.services.errors import OrganizationNameTakenError, ValidationError
from billing.services import balance_ensure


def _unique_slug(base: str) -> str:
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def org_create(*, name: str, slug: str | None = None, owner=None) -> Organization:
    """Create an organisation with its zero balance; `owner` (a user) becomes its owner."""
    name = name.strip()
    if not name:
        raise ValidationError("An organisation needs a name", field="name")
    if len(name) > 200:
        raise ValidationError("At most 200 characters", field="name")
    slug = slug or slugify(name)[:190] or secrets.token_hex(4)
    try:
        with transaction.atomic():
            org = Organization.objects.create(name=name, slug=_unique_slug(slug))
            if owner is not None:
                Membership.objects.create(org=org, user=owner, role=Membership.Role.OWNER)
            balance_ensure(org_id=org.id)
    except IntegrityError as exc:
        raise OrganizationNameTakenError(f"An organisation named {name!r} already exists", field="name") from exc
    return org


def org_update(
    *,
    org: Organization,
    name: str | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    monthly_spend_cap_nanos: int | None = None,
    set_limits: bool = False,
) -> Organization:
    """Rename and/or replace the organisation-level limits (None: no limit, when set_limits)."""
    fields = []
    if name is not None:
        name = name.strip()
        if not name or len(name) > 200:
            raise ValidationError("A name of 1 to 200 characters", field="name")
        if Organization.objects.filter(name=name).exclude(pk=org.pk).exists():
            raise OrganizationNameTakenError(f"An organisation named {name!r} already exists", field="name")
        org.name = name
        fields.append("name")
    if set_limits:
        for field, value in (
            ("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit), ("monthly_spend_cap_nanos", monthly_spend_cap_nanos)
        ):  # fmt: skip
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValidationError("must be a whole number of at least 0", field=field)
            setattr(org, field, value)
            fields.append(field)
    if fields:
        try:
            with transaction.atomic():
                org.save(update_fields=fields)
        except IntegrityError as exc:
            raise OrganizationNameTakenError("That name is taken", field="name") from exc
        if set_limits:
            # Every key of the org carries the org's limits in its cached KeyContext.
            transaction.on_commit(lambda: keycache.publish_change(None))
    return org


def org_set_active(*, org: Organization, is_active: bool) -> Organization:
    """Activate or deactivate an organisation; its keys stop (or start) working like a revocation
    (at once here, within ~1 s on every process with Redis: accounts/keycache.py)."""
    if org.is_active != is_active:
        Organization.objects.filter(pk=org.pk).update(is_active=is_active)
        org.is_active = is_active
    transaction.on_commit(lambda: keycache.publish_change(None))
    return org
