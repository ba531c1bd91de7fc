"""What the export reads: a private, read-only copy of the bucket's latest snapshot, as the process's engine.

Reading the host's live database would make the command the host's
replicator when no server runs there, which claims the bucket (a write),
and would mix states while a server keeps writing. A private copy of the
latest snapshot is one consistent point in time for rows, cache entries
and file names alike, is verified like any restore, and can be read on any
machine: nothing in the bucket or on the host is touched. What a running
server has not flushed yet (at most ``FLUSH_INTERVAL`` seconds of writes) is
not in it, which is why the runbook stops the site first.

While the copy is open it is the process's engine (`runtime.use_engine`),
so Django's connection to the BucketHead database and the BucketHead caches
read it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from django.db import connections

from .. import runtime
from ..conf import get_settings
from ..engine import BucketSQLite
from ..management.bucket import Bucket

#: The ENGINE of a BucketHead database in ``settings.DATABASES``.
DATABASE_BACKEND = "buckethead_django.db"
#: Why every write to the private copy is refused (nothing should try).
READ_ONLY_REASON = (
    "`manage.py buckethead export` reads a private, read-only copy of the latest snapshot; it writes nothing there."
)

#: Called with how many units (bytes, rows, entries) were just done; a `ProgressBar` is one.
Progress = Callable[[int], None]


class ExportError(Exception):
    """The export cannot go on: the message says why, and what to do."""


def no_progress(_done: int) -> None:
    """A progress callback that shows nothing."""


def buckethead_databases() -> list[str]:
    """The aliases of ``settings.DATABASES`` whose ENGINE is BucketHead's."""
    return [alias for alias, db in connections.settings.items() if db.get("ENGINE") == DATABASE_BACKEND]


@contextlib.contextmanager
def opened(bucket: Bucket) -> Iterator[BucketSQLite]:
    """The state to export: a private read-only copy of the latest snapshot, the process's engine for the block.

    A process that already runs an engine (a test run's, or a server's) reads
    that engine, which is the state there.
    """
    if bucket.own is not None:
        yield bucket.own
        return
    engine = get_settings().engine(
        store=bucket.store, background_flush=False, read_only_reason=READ_ONLY_REASON, replica=False
    )
    engine.start()
    try:
        with runtime.use_engine(engine):
            try:
                yield engine
            finally:
                for alias in buckethead_databases():  # bound to the copy's file, which goes now
                    connections[alias].close()
    finally:
        engine.stop()
