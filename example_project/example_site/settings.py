"""Settings for the example project.

Zero configuration: the bucket is the directory ``example_project/.buckethead/``
(the local backend) and the database a file under ``/dev/shm``. To use
Cloudflare R2 instead, set environment variables only — see the README.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

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
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# BucketHead: every key comes from a BUCKETHEAD_<KEY> environment variable (BUCKETHEAD_FLUSH_INTERVAL=10, say),
# checked like the settings themselves: a bad value is a system check error that says what to write instead.
# A key set in this dict would win over the environment; the demo sets none.
BUCKETHEAD: dict[str, object] = {}

CACHES = {"default": {"BACKEND": "buckethead_django.cache.BucketHeadCache", "LOCATION": "default"}}
STORAGES = {
    "default": {"BACKEND": "buckethead_django.storage.BucketHeadStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"buckethead_django": {"handlers": ["console"], "level": "INFO"}},
}
