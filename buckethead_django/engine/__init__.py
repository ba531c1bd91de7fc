"""The BucketHead engine: in-memory SQLite made durable in an S3-compatible bucket.

Nothing in this package imports Django; the Django app is a thin layer on top.
"""

from .config import BucketConfig, SnapshotConfig
from .core import BucketSQLite, FlushResult
from .errors import (
    BucketHeadError,
    NotStarted,
    ObjectNotFound,
    ObjectStoreError,
    PreconditionFailed,
    ReadOnlyError,
    SnapshotCorrupt,
    SnapshotError,
    ValueTooLarge,
    WriterConflict,
)
from .interfaces import FileInfo, FileStore, GcReport, Interface, KVStore
from .lease import WriterLease, read_lease
from .objectstore import LocalObjectStore, ObjectInfo, ObjectStore, S3ObjectStore, open_object_store
from .snapshot import SnapshotEntry, list_snapshots

__all__ = [
    "BucketConfig",
    "BucketHeadError",
    "BucketSQLite",
    "FileInfo",
    "FileStore",
    "FlushResult",
    "GcReport",
    "Interface",
    "KVStore",
    "LocalObjectStore",
    "NotStarted",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "PreconditionFailed",
    "ReadOnlyError",
    "S3ObjectStore",
    "SnapshotConfig",
    "SnapshotCorrupt",
    "SnapshotEntry",
    "SnapshotError",
    "ValueTooLarge",
    "WriterConflict",
    "WriterLease",
    "list_snapshots",
    "open_object_store",
    "read_lease",
]
