"""Test settings: the same as production-shaped settings, with fast hashing and local email."""

from ruapi.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# A request's key/catalog cache would hide the per-test database reset; tests invalidate
# explicitly where they rely on caching.
RUAPI_KEY_CACHE_TTL = 0.0
RUAPI_CATALOG_CACHE_TTL = 0.0
