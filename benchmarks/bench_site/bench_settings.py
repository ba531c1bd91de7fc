"""The example project's settings, plus the bench views and a record of each flush (``BENCH_EVENTS``).

``BENCH_PLAIN=1`` leaves BucketHead out altogether (Django's sqlite3 backend
on a file and LocMemCache): the peer a server start is compared with.
"""

import os

from example_site.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench_app"]  # noqa: F405
ROOT_URLCONF = "bench_urls"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"stamped": {"format": "%(asctime)s pid %(process)d %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "stamped"}},
    "loggers": {"buckethead_django": {"handlers": ["console"], "level": "INFO"}},
}

if os.environ.get("BENCH_PLAIN") == "1":
    INSTALLED_APPS = [a for a in INSTALLED_APPS if a != "buckethead_django"]
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB_PATH"]}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
