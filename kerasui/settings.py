"""KerasUI settings, read from the environment.

Local use needs no variable at all: the database, media and a generated secret key live in the
data folder (``KERASUI_DATA_DIR``, default ``./data``). Deployments set the ``DJANGO_*`` variables
and ``DATABASE_URL``.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

from kerasui import config, logs

BASE_DIR = Path(__file__).resolve().parent.parent

# TensorFlow's C++ start-up chatter (oneDNN notices, CUDA probing) is not for users' logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Every variable is read through kerasui/config.py (environs): a wrong value stops the start with one
# line naming the variable and what it accepts.
env_bool = config.boolean
env_int = config.integer
env_rate = config.rate
env_list = config.text_list


DATA_DIR = config.path("KERASUI_DATA_DIR", BASE_DIR / "data").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The key from the environment, else one generated once and kept in the data folder."""
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        # Write to a temporary name first so two processes starting at once never read half a key.
        temporary = key_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(secrets.token_urlsafe(50))
        temporary.chmod(0o600)
        if not key_file.exists():
            temporary.replace(key_file)
        else:
            temporary.unlink()
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# Served behind TLS (a proxy that sets X-Forwarded-Proto): one switch turns on HTTPS redirects,
# secure cookies and HSTS. Off by default, since the local start serves plain http on loopback.
KERASUI_HTTPS = env_bool("KERASUI_HTTPS", False)
if KERASUI_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Load balancers probe health over plain http.
    SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("KERASUI_HSTS_SECONDS", 31_536_000)
    # Strict by default; set these to false when other subdomains still serve plain http.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("KERASUI_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("KERASUI_HSTS_PRELOAD", True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "axes",
    "management",
    "api",
]

