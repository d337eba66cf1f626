from django.core.management.base import BaseCommand, CommandError

from billing.money import nanos_to_usd
from billing.services import ledger_reconcile


class Command(BaseCommand):
    help = "Check that every balance equals its ledger sum; exits non-zero naming those that differ."

    def handle(self, *args, **options):
        drifts = ledger_reconcile()
        if drifts:
            lines = [
                f"{d.org_name}: balance {nanos_to_usd(d.balance_nanos)} != ledger {nanos_to_usd(d.ledger_nanos)}"
                for d in drifts
            ]
            raise CommandError("Balances differ from their ledgers:\n" + "\n".join(lines))
        self.stdout.write("ok")
