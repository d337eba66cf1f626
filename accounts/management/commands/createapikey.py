from django.core.management.base import BaseCommand

from accounts.management.commands._lookup import find_org
from accounts.services import apikey_issue


class Command(BaseCommand):
    help = "Create an API key for an organisation; prints the secret alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("org", help="organisation name or slug")
        parser.add_argument("--name", default="", help="a label for the key")

    def handle(self, *args, org, name, **options):
        issued = apikey_issue(org=find_org(org), name=name)
        self.stdout.write(issued.secret)
