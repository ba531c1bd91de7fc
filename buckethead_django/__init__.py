"""buckethead-django: an in-memory SQLite made durable in an S3-compatible bucket, for Django."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import BucketSQLite

__version__ = "0.1.0"


def get_buckethead() -> BucketSQLite:
    """The process's BucketHead engine (see `buckethead_django.runtime.get_buckethead`)."""
    from .runtime import get_buckethead as _get  # noqa: PLC0415 - keeps `import buckethead_django` Django-free

    return _get()
