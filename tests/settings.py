"""Django settings for the test suite."""

from pathlib import Path

from .django_suite import cache_test_apps

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-secret-key"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "buckethead_django",
    *cache_test_apps(),  # Django's own cache tests, run by test_django_cache_suite.py, have models
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "tests.urls"
