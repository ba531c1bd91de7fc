"""The BucketHead engine: a host's SQLite database, in RAM, made durable in an S3-compatible bucket.

Nothing in this package imports Django; the Django app is a thin layer on top.
"""

from .config import BucketConfig, SnapshotConfig
from .core import BucketSQLite, FlushResult
from .database import LocalDirError
from .errors import (
    BucketAccessDenied,
    BucketHeadError,
    BucketMisconfigured,
    BucketNotFound,
    BucketUnavailable,
    CurrentSnapshotCorrupt,
    HostNotReady,
    NotStarted,
    ObjectNotFound,
    ObjectStoreError,
    PreconditionFailed,
    ReadOnlyError,
    SnapshotCorrupt,
    SnapshotError,
    ValueTooLarge,
    WriterConflict,
    WriterFenced,
)
from .history import History, SnapshotEntry
from .interfaces import FileInfo, FileStore, GcReport, Interface, KVStore
from .lease import WriterLease, read_lease
from .objectstore import LocalObjectStore, ObjectInfo, ObjectStore, S3ObjectStore, open_object_store
from .record import SnapshotRecord

__all__ = [
    "BucketAccessDenied",
    "BucketConfig",
    "BucketHeadError",
    "BucketMisconfigured",
    "BucketNotFound",
    "BucketSQLite",
    "BucketUnavailable",
    "CurrentSnapshotCorrupt",
    "FileInfo",
    "FileStore",
    "FlushResult",
    "GcReport",
    "History",
    "HostNotReady",
    "Interface",
    "KVStore",
    "LocalDirError",
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
    "SnapshotRecord",
    "ValueTooLarge",
    "WriterConflict",
    "WriterFenced",
    "WriterLease",
    "open_object_store",
    "read_lease",
]