MIDDLEWARE = [
    # Issue 17: request counts and latency per endpoint, for the Prometheus endpoint /metrics.
    "management.metrics.MetricsMiddleware",
    "kerasui.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "kerasui.middleware.ContentSecurityPolicyMiddleware",
    "kerasui.middleware.PrivateApiMiddleware",
    # Issue 30: a time limit for each request's database work (503 past it).
    "kerasui.deadlines.RequestTimeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # An address with too many failed logins gets 429 at the admin's login form before any hash.
    "kerasui.logins.FailedLoginThrottleMiddleware",
    # Last, as django-axes requires: turns a locked-out admin login into the page that says so.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "kerasui.urls"
WSGI_APPLICATION = "kerasui.wsgi.application"

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

# SQLite by default; DATABASE_URL (for example postgres://user:pass@host/db) for deployments.
DATABASES = {
    "default": config.database(
        "DATABASE_URL",
        default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        # Connections are kept (and checked before reuse) rather than opened per request: SQLite's
        # pragmas run once per connection, PostgreSQL's connection set-up once per thread.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600),
    )
}
# A training process must use the very database of the process that started it (in tests, the
# test database), so the runner passes its database name down through this variable.
if os.environ.get("KERASUI_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["KERASUI_DATABASE_NAME"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and a training process write at the same time: WAL lets readers go on
    # while one writes, IMMEDIATE transactions take the write lock up front (so a transaction
    # never fails halfway on an upgrade), and the timeout makes a writer wait instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_db.sqlite3")}
# Issue 30: a request's database work stops after this many seconds (kerasui/deadlines.py: SQLite
# interrupts a request's statement past it; PostgreSQL ends any statement running longer); 0: no limit.
KERASUI_REQUEST_TIME_LIMIT = env_int("KERASUI_REQUEST_TIME_LIMIT", 30)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and KERASUI_REQUEST_TIME_LIMIT > 0:
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = (
        f"{options.get('options', '')} -c statement_timeout={KERASUI_REQUEST_TIME_LIMIT * 1000}".strip()
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache every worker process shares: request-rate counters (DRF throttles) live there. The
# database by default (its table is made by `migrate`; each worker leases counts from it and counts
# in memory, see api/throttles.py); Redis when KERASUI_REDIS_URL (or CACHE_URL) names one, e.g.
# redis://127.0.0.1:6379/2 (every request counted there).
KERASUI_REDIS_URL = config.url("KERASUI_REDIS_URL", "", schemes=("redis", "rediss", "unix")) or config.url(
    "CACHE_URL", "", schemes=("redis", "rediss", "unix")
)
if KERASUI_REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": KERASUI_REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "kerasui_cache",
            # Expired counters are deleted once this many rows exist (each write counts the rows).
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }

# Password guessing (django-axes): after KERASUI_LOGIN_FAILURE_LIMIT failed logins for one username from
# one address, that pair is refused for KERASUI_LOGIN_LOCKOUT_MINUTES on every door that checks a
# password (admin login, OAuth2 password grant, Basic authentication), even with the right password.
# Failures are counted in the database, shared by every worker. Unlock: the admin's "Access attempts"
# (delete the row) or `manage.py axes_reset_username NAME`.
# The last backend counts each refused login against the client's address (see below).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "kerasui.logins.FailedLoginCounter",
]
AXES_FAILURE_LIMIT = env_int("KERASUI_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("KERASUI_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# A lockout lasts its full time from the failure that caused it; attempts during it do not extend it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "kerasui.logins.lockout_response"
AXES_CLIENT_IP_CALLABLE = "kerasui.logins.client_ip"
AXES_VERBOSE = False  # no start-up banner in every command's output
AXES_SENSITIVE_PARAMETERS = ["password", "client_secret", "code", "refresh_token", "token"]
# Failed credentials from one address, whatever the username or client id (a DRF rate; empty: no limit):
# beyond it every door answers 429 with Retry-After before it hashes a password or client secret.
KERASUI_FAILED_LOGIN_RATE = env_rate("KERASUI_FAILED_LOGIN_RATE", "20/min")
# Proxies in front of the app that append to X-Forwarded-For (0: none; the client is REMOTE_ADDR).
KERASUI_PROXY_COUNT = env_int("KERASUI_PROXY_COUNT", 0)


AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = config.text("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = config.path("KERASUI_STATIC_ROOT", DATA_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Issue 26: kept files (images, models, exports, logs) in an S3-compatible bucket (AWS S3, MinIO, Ceph,
# R2) through django-storages when a bucket is named; the machine's own data folder then holds only
# caches. Credentials may also come from boto3's usual sources (instance roles, ~/.aws).
AWS_STORAGE_BUCKET_NAME = config.text("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_ENDPOINT_URL = config.url("AWS_S3_ENDPOINT_URL", "", schemes=("https", "http")) or None
AWS_S3_REGION_NAME = config.text("AWS_S3_REGION_NAME", "") or None
AWS_ACCESS_KEY_ID = config.text("AWS_ACCESS_KEY_ID", "") or None
AWS_SECRET_ACCESS_KEY = config.text("AWS_SECRET_ACCESS_KEY", "") or None
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {"BACKEND": "kerasui.storage.BucketStorage"}
    # Private: objects get no public ACL, and are served only through the media view after its
    # permission check (management/files.py streams them), never by a URL of the bucket's.
    AWS_DEFAULT_ACL = None
    AWS_QUERYSTRING_AUTH = True
# Serve static files straight from the apps when collectstatic has not run (tests, development).
WHITENOISE_USE_FINDERS = True

# Media (dataset images, models, logs) is private: served only through an authenticated view.
MEDIA_URL = "media/"
MEDIA_ROOT = config.path("KERASUI_MEDIA_ROOT", DATA_DIR / "media")
# Who sends media bytes once Django has checked access: "" (Django itself), "nginx"
# (X-Accel-Redirect to KERASUI_MEDIA_ACCEL_PREFIX, an internal location) or "apache" (X-Sendfile).
KERASUI_MEDIA_SERVER = config.choice("KERASUI_MEDIA_SERVER", "", ("", "django", "nginx", "apache"))
KERASUI_MEDIA_SERVER = "" if KERASUI_MEDIA_SERVER == "django" else KERASUI_MEDIA_SERVER
KERASUI_MEDIA_ACCEL_PREFIX = config.text("KERASUI_MEDIA_ACCEL_PREFIX", "/protected-media/")

# The Content-Security-Policy of every page (private media gets "default-src 'none'; sandbox"):
# scripts only from this site's files, never inline; inline styles stay allowed (the admin and
# Swagger UI use style attributes); images also from data: and blob: (previews of a chosen file).
KERASUI_CONTENT_SECURITY_POLICY = config.text("KERASUI_CONTENT_SECURITY_POLICY", "") or (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)

# Uploads: zips of images can be large; Django streams big files to disk.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("KERASUI_MAX_REQUEST_BYTES", 50 * 1024 * 1024)
# The largest request body of any kind (a zip upload included), refused before it is read.
KERASUI_MAX_UPLOAD_BYTES = env_int("KERASUI_MAX_UPLOAD_BYTES", 2 * 1024**3 + 64 * 1024**2)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.OAuth2Authentication",
        "rest_framework.authentication.SessionAuthentication",
        "api.authentication.BasicAuthentication",
    ],
    # A token acts only within its scopes; then Django's model permissions decide.
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.TokenScopes", "api.permissions.UseCasePermissions"],
    # An unreadable body is a 400 naming the problem: JSON nested too deeply (DRF's own parser lets it
    # become a 500), too many form fields (Django would log a traceback).
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser", "api.parsers.FormParser", "api.parsers.MultiPartParser"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.views.exception_handler",
    # Requests per minute per user (per address when anonymous): predictions and Prometheus' scrapes
    # of /metrics (every 15 s is 4/min) each apart from the rest.
    "DEFAULT_THROTTLE_CLASSES": ["api.throttles.ScopedThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api": env_rate("KERASUI_THROTTLE_API", "1200/min"),
        "predict": env_rate("KERASUI_THROTTLE_PREDICT", "6000/min"),
        "metrics": env_rate("KERASUI_THROTTLE_METRICS", "120/min"),
        # An explanation (`"explain": true` on /api/test/) is 65 forward passes: 60/min is 3,900 images.
        "explain": env_rate("KERASUI_THROTTLE_EXPLAIN", "60/min"),
    },
    "NUM_PROXIES": KERASUI_PROXY_COUNT,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

OAUTH2_PROVIDER = {
    "SCOPES": {
        "read": "See datasets, items, runs and models",
        "write": "Create and change datasets and items, upload, train and cancel",
        "predict": "Predict labels with /api/test/",
        # Not among the default scopes: a token for Prometheus asks for it (scope=metrics).
        "metrics": "Read the Prometheus metrics at /metrics (staff accounts only)",
    },
    # A token request that names no scope gets all three; the user's permissions still apply.
    "DEFAULT_SCOPES": ["read", "write", "predict"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": env_int("KERASUI_TOKEN_SECONDS", 36000),
    # The password grant (the original KerasUI's flow, for scripts run by a known user) is kept on
    # purpose, though RFC 9700 discourages it; tokens for services should use client credentials.
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": False,
    # The rest of RFC 9700 (OAuth 2.0 Security BCP): tokens only in the Authorization header,
    # hashed at rest, refresh-token replay revokes the family, S256 PKCE only, https redirects only.
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    # The password grant answers 429 while django-axes has locked the username out.
    "OAUTH2_VALIDATOR_CLASS": "api.authentication.OAuth2Validator",
}
# Kept on purpose and documented (see above): the password grant.
SILENCED_SYSTEM_CHECKS = ["oauth2_provider.W002"]

SPECTACULAR_SETTINGS = {
    "TITLE": "KerasUI API",
    "DESCRIPTION": (
        "Datasets of labelled images, training runs and predictions. Authenticate with an OAuth2 "
        "token from /o/token/ (scopes read, write, predict), or with a session or Basic authentication."
    ),
    "VERSION": "1.0.0",
    # A health check's status and a run's share the field name, not the choices.
    "ENUM_NAME_OVERRIDES": {
        # Every job kind (training runs, health checks, exports, imports) shares one set of statuses.
        "JobStatusEnum": "jobs.models.JobStatus",
    },
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Request bodies get their own components, so multipart file fields show as binary uploads.
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs page's JavaScript is served by the app itself, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "OAUTH2_FLOWS": ["password", "clientCredentials"],
    "OAUTH2_TOKEN_URL": "/o/token/",
    "OAUTH2_SCOPES": None,
}

# Cross-origin browser clients: none by default; list origins, or explicitly allow all.
CORS_ALLOWED_ORIGINS = env_list("DJANGO_CORS_ALLOWED_ORIGINS")
CORS_ALLOW_ALL_ORIGINS = env_bool("KERASUI_CORS_ALLOW_ALL", False)
CORS_URLS_REGEX = r"^/(api|o)/.*$"

LOGIN_URL = "admin:login"

# Jobs (training runs, health checks, exports, zip imports; see jobs/): how a queued job gets executed.
# "thread": a daemon thread of the web process starts each as a `manage.py job KIND ID` subprocess, at
# most its kind's budget at once (the settings below), the rest wait. "celery": the job's kind and id go
# to the `training` queue and a Celery worker (on any machine sharing the database and media) executes
# it. "none": jobs stay queued (tests; `manage.py job KIND ID` by hand).
# KERASUI_TRAINING_RUNNER is the deprecated name: "thread" or anything else (= "none").
_legacy_runner = config.text("KERASUI_TRAINING_RUNNER", "").lower()
KERASUI_TRAINING_BACKEND = config.choice("KERASUI_TRAINING_BACKEND", "", ("thread", "celery", "none")) or (
    {"": "thread", "thread": "thread"}.get(_legacy_runner, "none")
)
# The job budget: how many jobs of each kind run at once, on every machine together.
KERASUI_MAX_CONCURRENT_RUNS = env_int("KERASUI_MAX_CONCURRENT_RUNS", 1)
KERASUI_MAX_CONCURRENT_HEALTH_CHECKS = env_int("KERASUI_MAX_CONCURRENT_HEALTH_CHECKS", 1)
KERASUI_MAX_CONCURRENT_EXPORTS = env_int("KERASUI_MAX_CONCURRENT_EXPORTS", 1)
KERASUI_MAX_CONCURRENT_IMPORTS = env_int("KERASUI_MAX_CONCURRENT_IMPORTS", 2)
KERASUI_MAX_CONCURRENT_SUGGESTIONS = env_int("KERASUI_MAX_CONCURRENT_SUGGESTIONS", 1)
KERASUI_MAX_CONCURRENT_DELETIONS = env_int("KERASUI_MAX_CONCURRENT_DELETIONS", 1)
# Health checks a user may start per minute (0: no limit): each costs minutes of every core.
KERASUI_HEALTH_STARTS_PER_MINUTE = env_int("KERASUI_HEALTH_STARTS_PER_MINUTE", 6)
# A running job's process writes a heartbeat to it about once a second; a job whose heartbeat is older
# than this many seconds (the database's clock) lost its process or machine: the watchdog fails it
# (a training run is marked interrupted, and can be resumed).
KERASUI_HEARTBEAT_TIMEOUT = env_int("KERASUI_HEARTBEAT_TIMEOUT", 60)
# The longest a training may take (seconds; Celery's time limit): a run still going after it is stopped
# and marked interrupted (it can be resumed).
KERASUI_TRAINING_TIME_LIMIT = env_int("KERASUI_TRAINING_TIME_LIMIT", 2 * 24 * 3600)

# Celery (KERASUI_TRAINING_BACKEND=celery); `celery -A kerasui worker -Q training -c 1` on each machine.
CELERY_BROKER_URL = config.url(
    "CELERY_BROKER_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "amqp", "amqps", "sqs", "memory")
)
# Results and states live on the run in the database: no result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ROUTES = {"jobs.run": {"queue": "training"}}
# A task is acknowledged when it ends, so a worker that dies before claiming its run leaves the
# message to another worker; one message at a time per process, so a long run blocks nobody else.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# No automatic retry of a training: when a worker process is lost mid-run, its message is
# acknowledged, not sent again; the run is marked interrupted (by the heartbeat watchdog) and a
# person resumes it. A message delivered again anyway (the broker's visibility timeout, a worker
# that lost its connection) finds its run no longer queued and does nothing.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_TIME_LIMIT = KERASUI_TRAINING_TIME_LIMIT + 120
CELERY_TASK_SOFT_TIME_LIMIT = KERASUI_TRAINING_TIME_LIMIT
# Redis gives an unacknowledged message to another worker after this long: above the time limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Training decodes each dataset version once per size and colour mode into a uint8 file here,
# with this many processes, and reads it memory-mapped; least recently used files go first.
KERASUI_CACHE_DIR = config.path("KERASUI_CACHE_DIR", DATA_DIR / "cache")
KERASUI_CACHE_MAX_BYTES = env_int("KERASUI_CACHE_MAX_BYTES", 4 * 1024**3)
KERASUI_PREPROCESS_WORKERS = env_int("KERASUI_PREPROCESS_WORKERS", os.cpu_count() or 1)
# Pretrained starting points: EfficientNet-Lite0's weights are converted once into this folder; the
# Keras applications' weights live in Keras' cache ($KERAS_HOME, default ~/.keras) and are downloaded
# from this base URL (a mirror of Keras' storage.googleapis.com paths) the first time. Empty: never
# download; `python manage.py weights import NAME FILE` then brings them in.
KERASUI_WEIGHTS_DIR = config.path("KERASUI_WEIGHTS_DIR", DATA_DIR / "weights")
KERASUI_WEIGHTS_BASE_URL = config.url(
    "KERASUI_WEIGHTS_BASE_URL", "https://storage.googleapis.com/", schemes=("https", "http")
)
# Dataset health checks compute features of every image with this pretrained backbone at this size
# (cached like training's); empty: no backbone, the dataset's own model code is trained per fold instead.
KERASUI_HEALTH_BACKBONE = config.text("KERASUI_HEALTH_BACKBONE", "efficientnet_lite0")
KERASUI_HEALTH_IMAGE_SIZE = env_int("KERASUI_HEALTH_IMAGE_SIZE", 96)
# The Automatic starting point's pretrained candidate (its head on cached features, then fine-tuning);
# empty: Automatic trains the model code only.
KERASUI_AUTOMATIC_BACKBONE = os.environ.get("KERASUI_AUTOMATIC_BACKBONE", "efficientnet_lite0").strip()
# Building a model to validate its code (in a child process) is stopped after this many seconds.
KERASUI_VALIDATE_TIMEOUT = env_int("KERASUI_VALIDATE_TIMEOUT", 60)
# Model exports (h5, SavedModel, TFLite, ONNX) are made in a child process stopped after this many
# seconds, and checked against the Keras model on up to this many of the run's own images.
KERASUI_EXPORT_TIMEOUT = env_int("KERASUI_EXPORT_TIMEOUT", 600)
KERASUI_EXPORT_SAMPLES = env_int("KERASUI_EXPORT_SAMPLES", 16)
# Model jobs run in child processes beside the web server (validations, model imports, exports): at most
# this many at once on this machine, across its processes (0: no cap); more are answered 429.
KERASUI_MAX_CONCURRENT_JOBS = env_int("KERASUI_MAX_CONCURRENT_JOBS", 2)
# Lock files that count them (and other cross-process locks) live here, on this machine's disk.
KERASUI_LOCK_DIR = config.path("KERASUI_LOCK_DIR", DATA_DIR / "locks")
# Largest .keras file accepted by model import.
KERASUI_MAX_MODEL_BYTES = env_int("KERASUI_MAX_MODEL_BYTES", 500 * 1024 * 1024)
# Loaded models kept per process for prediction (least recently used evicted); a worker loads the
# current models of up to this many datasets when it starts.
KERASUI_MODEL_CACHE_SIZE = env_int("KERASUI_MODEL_CACHE_SIZE", 8)
# Threads of the inference engine per web process for prediction (0: the engine's default, all cores).
# One is fastest for single requests; gunicorn's worker processes use the other cores.
KERASUI_INFERENCE_THREADS = env_int("KERASUI_INFERENCE_THREADS", 1)
# Serving (issue 17): "onnxruntime" serves each version with its ONNX export once proven against Keras
# within KERASUI_SERVING_TOLERANCE (else Keras, the fallback); "keras" serves every version with Keras.
KERASUI_SERVING_ENGINE = config.choice("KERASUI_SERVING_ENGINE", "onnxruntime", ("onnxruntime", "keras"))
KERASUI_SERVING_TOLERANCE = config.number("KERASUI_SERVING_TOLERANCE", 1e-5)
# Web workers load current models when they start and look for newly current runs this often (seconds).
KERASUI_WARM_WORKERS = env_bool("KERASUI_WARM_WORKERS", True)
KERASUI_SERVING_POLL_SECONDS = config.number("KERASUI_SERVING_POLL_SECONDS", 2.0)
# Largest single image accepted (bytes) and largest image (pixels) decoded, well under Pillow's own
# decompression-bomb limit (89 million): a 6000x4000 photo passes, a 16-bit 8000x5000 PNG does not.
KERASUI_MAX_IMAGE_BYTES = env_int("KERASUI_MAX_IMAGE_BYTES", 20 * 1024 * 1024)
KERASUI_MAX_IMAGE_PIXELS = env_int("KERASUI_MAX_IMAGE_PIXELS", 25_000_000)
# Decoded pixels per request (a batch's sum) and per user per minute, counted from the images' headers
# before anything is decoded (management/budgets.py); 0 switches a budget off.
KERASUI_MAX_REQUEST_PIXELS = env_int("KERASUI_MAX_REQUEST_PIXELS", 100_000_000)
KERASUI_MAX_USER_PIXELS_PER_MINUTE = env_int("KERASUI_MAX_USER_PIXELS_PER_MINUTE", 500_000_000)
# Explanations (65 forward passes each) computed at once per user and on the whole machine.
KERASUI_MAX_EXPLANATIONS_PER_USER = env_int("KERASUI_MAX_EXPLANATIONS_PER_USER", 1)
KERASUI_MAX_CONCURRENT_EXPLANATIONS = env_int("KERASUI_MAX_CONCURRENT_EXPLANATIONS", 2)
# Most images one /api/test/ request may predict at once.
KERASUI_MAX_BATCH_IMAGES = env_int("KERASUI_MAX_BATCH_IMAGES", 64)
# Zips: largest total uncompressed size and number of entries accepted.
KERASUI_MAX_ZIP_BYTES = env_int("KERASUI_MAX_ZIP_BYTES", 2 * 1024 * 1024 * 1024)
KERASUI_MAX_ZIP_ENTRIES = env_int("KERASUI_MAX_ZIP_ENTRIES", 100_000)
# Largest compression ratio (uncompressed / compressed size) of a zip over 1 MiB: zip bombs.
KERASUI_MAX_ZIP_RATIO = env_int("KERASUI_MAX_ZIP_RATIO", 250)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"standard": {"format": logs.FORMAT, "style": "{"}},
    "handlers": {
        "console": {"class": "kerasui.logs.ConsoleHandler", "formatter": "standard"},
        # A training process's account of its run goes to standard output: the run's log, with Keras' progress.
        "run_log": {"class": "kerasui.logs.ConsoleHandler", "stream_name": "stdout", "formatter": "standard"},
    },
    "root": {
        "handlers": ["console"],
        "level": config.choice("KERASUI_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper(),
    },
    "loggers": {
        "django.server": {"level": "INFO"},
        logs.RUN_LOGGER: {"handlers": ["run_log"], "level": "INFO", "propagate": False},
    },
}
