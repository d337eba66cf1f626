from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from accounts.management.commands._lookup import find_org
from billing.money import MoneyError, nanos_to_usd, usd_to_nanos
from billing.services import BillingError, balance_get
from billing.services.credits import credit_add


class Command(BaseCommand):
    help = (
        "Credit an existing organisation (a ledger adjustment with actor and reason, and an audit entry); "
        "prints the new balance in USD (a plain decimal number). A negative amount debits."
    )

    def add_arguments(self, parser):
        parser.add_argument("org", help="organisation name or slug")
        parser.add_argument("amount", help="USD, e.g. 25 or 12.50")
        parser.add_argument("--reason", required=True, help="why (kept on the ledger entry and in the audit log)")
        parser.add_argument("--actor", default="manage.py credit", help="who, for the ledger (default: the command)")
        parser.add_argument("--promo", action="store_true", help="promotional credit instead of an adjustment")
        parser.add_argument("--expires", help="promotional credit only: expiry, ISO 8601 (UTC if no offset)")

    def handle(self, *args, org, amount, reason, actor, promo, expires, **options):
        organisation = find_org(org)
        try:
            amount_nanos = usd_to_nanos(amount.strip())
        except MoneyError as exc:
            raise CommandError(f"not an amount in USD: {amount!r}") from exc
        expires_at = None
        if expires:
            try:
                expires_at = datetime.fromisoformat(expires)
            except ValueError as exc:
                raise CommandError(f"not an ISO 8601 time: {expires!r}") from exc
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
        try:
            credit_add(org=organisation, amount_nanos=amount_nanos, reason=reason, actor=actor, promo=promo,
                       expires_at=expires_at)  # fmt: skip
        except BillingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{nanos_to_usd(balance_get(org_id=organisation.id).balance_nanos).normalize():f}")
