"""RuAPI settings.

Everything comes from the environment. With nothing set, the embedded default runs: SQLite,
in-process cache and channel layer, Celery tasks executed eagerly in-process. Setting
DATABASE_URL / REDIS_URL switches to Postgres / Redis (the production shape).
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ruapi.env import database_from_url, env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("RUAPI_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
_INSECURE_DEV_KEY = "ruapi-embedded-default-insecure-key-change-me"
SECRET_KEY = env_str("SECRET_KEY") or (_INSECURE_DEV_KEY if DEBUG or env_bool("RUAPI_EMBEDDED", True) else "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
PRODUCTION = env_bool("RUAPI_PRODUCTION", False)

if PRODUCTION:
    # Fail closed: production must be configured explicitly (STYLE.md, Settings).
    if not env_str("SECRET_KEY") or SECRET_KEY == _INSECURE_DEV_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set in production (RUAPI_PRODUCTION=1)")
    if not env_str("ALLOWED_HOSTS"):
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production (RUAPI_PRODUCTION=1)")
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off in production")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "accounts",
    "catalog",
    "billing",
    "proxy",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The public /v1 API is served by its own handler with this (async-only) stack: the dashboard
# middleware above is sync-style and would cost a thread hop each on every proxied request.
API_MIDDLEWARE: list[str] = []

ROOT_URLCONF = "ruapi.urls"
ASGI_APPLICATION = "ruapi.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'ruapi.sqlite3'}"
DATABASES = {"default": database_from_url(DATABASE_URL, pool_size=env_int("DATABASE_POOL_SIZE", 10))}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": env_str("RUAPI_TEST_SQLITE", str(VAR_DIR / "test.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, Celery broker ---------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
# Embedded default: no broker server, tasks run in-process.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Beat schedules live in code (exactly one beat process runs them).
CELERY_BEAT_SCHEDULE = {
    "billing-expire-holds": {"task": "billing.tasks.expire_holds", "schedule": 60.0},
    "billing-reconcile": {"task": "billing.tasks.reconcile_ledgers", "schedule": 3600.0},
}

# --- Auth ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic's target in production (served by servestatic); in development the finders serve.
STATIC_ROOT = env_str("STATIC_ROOT") or None
SERVESTATIC_USE_FINDERS = not PRODUCTION

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {"TITLE": "RuAPI management API", "VERSION": "1.0.0"}

# --- Gateway ------------------------------------------------------------------------------
# Key for encrypting upstream provider API keys at rest (Fernet). Defaults to one derived
# from SECRET_KEY; set it explicitly so rotating SECRET_KEY does not orphan stored keys.
RUAPI_FIELD_ENCRYPTION_KEY = env_str("RUAPI_FIELD_ENCRYPTION_KEY")
# How long a process trusts its cached view of an API key / the catalog (seconds). A revoked
# key stops working on the revoking process at once and on every other process within this.
RUAPI_KEY_CACHE_TTL = env_float("RUAPI_KEY_CACHE_TTL", 5.0)
RUAPI_CATALOG_CACHE_TTL = env_float("RUAPI_CATALOG_CACHE_TTL", 5.0)
RUAPI_MAX_BODY_BYTES = env_int("RUAPI_MAX_BODY_BYTES", 32 * 1024 * 1024)
RUAPI_UPSTREAM_CONNECT_TIMEOUT = env_float("RUAPI_UPSTREAM_CONNECT_TIMEOUT", 10.0)
RUAPI_UPSTREAM_READ_TIMEOUT = env_float("RUAPI_UPSTREAM_READ_TIMEOUT", 300.0)
RUAPI_MAX_UPSTREAM_RESPONSE_BYTES = env_int("RUAPI_MAX_UPSTREAM_RESPONSE_BYTES", 64 * 1024 * 1024)
RUAPI_KEY_PREFIX = env_str("RUAPI_KEY_PREFIX", "sk-ru-")
RUAPI_PUBLIC_BASE_URL = env_str("RUAPI_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
# A hold expires (and is released by a task) after this many seconds.
RUAPI_HOLD_TTL = env_int("RUAPI_HOLD_TTL", 3600)

DATA_UPLOAD_MAX_MEMORY_SIZE = RUAPI_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = RUAPI_MAX_BODY_BYTES

STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env_str("STRIPE_API_BASE")

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
