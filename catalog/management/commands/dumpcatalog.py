import json

import yaml
from django.core.management.base import BaseCommand

from catalog.services import catalog_dump


class Command(BaseCommand):
    help = "Write the catalog in the loadcatalog format (YAML by default). Provider keys are omitted."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
        parser.add_argument("--include-secrets", action="store_true", help="include decrypted provider api_key")

    def handle(self, *args, format, include_secrets, **options):
        data = catalog_dump(include_secrets=include_secrets)
        if format == "json":
            self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            self.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), ending="")
