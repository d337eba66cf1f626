from django.core.management.base import BaseCommand

from accounts.management.commands._lookup import find_org
from billing.money import nanos_to_usd
from billing.services import balance_get


class Command(BaseCommand):
    help = "Print an organisation's balance in USD (a plain decimal number)."

    def add_arguments(self, parser):
        parser.add_argument("org", help="organisation name or slug")

    def handle(self, *args, org, **options):
        balance = balance_get(org_id=find_org(org).id)
        self.stdout.write(f"{nanos_to_usd(balance.balance_nanos).normalize():f}")
