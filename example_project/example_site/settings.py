"""Settings for the example project.

Zero configuration: the bucket is the directory ``example_project/.buckethead/``
(the local backend) and the database a file under ``/dev/shm``. To use
Cloudflare R2 instead, set environment variables only — see the README. To deploy it
(Docker, a PaaS, a VM), see docs/deploy/.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
# Loopback always (health checks from inside the host or container), plus the site's own names, comma-separated.
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", *os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")]
ALLOWED_HOSTS = [host.strip() for host in ALLOWED_HOSTS if host.strip()]
# Behind a platform's HTTPS proxy the admin's login POST carries an https:// Origin: list it (https://app.example.com).
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "buckethead_django",
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise serves /static/ from STATIC_ROOT in every gunicorn worker: no nginx, no bucket round trip.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # On a read replica (BUCKETHEAD_ROLE=replica), writes go to BUCKETHEAD_WRITER_URL (307) or get a clear 503.
    "buckethead_django.middleware.ReplicaWritesMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "example_site.wsgi.application"
ASGI_APPLICATION = "example_site.asgi.application"

# Django's own tables and the demo's models live in the host's BucketHead database, durable in the bucket.
DATABASES = {"default": {"ENGINE": "buckethead_django.db"}}
USE_TZ = True
STATIC_URL = "static/"
# Where `collectstatic` puts the static files WhiteNoise serves: built into the image (see the Dockerfile), or
# collected by docker-entrypoint.sh at start where the platform has no build step of its own.
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# BucketHead: every key comes from a BUCKETHEAD_<KEY> environment variable (BUCKETHEAD_FLUSH_INTERVAL=10, say),
# checked like the settings themselves: a bad value is a system check error that says what to write instead.
# A key set in this dict would win over the environment; the demo sets none.
BUCKETHEAD: dict[str, object] = {}

CACHES = {"default": {"BACKEND": "buckethead_django.cache.BucketHeadCache", "LOCATION": "default"}}
STORAGES = {
    "default": {"BACKEND": "buckethead_django.storage.BucketHeadStorage"},
    # Static files are code, not data: they ship with the release, never in the bucket. The manifest storage
    # names each file by its content's hash (base.1d2c3b4a5e6f.css), so WhiteNoise serves it compressed and
    # cacheable forever; with DEBUG off, `collectstatic` must have run (its manifest maps the names).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"buckethead_django": {"handlers": ["console"], "level": "INFO"}},
}
