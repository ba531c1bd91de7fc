"""Settings for the example project: zero configuration, state kept in ./var/bucket."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = ["buckethead_django", "demo"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"]
ROOT_URLCONF = "example_site.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
WSGI_APPLICATION = "example_site.wsgi.application"
DATABASES: dict = {}
USE_TZ = True

# Where the local "bucket" lives. The engine restores from it at startup and snapshots into it.
BUCKETHEAD_LOCAL_PATH = Path(os.environ.get("BUCKETHEAD_LOCAL_PATH", BASE_DIR / "var" / "bucket"))
