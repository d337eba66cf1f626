from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Membership, Organization
from accounts.services import org_create
from billing.money import MoneyError, usd_to_nanos
from billing.services import balance_credit, balance_ensure


class Command(BaseCommand):
    help = "Create an organisation (idempotent by name); prints its slug."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--owner-email", help="make this user (created if needed) the owner")
        parser.add_argument("--credit", help="initial credit in USD, e.g. 10 or 2.50 (only when the org is new)")

    @transaction.atomic
    def handle(self, *args, name, owner_email=None, credit=None, **options):
        credit_nanos = 0
        if credit is not None:
            try:
                credit_nanos = usd_to_nanos(Decimal(credit))
            except (InvalidOperation, MoneyError) as exc:
                raise CommandError(f"--credit must be a USD amount, got {credit!r}") from exc
            if credit_nanos < 0:
                raise CommandError("--credit cannot be negative")
        org = Organization.objects.filter(name=name).first()
        if org is None:
            org = org_create(name=name)
            balance_ensure(org_id=org.id)
            if credit_nanos:
                balance_credit(
                    org_id=org.id, amount_nanos=credit_nanos, kind="promo",
                    description="Initial credit", created_by="createorg",
                )  # fmt: skip
        if owner_email:
            user_model = get_user_model()
            user = user_model.objects.filter(email__iexact=owner_email).first()
            if user is None:
                user = user_model.objects.create_user(username=owner_email, email=owner_email)
            Membership.objects.update_or_create(org=org, user=user, defaults={"role": Membership.Role.OWNER})
        self.stdout.write(org.slug)
