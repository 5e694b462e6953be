"""Django settings. Every deployment value comes from the environment (django-environ).

Settings are documented in README.md ("Settings"). When `DATABASE_URL` is unset, the values
written by the embedded-services launcher (`python -m config.embedded`, `make demo`) to
`.run/services.env` fill in what the environment does not set: the servers' URLs, MEDIA_ROOT and
the storage settings, so `manage.py` commands use the same database, broker and photo storage as
the demo's web app and worker.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from config.storage import default_storage_from_env

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("RUN_DIR", BASE_DIR / ".run"))

env = environ.Env()
if "DATABASE_URL" not in os.environ and (RUN_DIR / "services.env").exists():
    environ.Env.read_env(RUN_DIR / "services.env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# A key everyone can read would let anyone forge sessions and password-reset links, so only a
# development process (DEBUG on) runs without one. The demo and the test session make their own.
SECRET_KEY_MISSING = (
    "DJANGO_SECRET_KEY is not set. Set it to a long random value, e.g. the output of "
    "`python -c 'import secrets; print(secrets.token_urlsafe(50))'` "
    "(or set DJANGO_DEBUG=true on a development machine)."
)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(SECRET_KEY_MISSING)
    SECRET_KEY = "django-insecure-development-only"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "drf_standardized_errors",
    "django_htmx",
    "catalog",
]

MIDDLEWARE = [
    # First: a body over REQUEST_MAX_BYTES is refused (413) before anything reads or spools it.
    "catalog.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (CSS, JS, vendored htmx) from the app folders or STATIC_ROOT, DEBUG or not.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: it refuses a locked-out username/address before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

DATABASES = {"default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/marketplace")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# Serve straight from the apps' static folders when collectstatic has not run (demo, tests);
# WhiteNoise then warns that STATIC_ROOT does not exist yet, which is expected there.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")
MEDIA_URL = env.str("MEDIA_URL", default="/media/")
MEDIA_ROOT = env.path("MEDIA_ROOT", default=str(BASE_DIR / "media"))

# Photos go through Django's storage API: local files by default, an S3 bucket when
# STORAGE_BACKEND=s3 (config/storage.py; README "Storage"). With S3, browsers upload photos
# straight to the bucket with a presigned POST and the web app registers the key.
STORAGE_BACKEND = env.str("STORAGE_BACKEND", default="local")
STORAGES = {
    "default": default_storage_from_env(env),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# S3 endpoint as browsers reach it, for direct uploads (default: AWS_S3_ENDPOINT_URL); it differs
# when the app reaches the bucket on an internal name (compose's http://minio:9000).
AWS_S3_PUBLIC_ENDPOINT_URL = env.str("AWS_S3_PUBLIC_ENDPOINT_URL", default="")
# How long a presigned upload form is valid (seconds).
AWS_S3_PRESIGNED_POST_EXPIRES_S = env.int("AWS_S3_PRESIGNED_POST_EXPIRES_S", default=900)
# Stored files that no photo row names (a rolled-back upload, an unregistered direct upload) are
# deleted by the hourly sweeper once they are this old (seconds).
STORAGE_ORPHAN_AFTER_S = env.int("STORAGE_ORPHAN_AFTER_S", default=24 * 3600)

# Upload limits, checked before any image is decoded.
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=15 * 1024 * 1024)
UPLOAD_MAX_PIXELS = env.int("UPLOAD_MAX_PIXELS", default=40_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
# Whole request bodies: refused with 413 before they are read (catalog.middleware), and by the
# reverse proxy with the same cap (docker/nginx.conf.template). The largest legitimate request
# is a new listing with its 10 photos at the per-file limit, plus the form's fields.
REQUEST_MAX_BYTES = env.int("REQUEST_MAX_BYTES", default=10 * UPLOAD_MAX_BYTES + 1024 * 1024)
# Reverse proxies in front of the web processes that append the client's address to
# X-Forwarded-For (1 behind docker/compose's nginx). With 0 that header is ignored: a client
# could otherwise name any address and escape throttles and login lockouts.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

TAXONOMY_PATH = env.path("TAXONOMY_PATH", default=str(BASE_DIR / "classifier" / "data" / "taxonomy.json"))

# --- Seller pages and the REST API ---
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "catalog:seller-dashboard"
LOGOUT_REDIRECT_URL = "catalog:browse"
# POST /api/classify answers 202 with a URL to poll at once, unless its web process runs request
# threads (gunicorn gthread, runserver) and one of its CLASSIFY_API_WAITERS places is free: then
# that thread waits up to CLASSIFY_API_WAIT_S for the worker. A single-threaded worker never waits.
CLASSIFY_API_WAIT_S = env.float("CLASSIFY_API_WAIT_S", default=1.0)
CLASSIFY_API_WAITERS = env.int("CLASSIFY_API_WAITERS", default=2)
# Hidden probe listings of POST /api/classify: at most this many per user (the oldest finished
# ones make room), each deleted with its photo this long after it was sent.
CLASSIFY_PROBES_PER_USER = env.int("CLASSIFY_PROBES_PER_USER", default=100)
CLASSIFY_PROBE_RETENTION_S = env.int("CLASSIFY_PROBE_RETENTION_S", default=24 * 3600)
# API tokens (django-rest-knox, stored hashed): they expire this long after POST /api/token and
# a user holds at most API_TOKENS_PER_USER unexpired ones; POST /api/token/revoke ends one early.
API_TOKEN_TTL_S = env.int("API_TOKEN_TTL_S", default=24 * 3600)
API_TOKENS_PER_USER = env.int("API_TOKENS_PER_USER", default=20)
REST_KNOX = {
    "TOKEN_TTL": timedelta(seconds=API_TOKEN_TTL_S),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
# Requests per user (per client address when anonymous), as DRF rates ("N/second|minute|hour|day").
# anon and user apply to every endpoint; token, classify and uploads to those endpoints on top.
API_THROTTLE_RATES = {
    "anon": env.str("API_THROTTLE_ANON", default="60/minute"),
    "user": env.str("API_THROTTLE_USER", default="600/minute"),
    "token": env.str("API_THROTTLE_TOKEN", default="10/minute"),
    "classify": env.str("API_THROTTLE_CLASSIFY", default="30/minute"),
    "uploads": env.str("API_THROTTLE_UPLOADS", default="120/minute"),
}
REST_FRAMEWORK = {
    # Token first: an anonymous call then answers 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": [
        "catalog.api.throttles.AnonThrottle",
        "catalog.api.throttles.UserThrottle",
        "catalog.api.throttles.ScopedThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": API_THROTTLE_RATES,
    # The client address for anonymous throttles (and login lockouts, see AXES_CLIENT_IP_CALLABLE).
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    # One error shape for every API error ({"type", "errors": [{"code", "detail", "attr"}]}),
    # documented per operation by drf-standardized-errors' schema class; catalog.api.errors gives
    # Django's own 400/403/404/500 under /api/ the same shape.
    "EXCEPTION_HANDLER": "drf_standardized_errors.handler.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_standardized_errors.openapi.AutoSchema",
}
_ERROR_ENUMS = "drf_standardized_errors.openapi_serializers"
SPECTACULAR_SETTINGS = {
    "TITLE": "Marketplace categoriser API",
    "DESCRIPTION": "Listings, photos and category suggestions for sellers; one-shot photo classification.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request and response components apart: file fields are binary in requests (Swagger's "Try it
    # out" offers a file picker) and required text fields say they cannot be blank.
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        name: f"{_ERROR_ENUMS}.{name}.choices"
        for name in (
            "ValidationErrorEnum",
            "ClientErrorEnum",
            "ServerErrorEnum",
            "ErrorCode401Enum",
            "ErrorCode403Enum",
            "ErrorCode404Enum",
            "ErrorCode405Enum",
            "ErrorCode406Enum",
            "ErrorCode415Enum",
            "ErrorCode429Enum",
            "ErrorCode500Enum",
        )
    },
    "POSTPROCESSING_HOOKS": ["drf_standardized_errors.openapi_hooks.postprocess_schema_enums"],
    # Swagger UI from the drf-spectacular-sidecar package: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery (see ../RELIABILITY notes in README "Delivery guarantees") ---
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_HARD_TIME_LIMIT_S = env.int("CELERY_TASK_HARD_TIME_LIMIT_S", default=300)
CELERY_TASK_SOFT_TIME_LIMIT_S = env.int("CELERY_TASK_SOFT_TIME_LIMIT_S", default=240)
# Longer than the hard time limit and any retry countdown, else Redis redelivers running tasks.
CELERY_VISIBILITY_TIMEOUT_S = env.int("CELERY_VISIBILITY_TIMEOUT_S", default=3600)
CELERY_WORKER_MAX_MEMORY_PER_CHILD_KB = env.int("CELERY_WORKER_MAX_MEMORY_PER_CHILD_KB", default=1_500_000)
CLASSIFY_MAX_DELIVERIES = env.int("CLASSIFY_MAX_DELIVERIES", default=3)
STUCK_IMAGE_AFTER_S = env.int("STUCK_IMAGE_AFTER_S", default=600)


def _redis_next_database(url: str) -> str:
    """The same Redis server as `url`, one database number up (redis://h:6379/0 -> .../1); `url`
    itself when it names no database number that way (e.g. a unix socket)."""
    parts = urlsplit(url)
    number = parts.path.strip("/") or "0"
    if not number.isdigit():
        return url
    return urlunsplit(parts._replace(path=f"/{int(number) + 1}"))


# Django's cache holds the API throttles' counters. Redis, because every web process on every
# host must count together (a per-process memory cache lets each gunicorn worker allow the full
# rate, and forgets on restart), counters expire by themselves (no table to create or cull, as
# the database cache needs), and the broker's server is already there: the next database number
# keeps its keys apart from the queues. Short timeouts: throttles fail open (catalog.api.throttles)
# so an API upload still succeeds while Redis is down, as uploads do when the broker is.
CACHE_URL = env.str("CACHE_URL", default=_redis_next_database(CELERY_BROKER_URL))
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": "marketplace",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}

# --- Login attempts (django-axes) ---
# After LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is
# refused (429) for LOGIN_COOLOFF_S; pages, the admin and POST /api/token alike. Attempts are
# rows in the database (the audit trail in the admin), so tests roll them back with everything else.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("LOGIN_COOLOFF_S", default=900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# No start-up banner in every manage.py command and worker; attempts are still logged.
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "catalog.api.throttles.client_ip"
AXES_LOCKOUT_CALLABLE = "catalog.views.accounts.login_locked_out"

# --- Classifier (read only by worker processes) ---
CLASSIFIER_HEAD_PATH = env.str("CLASSIFIER_HEAD_PATH", default="")
CLASSIFIER_CACHE_DIR = env.str("CLASSIFIER_CACHE_DIR", default="")
CLASSIFIER_NUM_THREADS = env.int("CLASSIFIER_NUM_THREADS", default=0)
CLASSIFIER_DEVICE = env.str("CLASSIFIER_DEVICE", default="cpu")
SUGGESTION_TOP_K = env.int("SUGGESTION_TOP_K", default=5)
# "int8": the statically quantized backbone (built once into CLASSIFIER_CACHE_DIR), "fp32": the export.
CLASSIFIER_PRECISION = env.str("CLASSIFIER_PRECISION", default="int8")
# Decoding threads per worker process; 0 means one per onnxruntime thread.
CLASSIFIER_DECODE_THREADS = env.int("CLASSIFIER_DECODE_THREADS", default=0)
# Photos per onnxruntime call in workers; 0 means 16 on the CPU (faster than 32 on 2 cores, half
# the activation memory) and 64 with CLASSIFIER_DEVICE=cuda (docs/BENCHMARKS.md).
CLASSIFIER_BATCH_SIZE = env.int("CLASSIFIER_BATCH_SIZE", default=0)
# A photo gets the head's other views only when its first view leaves the top two categories
# closer than this (classifier/views.py); unset: the classifier's default, 1: every view always.
CLASSIFIER_SECOND_VIEW_MARGIN = env.float("CLASSIFIER_SECOND_VIEW_MARGIN", default=None)

# --- Batched uploads and bulk reclassification ---
# A classify worker groups upload tasks: it runs a batch when this many have arrived, or every
# CLASSIFY_BATCH_INTERVAL_S seconds, whichever comes first (a lone upload waits at most that long).
CLASSIFY_BATCH_SIZE = env.int("CLASSIFY_BATCH_SIZE", default=16)
CLASSIFY_BATCH_INTERVAL_S = env.float("CLASSIFY_BATCH_INTERVAL_S", default=0.05)
# Photos per bulk chunk (a chunk holds whole listings, so it may hold a few more).
BULK_CHUNK_SIZE = env.int("BULK_CHUNK_SIZE", default=1000)
# GET /metrics (Prometheus) answers staff sessions, and "Authorization: Bearer <token>" when set.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Review, training and the model registry ---
# Auto-accept: per category, the lowest confidence at which the held-out precision of a trained
# version reached this value; suggestions above it set the listing's category (source AUTO).
AUTO_ACCEPT_PRECISION = env.float("AUTO_ACCEPT_PRECISION", default=0.97)
AUTO_ACCEPT_ENABLED = env.bool("AUTO_ACCEPT_ENABLED", default=True)
# A category gets a threshold only with at least this many held-out predictions above it.
AUTO_ACCEPT_MIN_SUPPORT = env.int("AUTO_ACCEPT_MIN_SUPPORT", default=10)
# A category joins training once it has this many human-labelled photos.
TRAINING_MIN_PHOTOS_PER_CATEGORY = env.int("TRAINING_MIN_PHOTOS_PER_CATEGORY", default=20)
# Share of labelled photos held out from training for metrics and comparisons (by photo checksum).
TRAINING_HELD_OUT_PERCENT = env.int("TRAINING_HELD_OUT_PERCENT", default=15)
# Time limits of a training or comparison task (the Redis visibility timeout must exceed them).
TRAINING_SOFT_TIME_LIMIT_S = env.int("TRAINING_SOFT_TIME_LIMIT_S", default=1500)
TRAINING_HARD_TIME_LIMIT_S = env.int("TRAINING_HARD_TIME_LIMIT_S", default=1800)
# Workers look up the active model version at most this often (seconds) and reload the head on change.
ACTIVE_MODEL_CHECK_S = env.float("ACTIVE_MODEL_CHECK_S", default=5.0)

# --- Flower ---
FLOWER_BASIC_AUTH = env.str("FLOWER_BASIC_AUTH", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- HTTPS: production values whenever DEBUG is off; plain-HTTP setups (the demo, the tests, a
# local run without TLS) turn them off explicitly. See README "Settings" and "Deployment".
_PRODUCTION = not DEBUG
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=_PRODUCTION)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=_PRODUCTION)
# Health checks (compose, load balancers) talk plain HTTP to the app itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# Sent on HTTPS responses only. A year, as the browsers' preload lists require.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000 if _PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=_PRODUCTION)
# X-Forwarded-Proto is believed only behind a proxy that sets it and strips a client's own;
# trusting it without one lets any client pass a plain-HTTP request off as HTTPS.
if env.bool("DJANGO_TRUSTED_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
