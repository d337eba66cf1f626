from django.core.management.base import BaseCommand, CommandError

from accounts.services import AmbiguousApiKeyPrefixError, ApiKeyNotFoundError, apikey_revoke


class Command(BaseCommand):
    help = "Revoke an API key given its secret or its displayed prefix; prints the prefix."

    def add_arguments(self, parser):
        parser.add_argument("key", help="the secret key or its displayed prefix")

    def handle(self, *args, key, **options):
        try:
            api_key = apikey_revoke(key_or_prefix=key)
        except (ApiKeyNotFoundError, AmbiguousApiKeyPrefixError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(api_key.prefix)
