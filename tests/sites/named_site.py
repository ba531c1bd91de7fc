"""The example project with a mistake: a NAME for the BucketHead database, which must be refused."""

from example_site.settings import *  # noqa: F403

DATABASES = {"default": {"ENGINE": "buckethead_django.db", "NAME": BASE_DIR / "db.sqlite3"}}  # noqa: F405
