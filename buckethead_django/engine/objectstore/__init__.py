"""Object stores: where snapshots and file blobs live."""

from __future__ import annotations

from ..config import BucketConfig
from .base import ListPage, ObjectInfo, ObjectStore, Progress, Source, iter_objects
from .local import LocalObjectStore
from .s3 import S3ObjectStore


def open_object_store(cfg: BucketConfig) -> ObjectStore:
    """The store a `BucketConfig` describes: a local directory or an S3 bucket."""
    if cfg.local_path is not None:
        return LocalObjectStore(cfg.local_path)
    return S3ObjectStore(cfg)


__all__ = [
    "ListPage",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "Progress",
    "S3ObjectStore",
    "Source",
    "iter_objects",
    "open_object_store",
]
