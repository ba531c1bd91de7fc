"""Django signals sent when the host's database is shipped, for logs, metrics and alerts.

They are sent in the process that flushes: the host's replicator (any
process of the site may be it, and another takes the role over when it
exits), and ``snapshot_skipped`` with ``"debounced"`` in any process whose
`flush()` came too soon. Each is sent with ``sender=BucketSQLite``;
receivers that need the engine call `buckethead_django.get_buckethead()`.

- `snapshot_written`: a snapshot was uploaded (``duration_seconds``, ``bytes``).
- `snapshot_skipped`: a flush uploaded nothing (``reason``: ``"unchanged"`` or ``"debounced"``).
- `snapshot_failed`: a flush failed (``error``); the change stays pending for the next one.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

from .engine import BucketSQLite

snapshot_written = Signal()
snapshot_skipped = Signal()
snapshot_failed = Signal()


def engine_callbacks() -> dict[str, Any]:
    """`BucketSQLite` keyword arguments that turn its flush callbacks into these signals."""
    return {
        "on_flush_complete": lambda duration, nbytes: snapshot_written.send(
            sender=BucketSQLite, duration_seconds=duration, bytes=nbytes
        ),
        "on_flush_skipped": lambda reason: snapshot_skipped.send(sender=BucketSQLite, reason=reason),
        "on_flush_error": lambda error: snapshot_failed.send(sender=BucketSQLite, error=error),
    }
