"""RuAPI settings.

Everything comes from the environment. With nothing set, the embedded default runs: SQLite,
in-process cache and channel layer, Celery tasks executed eagerly in-process. Setting
DATABASE_URL / REDIS_URL switches to Postgres / Redis (the production shape).
"""

from pathlib import Path

from celery.schedules import crontab
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
    "drf_spectacular_sidecar",  # Swagger UI / Redoc served locally, not from a CDN (issue 16)
    "ninja",  # /v1/docs: django-ninja serves its bundled Swagger UI only when installed as an app (else a CDN)
    "channels",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "django_htmx",
    "accounts",
    "dashboard",
    "catalog",
    "billing",
    "proxy",
    "usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "ruapi.middleware.RefuseNulInQuery",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Both are sync-and-async capable (ECOSYSTEM.md gotcha 2); /v1 never sees them (API_MIDDLEWARE).
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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
                "dashboard.context.dashboard",
                "dashboard.context.site",
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
# Threads per process that run ORM work for async code (ruapi.db.run_db); 0 = the pool's size.
RUAPI_DB_THREADS = env_int("RUAPI_DB_THREADS", 0)

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
# Redis redelivers a task whose worker died unacknowledged after this many seconds (acks_late tasks).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("RUAPI_CELERY_VISIBILITY_TIMEOUT", 3600)}
# Beat schedules live in code (exactly one beat process runs them).
CELERY_BEAT_SCHEDULE = {
    "billing-expire-holds": {"task": "billing.tasks.expire_holds", "schedule": 60.0},
    "billing-reconcile": {"task": "billing.tasks.reconcile_ledgers", "schedule": 3600.0},
    "billing-retry-stripe-events": {"task": "billing.tasks.retry_stripe_events", "schedule": 300.0},
    "billing-expire-promotions": {"task": "billing.tasks.expire_promotions", "schedule": 600.0},
    "billing-auto-recharge": {"task": "billing.tasks.run_auto_recharges", "schedule": 60.0},
    "billing-balance-alerts": {"task": "billing.tasks.check_balance_alerts", "schedule": 120.0},
    # Invoices for the previous month, on the 1st at 02:00 UTC.
    # Usage rollups (issue 6): re-aggregate from the refresh cursor (normally the previous and the
    # current hour, and today) every minute; rebuild yesterday in full nightly; purge old raw events.
    "usage-refresh-rollups": {"task": "usage.tasks.refresh_rollups", "schedule": 60.0},
    "usage-rebuild-yesterday": {"task": "usage.tasks.rebuild_previous_day", "schedule": crontab(minute=15, hour=0)},
    "usage-purge-events": {"task": "usage.tasks.purge_usage_events", "schedule": crontab(minute=30, hour=3)},
    # Stored Responses-API responses past RUAPI_RESPONSES_RETENTION_DAYS (issue 13), hourly.
    "proxy-purge-stored-responses": {"task": "proxy.tasks.purge_stored_responses", "schedule": crontab(minute=40)},
    "billing-monthly-invoices": {
        "task": "billing.tasks.generate_monthly_invoices",
        "schedule": crontab(minute=0, hour=2, day_of_month=1),
    },
}

