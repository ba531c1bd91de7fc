"""The example project after its move: PostgreSQL, django-redis and S3Storage, and no BucketHead at all.

The same ``EXPORT_*`` environment variables as ``export_site``; these are
the settings docs/outgrow.md tells a site to switch to once exported.
"""

from export_site import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "buckethead_django"]  # noqa: F405
DATABASES = {"default": DATABASES["pg"]}  # noqa: F405
CACHES = {"default": CACHES["redis"]}  # noqa: F405
STORAGES = {**STORAGES, "default": STORAGES["s3"]}  # noqa: F405
