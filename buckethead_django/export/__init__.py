"""Graduation: copy a BucketHead site's state onto standard servers, for ``manage.py buckethead export``.

A site that outgrows one host moves onto PostgreSQL, Redis (or Valkey) and
a plain S3 bucket. The export reads one consistent state, a private,
read-only copy of the bucket's latest snapshot (`source`), and copies it
part by part, each in its own module:

- `rows`: every model's rows into another Django database, in one transaction;
- `cache_entries`: every live entry of the BucketHead caches into other Django caches, with its time left;
- `files`: every name of `BucketHeadStorage` into a django-storages ``S3Storage``, under the same name.

Every part writes by key (primary key, cache key, object name) and
overwrites what it wrote before, so running the export again leaves the
same target, and an export that was killed completes when run again.
Nothing is ever written to the bucket or to the host's database.
"""

from .source import ExportError

__all__ = ["ExportError"]