# --- Auth ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard:overview"
# django-allauth (issue 4): email is the login, verified before first use; TOTP via allauth.mfa.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = "username"
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
# The product's name in e-mails and page titles (issue 16: never the request's host).
RUAPI_SITE_NAME = env_str("RUAPI_SITE_NAME", "RuAPI")
ACCOUNT_EMAIL_SUBJECT_PREFIX = f"[{RUAPI_SITE_NAME}] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if PRODUCTION else "http"
# Brute force: failed logins per IP and per account (allauth counts them in the cache, i.e. in
# Redis when REDIS_URL is set, so the limit holds across web processes).
ACCOUNT_RATE_LIMITS = {
    "login_failed": env_str("RUAPI_LOGIN_RATE_LIMIT", "10/m/ip,5/5m/key"),
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "confirm_email": "1/3m/key",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "RuAPI"
# Invitation links stay valid this long (seconds).
RUAPI_INVITATION_TTL = env_int("RUAPI_INVITATION_TTL", 7 * 24 * 3600)
RUAPI_MANAGEMENT_KEY_PREFIX = env_str("RUAPI_MANAGEMENT_KEY_PREFIX", "rk-ru-")

# --- Email: console on the embedded default; SMTP from EMAIL_URL or EMAIL_HOST/... --------------
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "RuAPI <no-reply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_URL = env_str("EMAIL_URL")  # smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465 (TLS)
if EMAIL_URL:
    from urllib.parse import unquote, urlparse

    _email = urlparse(EMAIL_URL)
    if _email.scheme not in {"smtp", "smtps", "submission"}:
        raise ImproperlyConfigured(f"EMAIL_URL scheme {_email.scheme!r} is not supported (smtp or smtps)")
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = _email.hostname or "localhost"
    EMAIL_PORT = _email.port or (465 if _email.scheme == "smtps" else 587)
    EMAIL_HOST_USER = unquote(_email.username or "")
    EMAIL_HOST_PASSWORD = unquote(_email.password or "")
    EMAIL_USE_SSL = _email.scheme == "smtps"
    EMAIL_USE_TLS = not EMAIL_USE_SSL
elif env_str("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = env_str("EMAIL_HOST")
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

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
    "DEFAULT_PAGINATION_CLASS": "accounts.api.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.api.auth.ManagementKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [],
    "EXCEPTION_HANDLER": "accounts.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RuAPI management API",
    "DESCRIPTION": "Organisations, members, invitations, API keys, balance and usage. Authenticate with a "
    "management key (`Authorization: Bearer rk-ru-…`) or the dashboard session.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "accounts.models.Membership.Role",
        "AssignableRoleEnum": "accounts.api.serializers.ASSIGNABLE",
    },
    # The docs page works offline: its assets come from drf-spectacular-sidecar's static files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Gateway ------------------------------------------------------------------------------
# Key for encrypting upstream provider API keys at rest (Fernet). Defaults to one derived
# from SECRET_KEY; set it explicitly so rotating SECRET_KEY does not orphan stored keys.
RUAPI_FIELD_ENCRYPTION_KEY = env_str("RUAPI_FIELD_ENCRYPTION_KEY")
# How long a process trusts its cached view of an API key / the catalog (seconds). A revoked
# key stops working on the revoking process at once and on every other process within this.
RUAPI_KEY_CACHE_TTL = env_float("RUAPI_KEY_CACHE_TTL", 5.0)
RUAPI_CATALOG_CACHE_TTL = env_float("RUAPI_CATALOG_CACHE_TTL", 5.0)
# With REDIS_URL, each process checks the catalog version key at most this often (catalog/snapshot.py).
RUAPI_CATALOG_VERSION_CHECK_INTERVAL = env_float("RUAPI_CATALOG_VERSION_CHECK_INTERVAL", 1.0)
# Router circuit breaker (proxy/router.py, per process): this many consecutive failures open a
# route for the cool-down, then one probe request may try it again (half-open).
RUAPI_ROUTE_FAILURE_THRESHOLD = env_int("RUAPI_ROUTE_FAILURE_THRESHOLD", 3)
RUAPI_ROUTE_COOLDOWN_SECONDS = env_float("RUAPI_ROUTE_COOLDOWN_SECONDS", 30.0)
# With REDIS_URL (proxy/router.py SharedRouter): how often each process reads the shared set of open
# circuits, and how long a route concurrency lease lives if its process dies without returning it.
RUAPI_ROUTE_STATE_CHECK_INTERVAL = env_float("RUAPI_ROUTE_STATE_CHECK_INTERVAL", 0.5)
RUAPI_ROUTE_SLOT_LEASE_SECONDS = env_float("RUAPI_ROUTE_SLOT_LEASE_SECONDS", 600.0)
# Operations (issue 17, ruapi/observability.py, ruapi/lifecycle.py).
RUAPI_METRICS_TOKEN = env_str("RUAPI_METRICS_TOKEN") or ""
RUAPI_REQUEST_LOG = env_bool("RUAPI_REQUEST_LOG", False)
RUAPI_OTEL_ENABLED = env_bool("RUAPI_OTEL_ENABLED", False)
RUAPI_SHUTDOWN_GRACE_SECONDS = env_float("RUAPI_SHUTDOWN_GRACE_SECONDS", 25.0)
RUAPI_MAX_BODY_BYTES = env_int("RUAPI_MAX_BODY_BYTES", 32 * 1024 * 1024)
RUAPI_UPSTREAM_CONNECT_TIMEOUT = env_float("RUAPI_UPSTREAM_CONNECT_TIMEOUT", 10.0)
RUAPI_UPSTREAM_READ_TIMEOUT = env_float("RUAPI_UPSTREAM_READ_TIMEOUT", 300.0)
RUAPI_MAX_UPSTREAM_RESPONSE_BYTES = env_int("RUAPI_MAX_UPSTREAM_RESPONSE_BYTES", 64 * 1024 * 1024)
# Upstream reply size caps (proxy/upstreams/http.py): a non-streamed chat/JSON body (the media cap
# above applies to images and audio), and one SSE event of a stream; beyond either, a 502 / stream error.
RUAPI_UPSTREAM_MAX_BODY_BYTES = env_int("RUAPI_UPSTREAM_MAX_BODY_BYTES", 32 * 1024 * 1024)
RUAPI_UPSTREAM_MAX_EVENT_BYTES = env_int("RUAPI_UPSTREAM_MAX_EVENT_BYTES", 16 * 1024 * 1024)
# Slow and idle clients (ruapi/server.py, the uvicorn protocol): a request head must be complete
# within RUAPI_HEADER_TIMEOUT seconds of the connection / of its first byte and be at most
# RUAPI_MAX_HEADER_BYTES (431 beyond); a request body must keep arriving — at least
# RUAPI_BODY_MIN_RATE x RUAPI_BODY_TIMEOUT bytes (or its end) in every RUAPI_BODY_TIMEOUT seconds.
RUAPI_HEADER_TIMEOUT = env_float("RUAPI_HEADER_TIMEOUT", 10.0)
RUAPI_MAX_HEADER_BYTES = env_int("RUAPI_MAX_HEADER_BYTES", 64 * 1024)
RUAPI_BODY_TIMEOUT = env_float("RUAPI_BODY_TIMEOUT", 30.0)
RUAPI_BODY_MIN_RATE = env_int("RUAPI_BODY_MIN_RATE", 1024)
# Reverse proxies whose X-Forwarded-For is believed (ruapi/server.py): addresses or CIDR networks,
# comma-separated. Empty (the default): none, the client address is always the TCP peer — whatever
# uvicorn's --forwarded-allow-ips says (issue 12: loopback was trusted by default).
RUAPI_TRUSTED_PROXIES = env_list("RUAPI_TRUSTED_PROXIES", [])
# Seconds of upstream silence after which a stream gets a keep-alive (SSE comment / A ping); 0 = off.
RUAPI_STREAM_KEEPALIVE_SECONDS = env_float("RUAPI_STREAM_KEEPALIVE_SECONDS", 15.0)
# Retry-After sent on rate limits / overload when the upstream gave none (PROTOCOLS §5.4).
RUAPI_DEFAULT_RETRY_AFTER = env_int("RUAPI_DEFAULT_RETRY_AFTER", 1)
# SSRF guard: upstream URLs on link-local addresses (cloud metadata) are refused unless this is on.
RUAPI_UPSTREAM_ALLOW_LINK_LOCAL = env_bool("RUAPI_UPSTREAM_ALLOW_LINK_LOCAL", False)
RUAPI_KEY_PREFIX = env_str("RUAPI_KEY_PREFIX", "sk-ru-")
# The gateway's public base URL for snippets and emailed links; empty: derived from the request's host.
RUAPI_PUBLIC_BASE_URL = env_str("RUAPI_PUBLIC_BASE_URL", "")
# Rate limits and spend caps (proxy/limits.py): how long a monthly-spend figure read from the
# usage events is trusted, and how often a process checks Redis for key revocations/changes.
RUAPI_SPEND_CACHE_TTL = env_float("RUAPI_SPEND_CACHE_TTL", 5.0)
RUAPI_KEY_VERSION_CHECK_INTERVAL = env_float("RUAPI_KEY_VERSION_CHECK_INTERVAL", 1.0)
# Brute force on gateway keys (proxy/auththrottle.py): a client address that presented this many
# invalid keys within one window of RUAPI_AUTH_FAIL_WINDOW seconds gets 429 + Retry-After for the
# rest of the window, without a lookup, whatever key it sends. 0 turns the throttle off.
RUAPI_AUTH_FAIL_LIMIT = env_int("RUAPI_AUTH_FAIL_LIMIT", 20)
RUAPI_AUTH_FAIL_WINDOW = env_float("RUAPI_AUTH_FAIL_WINDOW", 60.0)
# A hold expires (and is released by a task) after this many seconds.
RUAPI_HOLD_TTL = env_int("RUAPI_HOLD_TTL", 3600)
# Holds and settlements of the server's requests batched into one Postgres statement each per
# event loop (billing/services/holds_pg.py); off = the same statements one request at a time
# through the ORM thread pool (run_db). SQLite always uses the ORM backend.
RUAPI_BATCHED_LEDGER = env_bool("RUAPI_BATCHED_LEDGER", True)
# Optimistic admission (proxy/metering.py, issue 15): a chat/messages/responses request starts its
# upstream call while its hold is written when its organisation's available funds, as this process
# last saw them at most MAX_AGE seconds ago and less its optimistic holds still being written, are at
# least FACTOR times the hold. The database still decides: a refused hold answers 402 before any byte
# of the answer, debiting nothing (the reseller absorbs that upstream call). FACTOR 0 turns it off.
RUAPI_OPTIMISTIC_HOLD_FACTOR = env_float("RUAPI_OPTIMISTIC_HOLD_FACTOR", 20.0)
RUAPI_OPTIMISTIC_HOLD_MAX_AGE = env_float("RUAPI_OPTIMISTIC_HOLD_MAX_AGE", 1.0)
# A complete (non-streamed) answer is sent while its settlement commits (proxy/metering.py, issue 15):
# the settlement's round trip leaves a lone request's latency. A process or database crash in the
# millisecond between the answer's last byte and the commit leaves that request unbilled (its hold is
# released on expiry; nothing is overdrawn). On: every debit is durable before the answer's last byte.
RUAPI_SETTLE_BEFORE_RESPONSE = env_bool("RUAPI_SETTLE_BEFORE_RESPONSE", False)
# Usage (issue 6): raw usage events are deleted after this many days; rollups are kept forever.
RUAPI_USAGE_EVENT_RETENTION_DAYS = env_int("RUAPI_USAGE_EVENT_RETENTION_DAYS", 90)
# Responses API (issue 13): a stored response (store != false) is kept this many days, then it no
# longer answers GET / previous_response_id / item_reference and is deleted by the hourly task.
RUAPI_RESPONSES_RETENTION_DAYS = env_int("RUAPI_RESPONSES_RETENTION_DAYS", 30)
# Test hook only: seconds each rollup bucket rebuild sleeps before committing (the SIGKILL test).
RUAPI_USAGE_TEST_BUCKET_DELAY = env_float("RUAPI_USAGE_TEST_BUCKET_DELAY", 0.0)

DATA_UPLOAD_MAX_MEMORY_SIZE = RUAPI_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = RUAPI_MAX_BODY_BYTES

STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
if PRODUCTION and env_str("STRIPE_SECRET_KEY") and not STRIPE_WEBHOOK_SECRET:
    # Fail closed: with Stripe on, an unverifiable webhook endpoint would accept forged credits.
    raise ImproperlyConfigured("STRIPE_WEBHOOK_SECRET must be set when STRIPE_SECRET_KEY is (RUAPI_PRODUCTION=1)")
STRIPE_API_BASE = env_str("STRIPE_API_BASE")
# Billing (issue 5). Without STRIPE_SECRET_KEY top-ups and auto-recharge say that Stripe is off.
STRIPE_CURRENCY = "usd"  # balances are USD; Stripe amounts are integer cents at the edge only
STRIPE_WEBHOOK_TOLERANCE = env_int("STRIPE_WEBHOOK_TOLERANCE", 300)  # seconds a signature stays valid
STRIPE_MAX_NETWORK_RETRIES = env_int("STRIPE_MAX_NETWORK_RETRIES", 2)
RUAPI_BRAND_NAME = env_str("RUAPI_BRAND_NAME", "RuAPI")
RUAPI_TOPUP_MIN_USD = env_str("RUAPI_TOPUP_MIN_USD", "5")
RUAPI_TOPUP_MAX_USD = env_str("RUAPI_TOPUP_MAX_USD", "10000")
RUAPI_INVOICE_PREFIX = env_str("RUAPI_INVOICE_PREFIX", "RU")
RUAPI_TAX_NAME = env_str("RUAPI_TAX_NAME", "VAT")
RUAPI_TAX_RATE_PERCENT = env_str("RUAPI_TAX_RATE_PERCENT", "0")  # included in top-ups, shown on invoices
RUAPI_SELLER_NAME = env_str("RUAPI_SELLER_NAME", "RuAPI operator")
RUAPI_SELLER_ADDRESS = env_str("RUAPI_SELLER_ADDRESS", "")
RUAPI_SELLER_TAX_ID = env_str("RUAPI_SELLER_TAX_ID", "")

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # RUAPI_SECURE_SSL_REDIRECT=0: no redirect to https, for a server reached over plain HTTP on localhost
    # (docker-compose.yml's default) or behind a TLS proxy that redirects itself. SECURE_SSL_REDIRECT: old name.
    SECURE_SSL_REDIRECT = env_bool("RUAPI_SECURE_SSL_REDIRECT", env_bool("SECURE_SSL_REDIRECT", True))
    if not SECURE_SSL_REDIRECT:
        SILENCED_SYSTEM_CHECKS = ["security.W008"]  # the operator turned it off on purpose
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "message": {"format": "%(message)s"},  # the request log's lines are JSON objects already
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "requests": {"class": "logging.StreamHandler", "formatter": "message", "stream": "ext://sys.stdout"},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # One JSON line per /v1 request on stdout when RUAPI_REQUEST_LOG=1 (ruapi/observability.py).
        "ruapi.request": {"handlers": ["requests"], "level": "INFO", "propagate": False},
    },
}
