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


class BucketMisconfigured(ObjectStoreError):
    """The bucket is missing, or these credentials may not use it: a configuration error, not an outage.

    Retrying cannot help, so a writer that meets it at startup fails at once.
    """


class BucketNotFound(BucketMisconfigured):
    """The bucket does not exist at the configured endpoint."""


class BucketAccessDenied(BucketMisconfigured):
    """The service refused these credentials for the bucket."""


class SnapshotError(BucketHeadError):
    """A snapshot could not be written or read."""


class SnapshotCorrupt(SnapshotError):
    """A snapshot failed verification: a bad signature or digest, or not a whole, valid SQLite database.

    The engine never loads such a snapshot, and never replaces it with an
    empty database: the data in the bucket stays untouched.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"snapshot object {key!r} failed verification: {reason}. Nothing was loaded from it.")
        self.key = key
        self.reason = reason


class CurrentSnapshotCorrupt(SnapshotCorrupt):
    """The current snapshot failed verification, so no writer may start on the bucket.

    ``restorable`` names the newest snapshot that does verify (None if none
    does), which the message tells the operator how to restore.
    """

    def __init__(self, damage: SnapshotCorrupt, restorable: str | None) -> None:
        super().__init__(damage.key, damage.reason)
        self.restorable = restorable
        if restorable is not None:
            advice = (
                f"The newest snapshot that verifies is {restorable!r}: make it current with "
                f"`python manage.py buckethead restore {restorable}` (see `buckethead history`)."
            )
        else:
            advice = (
                "No other snapshot in the bucket verifies either. If the signing key changed, configure the old "
                "one (SIGNING_KEY, or SECRET_KEY_FALLBACKS); otherwise restore a copy of the database with "
                "`python manage.py buckethead restore --file PATH`."
            )
        self.args = (f"{self.args[0]} Nothing in the bucket was changed, and this process did not start. {advice}",)


class WriterFenced(SnapshotError):
    """Another writer took the bucket over while this one was paused or cut off.

    This engine stops flushing (it would roll the bucket back) and keeps
    serving from memory; its unsaved changes are written to a local file
    when it stops.
    """


class NotStarted(BucketHeadError):
    """The engine was used before start() or after stop()."""


class ReadOnlyError(BucketHeadError):
    """A write was attempted on a read-only view of the database.

    The message says why this process is read-only and what to do instead.
    """


class WriterConflict(BucketHeadError):
    """Another live process holds the bucket's writer lease."""


class HostNotReady(BucketHeadError):
    """The host's replicator did not make the host's database ready in time, so this process did not start."""


class BucketUnavailable(ObjectStoreError):
    """The bucket could not be reached at startup within the configured wait.

    A writer never starts empty over data it could not read.
    """


class ValueTooLarge(BucketHeadError, ValueError):
    """A KV value is larger than the configured limit."""
