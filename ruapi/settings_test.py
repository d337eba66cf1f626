"""Test settings: the same as production-shaped settings, with fast hashing and local email."""

from ruapi.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# A request's key/catalog cache would hide the per-test database reset; tests invalidate
# explicitly where they rely on caching.
RUAPI_KEY_CACHE_TTL = 0.0
RUAPI_CATALOG_CACHE_TTL = 0.0

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    import os
    import tempfile

    # One file per test process: concurrent runs must not share (and recreate) one database file.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"ruapi-test-{os.getpid()}.sqlite3")
    }
