"""The example project with the servers it graduates onto as extra aliases, for ``buckethead export``.

``DATABASES["pg"]``, ``CACHES["redis"]`` and ``STORAGES["s3"]`` come from
``EXPORT_*`` environment variables (tests/test_export.py and
benchmarks/export.py set them): the settings a site has while it moves, its
BucketHead aliases still in place. Start it with
``DJANGO_SETTINGS_MODULE=export_site`` and this directory on ``PYTHONPATH``.
"""

import os

from example_site.settings import *  # noqa: F403

DATABASES = {
    **DATABASES,  # noqa: F405
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("EXPORT_PG_NAME", ""),
        "USER": os.environ.get("EXPORT_PG_USER", "postgres"),
        "HOST": os.environ.get("EXPORT_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("EXPORT_PG_PORT", ""),
    },
}
CACHES = {
    **CACHES,  # noqa: F405
    # Room for every entry benchmarks/export.py writes (the example project keeps Django's default, 300).
    "default": {**CACHES["default"], "OPTIONS": {"MAX_ENTRIES": 1_000_000}},  # noqa: F405
    "redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": os.environ.get("EXPORT_REDIS_URL", "")},
}
STORAGES = {
    **STORAGES,  # noqa: F405
    "s3": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("EXPORT_S3_BUCKET", ""),
            "endpoint_url": os.environ.get("EXPORT_S3_ENDPOINT_URL") or None,
            "region_name": "us-east-1",
            "access_key": os.environ.get("EXPORT_S3_ACCESS_KEY_ID", "testing"),
            "secret_key": os.environ.get("EXPORT_S3_SECRET_ACCESS_KEY", "testing"),
        },
    },
}
