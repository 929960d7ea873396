"""Tally settings: one module, driven by environment variables.

Every variable read here is listed in the README's configuration table.

* Embedded default (nothing set): SQLite under ``var/``, the in-memory channel layer, no broker;
  periodic work runs on an in-process timer (``console.background``).
* Scalable mode: ``DATABASE_URL`` (Postgres) and ``REDIS_URL`` switch to Postgres, the Redis channel
  layer and a Celery broker with worker and beat processes.
* Production: ``TALLY_PRODUCTION=1`` turns debug off, requires ``SECRET_KEY`` and enables the secure
  cookie, HSTS and redirect settings that ``manage.py check --deploy`` asks for.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name)
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str) -> str:
    """Read NAME, or the file named by NAME_FILE (systemd credentials, Docker secrets)."""
    path = env_str(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc}") from None
    return env_str(name)


VAR_DIR = Path(env_str("TALLY_VAR_DIR") or BASE_DIR / "var")
PRODUCTION = env_bool("TALLY_PRODUCTION")
DEBUG = False if PRODUCTION else env_bool("DEBUG")

SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when TALLY_PRODUCTION=1")
    # Embedded default: a per-checkout key kept under var/ so sessions survive restarts.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

# Fernet keys for server credentials at rest; the first encrypts, all decrypt (rotation).
# Empty: derived from SECRET_KEY (changing SECRET_KEY then makes stored credentials unreadable).
ENCRYPTION_KEYS = env_list("TALLY_ENCRYPTION_KEYS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# How nginx-rtmp servers reach this console for callbacks (rendered into their configs).
CALLBACK_BASE_URL = env_str("TALLY_CALLBACK_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Publish brute-force protection: this many failed publishes from one address within the window
# block it for PUBLISH_BLOCK_S seconds, answered without a database lookup.
PUBLISH_FAIL_LIMIT = env_int("TALLY_PUBLISH_FAIL_LIMIT", 10)
PUBLISH_FAIL_WINDOW_S = env_int("TALLY_PUBLISH_FAIL_WINDOW_S", 60)
PUBLISH_BLOCK_S = env_int("TALLY_PUBLISH_BLOCK_S", 300)
# Timeout of calls to an nginx-rtmp control module (kick on revoke): the admin waits for it.
CONTROL_TIMEOUT_S = float(env_int("TALLY_CONTROL_TIMEOUT_MS", 2000)) / 1000
# nginx sends its callbacks with the callback URL's host in the Host header: always accept it.
_callback_host = CALLBACK_BASE_URL.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
if _callback_host and _callback_host not in ALLOWED_HOSTS and "*" not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_callback_host)
# The address the audit log records: REMOTE_ADDR, or the first X-Forwarded-For hop behind a proxy.
USE_X_FORWARDED_FOR = env_bool("TALLY_USE_X_FORWARDED_FOR")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "console",
    "streams",
    "monitoring",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"
ASGI_APPLICATION = "console.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "frontend.context.role",
            ],
        },
    },
]

DATABASE_URL = env_secret("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL")
    # A psycopg pool per process reuses connections across requests and threads (under ASGI each request
    # has a thread of its own). A request waits at most 3 s for a connection, so when PostgreSQL is down
    # the nginx-rtmp callbacks still answer well within nginx's 10 s (see streams.hooks).
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True}
    if env_bool("TALLY_DB_PERSISTENT"):
        # One connection per process, kept across requests: for the web workers, each serving one
        # request at a time (deploy/systemd/tally-web.service); a pool's checkout and return cost about
        # a tenth of a publish decision. A connection attempt gives up after 3 s, as the pool's wait does.
        DATABASES["default"]["CONN_MAX_AGE"] = 600
        DATABASES["default"]["OPTIONS"]["connect_timeout"] = 3
    else:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 2, "max_size": env_int("TALLY_DB_POOL_SIZE", 10), "timeout": 3
        }  # fmt: skip
    # Session state on the database connections: prepared statements, and the publish callback's
    # function with its cached plan (streams.hotpath). TALLY_DB_PREPARE=0 behind PgBouncer in
    # transaction mode, which cannot keep either.
    DB_SESSION_STATE = env_bool("TALLY_DB_PREPARE", True)
    if DB_SESSION_STATE:
        # A statement run 5 times on a connection is prepared: parsed once, yet still planned for each
        # run's values (a generic plan, chosen while the statistics lagged behind a fast-growing
        # sessions table, scanned every open session).
        DATABASES["default"]["OPTIONS"].update(prepare_threshold=5, options="-c plan_cache_mode=force_custom_plan")
else:
    DB_SESSION_STATE = False
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "tally.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_secret("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    CELERY_BROKER_URL = REDIS_URL
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = ""
# Periodic work runs in Celery beat + worker with a broker, on an in-process timer without one.
BACKGROUND_IN_PROCESS = env_bool("TALLY_BACKGROUND_IN_PROCESS", default=not CELERY_BROKER_URL)

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
HEARTBEAT_INTERVAL_S = env_int("TALLY_HEARTBEAT_INTERVAL_S", 30)
POLL_INTERVAL_S = env_int("TALLY_POLL_INTERVAL_S", 5)
POLL_CONCURRENCY = env_int("TALLY_POLL_CONCURRENCY", 200)  # servers polled at once by one worker
HEALTH_DOWN_AFTER = env_int("TALLY_HEALTH_DOWN_AFTER", 3)  # failed polls in a row: degraded, then down
HEALTH_UP_AFTER = env_int("TALLY_HEALTH_UP_AFTER", 2)  # good polls in a row to be up again after down
RELOAD_GRACE_S = env_int("TALLY_RELOAD_GRACE_S", 30)  # a stream with an open callback session may be absent
HISTORY_SAMPLES_HOURS = env_int("TALLY_HISTORY_SAMPLES_HOURS", 48)
HISTORY_ROLLUP_DAYS = env_int("TALLY_HISTORY_ROLLUP_DAYS", 90)
ALERT_TICK_S = env_int("TALLY_ALERT_TICK_S", 2)  # how often alert conditions are evaluated and notices sent
ALERT_EMAILS = env_list("TALLY_ALERT_EMAILS", [])  # recipients of every alert, besides rules and subscribers
ALERT_REMIND_S = env_int("TALLY_ALERT_REMIND_S", 900)  # first reminder of an open alert; then doubling, ≤ 24 h
DELIVERY_LEASE_S = env_int("TALLY_DELIVERY_LEASE_S", 60)  # a claimed notice is sent again after this if unsent
DELIVERY_RETRY_S = env_int("TALLY_DELIVERY_RETRY_S", 5)  # first retry of a failed notice; then doubling
DELIVERY_RETRY_MAX_S = env_int("TALLY_DELIVERY_RETRY_MAX_S", 300)
# Where nginx hosts see the console come from: rendered configs allow /stat and /control to these only.
CONSOLE_ADDRESSES = env_list("TALLY_CONSOLE_ADDRESSES", ["127.0.0.1"])
CONSOLE_URL = env_str("TALLY_CONSOLE_URL", CALLBACK_BASE_URL).rstrip("/")  # links in notices
# Outgoing e-mail (alerts): Django's SMTP backend.
EMAIL_BACKEND = env_str("TALLY_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("TALLY_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("TALLY_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("TALLY_EMAIL_USER")
EMAIL_HOST_PASSWORD = env_secret("TALLY_EMAIL_PASSWORD")
EMAIL_USE_TLS = env_bool("TALLY_EMAIL_STARTTLS")
EMAIL_USE_SSL = env_bool("TALLY_EMAIL_SSL")
EMAIL_TIMEOUT = env_int("TALLY_EMAIL_TIMEOUT_S", 10)
DEFAULT_FROM_EMAIL = env_str("TALLY_EMAIL_FROM", "tally@localhost")
# Wowza publisher entries follow the keys: revoked/expired ones are deleted, lost ones re-created.
WOWZA_SYNC_S = env_int("TALLY_WOWZA_SYNC_S", 60)
CELERY_BEAT_SCHEDULE = {
    "console.heartbeat": {"task": "console.heartbeat", "schedule": float(HEARTBEAT_INTERVAL_S)},
    "monitoring.poll_all": {"task": "monitoring.poll_all", "schedule": float(POLL_INTERVAL_S)},
    "monitoring.roll_up": {"task": "monitoring.roll_up", "schedule": 60.0},
    "monitoring.prune": {"task": "monitoring.prune", "schedule": 3600.0},
    "monitoring.evaluate_alerts": {"task": "monitoring.evaluate_alerts", "schedule": float(ALERT_TICK_S)},
    "monitoring.send_notices": {"task": "monitoring.send_notices", "schedule": float(ALERT_TICK_S)},
    "streams.deploy_jobs": {"task": "streams.deploy_jobs", "schedule": 5.0},
    "streams.sync_wowza": {"task": "streams.sync_wowza", "schedule": float(WOWZA_SYNC_S)},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.finders.PlotlyFinder",  # vendor/plotly.min.js from the plotly package
]
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Outside production, whitenoise serves straight from the apps' static folders (no collectstatic).
WHITENOISE_USE_FINDERS = not PRODUCTION
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing root

# Request bodies above this size get a 400 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TALLY_MAX_BODY_BYTES", 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "console.tokens.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["console.roles.RolePermission"],
    "DEFAULT_PARSER_CLASSES": ["console.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "console.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "console.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tally API",
    "DESCRIPTION": "Inventory, publish keys and fleet state of nginx-rtmp and Wowza streaming servers.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Choice sets that several fields share, or that share a field name: one stable enum name each.
    "ENUM_NAME_OVERRIDES": {
        "ReloadModeEnum": "streams.models.Server.ReloadMode",
        "ConfigRevisionStatusEnum": "streams.models.ConfigRevision.Status",
        "DeliveryStatusEnum": "monitoring.models.Delivery.Status",
    },
}

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("TALLY_SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env_int("TALLY_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("TALLY_HSTS_PRELOAD", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # nginx-rtmp calls back over plain HTTP and would read a redirect to https as "rename the stream".
    SECURE_REDIRECT_EXEMPT = [r"^hooks/", r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    # httpx logs every request at INFO: one line per server per poll.
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
