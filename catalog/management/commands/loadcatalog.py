import json
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError

from catalog.services import CatalogError, catalog_load


class Command(BaseCommand):
    help = "Upsert providers and models from a YAML or JSON catalog file (by name)."

    def add_arguments(self, parser):
        parser.add_argument("file")

    def handle(self, *args, file, **options):
        path = Path(file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from exc
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise CommandError(f"{file} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
        try:
            result = catalog_load(data)
        except CatalogError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"providers: {len(result.providers_created)} created, {len(result.providers_updated)} updated; "
            f"models: {len(result.models_created)} created, {len(result.models_updated)} updated; "
            f"prices changed: {len(result.prices_changed)}"
        )
