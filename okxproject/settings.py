"""Settings for okx-candles, every one of them read from the environment.

Each variable has a working local default and a line in `.env.example`. A `.env` file next to
`manage.py` is read first when present; variables already set in the environment win over it.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv
from kombu import Queue

from okxproject.env import env_bool, env_choice, env_float, env_int, env_list, env_str
from okxproject.keys import Keys
from okxproject.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env", override=False)

DEBUG = env_bool("DEBUG", True)

SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off. Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    # Only for local development: a fixed key keeps sessions valid across restarts of `make run`.
    SECRET_KEY = "dev-insecure-okx-candles-local-only"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
if not DEBUG and not env_str("ALLOWED_HOSTS", ""):
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS must be set when DEBUG is off: the host names this site answers to, comma-separated"
    )

# --- HTTPS -----------------------------------------------------------------------------------------
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto: redirect http to https, secure cookies, HSTS.
BEHIND_TLS = env_bool("BEHIND_TLS", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
if BEHIND_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Probes and Prometheus inside the network may speak plain http to the app.
    SECURE_REDIRECT_EXEMPT = [r"^api/v1/health(/live)?$", r"^api/v1/metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    # Whether every subdomain is https-only, and whether to ask browsers to preload HSTS, are decisions about
    # the operator's domain, not the app: off by default, and `check --deploy` is not asked to nag about them.
    SILENCED_SYSTEM_CHECKS = [
        *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
        *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
    ]

INSTALLED_APPS = [
    "collectors.apps.OkxAdminConfig",  # django.contrib.admin with the pipeline dashboard as its index
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "corsheaders",
    "django_celery_beat",
    "candles",
    "collectors",
]

MIDDLEWARE = [
    # First, so every response carries X-Request-ID and every log line of the request its id.
    "okxproject.request_id.RequestIdMiddleware",
    # Before anything that may answer on its own (CORS headers must be on those answers too).
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "okxproject.urls"
# A failed CSRF check under /api/ answers with the API's error envelope (elsewhere Django's page).
CSRF_FAILURE_VIEW = "okxproject.api_errors.csrf_failure"
WSGI_APPLICATION = "okxproject.wsgi.application"
ASGI_APPLICATION = "okxproject.asgi.application"

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

# --- PostgreSQL --------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/okx_candles")
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0))
if _db.get("ENGINE") != "django.db.backends.postgresql":
    raise ImproperlyConfigured(f"DATABASE_URL must point at PostgreSQL, got engine {_db.get('ENGINE')!r}")
_db["CONN_HEALTH_CHECKS"] = True
_db.setdefault("OPTIONS", {})["application_name"] = env_str("DB_APPLICATION_NAME", "okx-candles")
# A database that accepts TCP and never answers must not hang a request or a worker forever.
_db["OPTIONS"]["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT_S", 5, minimum=1)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and Celery --------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (
    Queue("default"),
    Queue("collectors"),
    Queue("flush"),
    Queue("backfill"),
    Queue("webhooks"),
    # Storage maintenance (minutes at a time when it compacts or archives a partition): its own queue, so it can
    # be given a worker of its own; the general worker consumes it too.
    Queue("storage"),
)
CELERY_TASK_ROUTES = {
    "collectors.tasks.flush_buffer": {"queue": "flush"},
    "collectors.tasks.detect_gaps": {"queue": "backfill"},
    "collectors.tasks.repair_candles": {"queue": "backfill"},
    "collectors.tasks.deliver_webhook": {"queue": "webhooks"},
    "collectors.tasks.check_health": {"queue": "default"},
    "collectors.tasks.sync_instruments": {"queue": "default"},
    "collectors.tasks.maintain_storage": {"queue": "storage"},
    # The admin's operator actions: long REST work goes where the shared REST budget is spent.
    "collectors.admin_tasks.backfill_range": {"queue": "backfill"},
    "collectors.admin_tasks.fill_range_gaps": {"queue": "backfill"},
    "collectors.admin_tasks.fill_gap": {"queue": "backfill"},
    "collectors.admin_tasks.verify_range": {"queue": "backfill"},
    "collectors.admin_tasks.sync_instruments": {"queue": "default"},
}
# Workers log through LOGGING below (structured, with the task's name and id) instead of Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- OKX -----------------------------------------------------------------------------------------
OKX_WS_URL = env_str("OKX_WS_URL", "wss://ws.okx.com:8443/ws/v5/business")
OKX_REST_URL = env_str("OKX_REST_URL", "https://www.okx.com")

# --- Pipeline ------------------------------------------------------------------------------------
FLUSH_INTERVAL_S = env_float("FLUSH_INTERVAL_S", 1.0, minimum=0.1)
# Prefix of every Redis key of the pipeline: two copies on one Redis need different prefixes.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "okx:")
# Subscriptions are hashed into this many shards; each shard is owned by one collector through a lease.
COLLECTOR_SHARDS = env_int("COLLECTOR_SHARDS", 8, minimum=1)
COLLECTOR_LEASE_TTL_S = env_float("COLLECTOR_LEASE_TTL_S", 15.0, minimum=1.0)
# Collectors holding each shard at once: 2 is a hot standby (docs/architecture.md, "Hot standby").
COLLECTOR_REPLICAS = env_int("COLLECTOR_REPLICAS", 1, minimum=1)
# The host a collector names in its leases (replicas of a shard prefer different hosts); default: hostname.
COLLECTOR_HOST = env_str("COLLECTOR_HOST", "")
COLLECTOR_RECONCILE_S = env_float("COLLECTOR_RECONCILE_S", 5.0, minimum=0.5)
# 300 (the upper end of what collectors in the wild keep): new connections are paced at 2 a second, so the
# whole of OKX (27,000 channels) takes 90 connections, 45 s, instead of 135 and 68 s.
COLLECTOR_CHANNELS_PER_CONNECTION = env_int("COLLECTOR_CHANNELS_PER_CONNECTION", 300, minimum=1)
COLLECTOR_PING_AFTER_S = env_float("COLLECTOR_PING_AFTER_S", 20.0, minimum=1.0)
# Buffer entries (candles waiting for a flush) above which the status turns degraded and logs warn.
BUFFER_ALARM_ENTRIES = env_int("BUFFER_ALARM_ENTRIES", 500_000, minimum=1)
DEAD_LETTER_MAX = env_int("DEAD_LETTER_MAX", 100_000, minimum=100)
# Recent past re-checked for gaps on every backfill run, per live subscription.
BACKFILL_RECENT_HOURS = env_float("BACKFILL_RECENT_HOURS", 6.0, minimum=0.01)
# A subscription is stale after this many expected push intervals without an update.
HEALTH_STALE_AFTER_S = env_float("HEALTH_STALE_AFTER_S", 30.0, minimum=1.0)
# Live subscriptions, and channel status rows, the health task re-checks in full per run, in turn (its other
# checks follow what changed): 27,000 subscriptions are all re-checked every 27 runs. 0 turns the audit off.
HEALTH_AUDIT_BATCH = env_int("HEALTH_AUDIT_BATCH", 1000, minimum=0)
# HMAC-SHA256 key of webhook signatures (X-OKX-Candles-Signature); empty disables webhooks.
WEBHOOK_SECRET = env_str("WEBHOOK_SECRET", "")
WEBHOOK_TIMEOUT_S = env_float("WEBHOOK_TIMEOUT_S", 5.0, minimum=0.1)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)

# --- Storage: candle partitions, retention, gap records (candles/partitions.py, candles/retention.py) -------
# Longest partition DDL (CREATE/ATTACH, DETACH, DROP) waits for a lock on its bar's table before it gives up and
# is retried (at once, or by the next maintenance run): the live flush must never queue behind DDL that itself
# waits behind a long reader.
STORAGE_LOCK_TIMEOUT_MS = env_int("STORAGE_LOCK_TIMEOUT_MS", 200, minimum=1)
# Seconds between runs of the storage maintenance task (premake, retention, close-out, gap expiry and pruning).
STORAGE_MAINTENANCE_INTERVAL_S = env_int("STORAGE_MAINTENANCE_INTERVAL_S", 600, minimum=10)
# Days finished gap records (filled, unfillable, expired) are kept before the maintenance task deletes them.
GAP_KEEP_DAYS = env_int("GAP_KEEP_DAYS", 30, minimum=1)
# --- Parquet archive (docs/archive.md) ----------------------------------------------------------------------
# Directory of the archive of candle partitions (one Parquet file per bar per UTC day); empty: archiving is off.
# Every worker that archives must see the same directory: shared storage when they run on several hosts.
CANDLE_ARCHIVE_DIR = env_str("CANDLE_ARCHIVE_DIR", "").strip()

# --- Web -----------------------------------------------------------------------------------------
WEB_HOST = env_str("WEB_HOST", "127.0.0.1")
WEB_PORT = env_int("WEB_PORT", 8000, minimum=1)
# Flower (started by `make run`); its basic auth comes from FLOWER_BASIC_AUTH=user:password, read by the
# start script (default: admin and the generated admin password).
FLOWER_HOST = env_str("FLOWER_HOST", "127.0.0.1")
FLOWER_PORT = env_int("FLOWER_PORT", 5555, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# The ASGI app (okxproject/asgi.py) serves static files itself when on: for local runs and a stack with no proxy
# in front. Off behind a proxy or CDN that serves STATIC_ROOT.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- the live stream (ws://HOST/api/v1/stream, candles/stream/) -------------------------------------------
# Feed entries (one a committed batch) Redis keeps for web processes that reconnect; past them they replay.
STREAM_FEED_MAXLEN = env_int("STREAM_FEED_MAXLEN", 200, minimum=10)
# Subscriptions one connection may hold.
STREAM_MAX_SUBSCRIPTIONS = env_int("STREAM_MAX_SUBSCRIPTIONS", 100, minimum=1)
# Frames waiting for one client before it counts as too slow and is closed (code 4008).
STREAM_CLIENT_QUEUE = env_int("STREAM_CLIENT_QUEUE", 1000, minimum=2)
# Candles a replay frame holds.
STREAM_REPLAY_PAGE = env_int("STREAM_REPLAY_PAGE", 1000, minimum=1)
# Live rows a subscription keeps while its replay reads; past them it reads them again after the replay.
STREAM_PENDING_MAX = env_int("STREAM_PENDING_MAX", 20_000, minimum=1)

# --- REST API -------------------------------------------------------------------------------------
# Reads (GET) need authentication too when on; writes always do.
API_READ_AUTH = env_bool("API_READ_AUTH", False)
# Bearer token Prometheus must send to GET /api/v1/metrics; empty: /metrics is open (it never needs API_READ_AUTH).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Export two gauges per active subscription (message age and confirmation lag, labelled by symbol and
# timeframe) besides the per-timeframe figures: 54,000 series at 27,000 subscriptions, read on every scrape.
METRICS_PER_SUBSCRIPTION = env_bool("METRICS_PER_SUBSCRIPTION", False)
# Most symbols and timeframes one POST /api/v1/subscribe may name.
API_MAX_SYMBOLS = env_int("API_MAX_SYMBOLS", 50, minimum=1)
API_MAX_TIMEFRAMES = env_int("API_MAX_TIMEFRAMES", 10, minimum=1)


def _throttle_rate(name: str, default: str) -> str | None:
    """A DRF rate such as "600/min" ("off" or empty: no limit), checked here so a typo stops the start."""
    value = env_str(name, default).strip()
    if value.lower() in {"", "off", "none"}:
        return None
    count, _, period = value.partition("/")
    if not count.isdigit() or period not in {"s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"}:
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate like 600/min (or off)")
    return value


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "okxproject.api_access.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["okxproject.api_access.ReadOpenWriteAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["okxproject.api_access.AnonThrottle", "okxproject.api_access.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        # Per client address for anonymous callers, per user for authenticated ones.
        "anon": _throttle_rate("API_THROTTLE_ANON", "600/min"),
        "user": _throttle_rate("API_THROTTLE_USER", "3000/min"),
    },
    # Proxies in front of the server whose X-Forwarded-For entries are trusted for the client address
    # (0: use the socket's address; clients cannot pick their own throttle bucket).
    "NUM_PROXIES": env_int("API_NUM_PROXIES", 0, minimum=0),
    "DEFAULT_RENDERER_CLASSES": ["candles.api.renderers.OrjsonRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # OPTIONS metadata as JSON on every view, also those that render only text or CSV.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "okxproject.api_negotiation.JsonOptionsNegotiation",
    "EXCEPTION_HANDLER": "okxproject.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "okxproject.api_schema.EnvelopeAutoSchema",
    "DEFAULT_PAGINATION_CLASS": None,
}

# URL of Swagger UI's files (npm package swagger-ui-dist) for /api/docs/; empty: a server-rendered reference
# page from the same schema, which needs no JavaScript (no CDN is assumed reachable).
API_DOCS_SWAGGER_UI_DIST = env_str("API_DOCS_SWAGGER_UI_DIST", "").rstrip("/")

SPECTACULAR_SETTINGS = {
    "TITLE": "okx-candles API",
    "DESCRIPTION": (
        "Exact OKX candlesticks (prices and volumes as decimal strings), subscriptions, instruments, "
        "statistics and the collectors' status. Every error is one JSON envelope: "
        "{status: \"error\", error_code, message, details, request_id, timestamp}. "
        "Live candles: the WebSocket ws://HOST/api/v1/stream (docs/stream.md), the same candle shape as /data."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # The schema is public like the reads; docs are served from our own static files (no CDN).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "ENUM_NAME_OVERRIDES": {
        "SubscriptionStatusEnum": "candles.models.SubscriptionStatus",
        # Instruments and rules share the choice set; one name for it.
        "InstrumentTypeEnum": "candles.models.InstrumentType",
        "ArchiveStatusEnum": "candles.models.ArchiveStatus",
        "SystemHealthEnum": "collectors.api.serializers.STATUSES",
        "HealthCheckNameEnum": "collectors.api.system.CHECK_NAMES",
    },
    **({"SWAGGER_UI_DIST": API_DOCS_SWAGGER_UI_DIST,
        "SWAGGER_UI_FAVICON_HREF": f"{API_DOCS_SWAGGER_UI_DIST}/favicon-32x32.png"}
       if API_DOCS_SWAGGER_UI_DIST else {}),
}

# The cache holds the throttle counters, shared by every web worker through Redis.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("CACHE_URL", REDIS_URL),
        "KEY_PREFIX": Keys(prefix=REDIS_KEY_PREFIX).cache,
        # A Redis that does not answer must not hold requests for long (the throttle then lets them through).
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}

# CORS is closed unless origins are listed, e.g. https://dash.example.com,http://localhost:3000.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Retry-After"]
CORS_ALLOW_HEADERS = (
    "accept", "authorization", "content-type", "x-request-id", "x-csrftoken", "x-requested-with",
)

# --- Logging -------------------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
# text: readable lines with key=value context; json: one JSON object per line (for log shippers). JSON
# unless DEBUG is on.
LOG_FORMAT = env_choice("LOG_FORMAT", "text" if DEBUG else "json", {"text", "json"})
# Celery's line per task (received, succeeded with its result, sent by beat) only when asked for: at OKX's scale
# it floods the console. Failures are logged either way.
LOG_TASKS = env_bool("LOG_TASKS", False)
LOGGING = logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT, log_tasks=LOG_TASKS)
# request_id of the HTTP request being served on every record logged while it runs (before the context
# filter, which then prints it with the rest of the line's context).
LOGGING["filters"]["request_id"] = {"()": "okxproject.request_id.RequestIdFilter"}
LOGGING["handlers"]["console"]["filters"].insert(0, "request_id")

# --- Admin bootstrap (used by `manage.py ensure_admin`, which `make run` calls) -----------------------
ADMIN_USERNAME = env_str("ADMIN_USERNAME", "admin")
ADMIN_PASSWORD = env_str("ADMIN_PASSWORD", "")
