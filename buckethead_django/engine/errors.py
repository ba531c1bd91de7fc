"""Exceptions raised by the engine.

Every error says what went wrong *and* what to do about it, because the
person reading it is usually an operator looking at a log line.
"""

from __future__ import annotations


class BucketHeadError(Exception):
    """Base class for every error the engine raises on purpose."""


class ObjectStoreError(BucketHeadError):
    """The bucket (or local directory) could not complete a request."""


class ObjectNotFound(ObjectStoreError, KeyError):
    """The object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"object {self.key!r} does not exist"


class PreconditionFailed(ObjectStoreError):
    """A conditional write was refused: the object changed or already exists."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"conditional write to {key!r} refused: {reason}")
        self.key = key


class SnapshotError(BucketHeadError):
    """A snapshot could not be written or read."""


class SnapshotCorrupt(SnapshotError):
    """A snapshot object exists but is not a loadable SQLite database.

    The engine never replaces such a snapshot with an empty database: it
    refuses to start so that the data in the bucket stays untouched.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(
            f"snapshot object {key!r} is not a valid SQLite database ({reason}). "
            f"Nothing was loaded and nothing in the bucket was changed. Restore a good "
            f"copy (for example {key + '.prev'!r}) to {key!r}, or move the broken object "
            f"aside if you really want to start empty."
        )
        self.key = key
        self.reason = reason


class NotStarted(BucketHeadError):
    """The engine was used before start() or after stop()."""


class ReadOnlyError(BucketHeadError):
    """A write was attempted on a read-only view of the database.

    The message says why this process is read-only and what to do instead.
    """


class WriterConflict(BucketHeadError):
    """Another live process holds the bucket's writer lease."""


class ValueTooLarge(BucketHeadError, ValueError):
    """A KV value is larger than the configured limit."""
