"""BucketSQLite: one in-memory SQLite database, made durable in a bucket.

The database lives in SQLite's ``memdb`` VFS under a name unique to this
instance, so any number of connections in the process open the *same*
in-memory database with normal locking and busy timeouts (shared-cache mode
would fail concurrent writers with "database table is locked"). `start()`
restores the latest snapshot into it, a background thread snapshots it every
``interval_seconds``, and `stop()` makes a final flush.

Whether anything changed is read from ``PRAGMA data_version`` on a private
connection that never writes: the value moves whenever another connection
commits, so an idle tick costs one pragma — no copy, no hash, no upload.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn, TypeVar

from . import snapshot
from .config import BucketConfig, SnapshotConfig
from .errors import NotStarted, ReadOnlyError, SnapshotError, WriterConflict
from .interfaces import FileStore, KVStore
from .interfaces.kv import DEFAULT_MAX_VALUE_BYTES
from .lease import DEFAULT_LEASE_SECONDS, WriterLease, held_by_another, lease_key, read_lease
from .objectstore import ObjectInfo, ObjectStore, Progress, open_object_store
from .snapshot import SnapshotEntry

logger = logging.getLogger("buckethead_django.engine")

T = TypeVar("T")

FlushStartCallback = Callable[[], None]
FlushCompleteCallback = Callable[[float, int], None]
FlushErrorCallback = Callable[[BaseException], None]
FlushSkippedCallback = Callable[[str], None]


@dataclass(frozen=True)
class FlushResult:
    """What one flush did: ``uploaded`` False means it was skipped (see ``reason``)."""

    uploaded: bool
    reason: str
    duration_seconds: float = 0.0
    bytes: int = 0
    etag: str | None = None
    at: float = 0.0


class BucketSQLite:
    """An in-memory SQLite database restored from, and snapshotted to, a bucket.

    Use it as a context manager, or call `start()` and `stop()`:

    ```python
    with BucketSQLite(BucketConfig.local("var/bucket")) as bh:
        bh.kv.set("user/123", "alice")
        bh.connection.execute("CREATE TABLE IF NOT EXISTS t (x)")
    ```
    """

    def __init__(
        self,
        config: BucketConfig,
        snapshot_config: SnapshotConfig | None = None,
        *,
        store: ObjectStore | None = None,
        on_flush_start: FlushStartCallback | None = None,
        on_flush_complete: FlushCompleteCallback | None = None,
        on_flush_error: FlushErrorCallback | None = None,
        on_flush_skipped: FlushSkippedCallback | None = None,
        busy_timeout: float = 30.0,
        kv_max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        background_flush: bool = True,
        read_only_reason: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.config = config
        self.snapshot_config = snapshot_config or SnapshotConfig()
        self.store: ObjectStore = store if store is not None else open_object_store(config)
        self.busy_timeout = busy_timeout
        self.kv_max_value_bytes = kv_max_value_bytes
        self.background_flush = background_flush
        self.read_only_reason = read_only_reason
        self.lease_seconds = lease_seconds
        #: This engine's own writer lease while it runs as the writer.
        self.lease: WriterLease | None = None
        self._on_flush_start = on_flush_start
        self._on_flush_complete = on_flush_complete
        self._on_flush_error = on_flush_error
        self._on_flush_skipped = on_flush_skipped
        self._uri = ""
        self._state_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._connections: list[sqlite3.Connection] = []
        self._watcher: sqlite3.Connection | None = None
        self._kv: KVStore | None = None
        self._files: FileStore | None = None
        self._flushed_version: int | None = None
        self._last_attempt = float("-inf")
        self.restored_from: ObjectInfo | None = None
        self.last_flush: FlushResult | None = None
        #: The last flush that uploaded a snapshot: how old the bucket's copy of the data is.
        self.last_upload: FlushResult | None = None
        self.last_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._conn is not None

    def start(self) -> BucketSQLite:
        """Restore the latest snapshot (or start empty if there is none) and begin flushing.

        If the snapshot cannot be read or is not a valid database, this raises
        and leaves nothing running, so a later `stop()` cannot upload an empty
        database over the snapshot.
        """
        with self._state_lock:
            if self._conn is not None:
                return self
            # A fresh name per start: connections left open from an earlier run never see this one.
            self._uri = f"file:/buckethead-{uuid.uuid4().hex}?vfs=memdb"
            conn, watcher, kv_conn, files_conn = (
                self._open(check_same_thread=False, autocommit=True) for _ in range(4)
            )
            self._connections = [kv_conn, files_conn, watcher, conn]
            try:
                self.restored_from = snapshot.restore(self.store, self.config.key, conn)
                kv = KVStore(kv_conn, max_value_bytes=self.kv_max_value_bytes)
                files = FileStore(files_conn, self.store, prefix=self.config.files_prefix)
            except BaseException:
                self._close_connections()
                raise
            if self.read_only_reason is not None:
                for c in (conn, kv_conn, files_conn):
                    c.execute("PRAGMA query_only = ON")
                kv.read_only_reason = files.read_only_reason = self.read_only_reason
            if not self.read_only:
                try:
                    self._take_lease()
                except BaseException:
                    self._close_connections()
                    raise
            self._conn, self._watcher, self._kv, self._files = conn, watcher, kv, files
            # What is in memory now is what the bucket holds (schema creation aside,
            # which every start repeats): nothing to upload until something changes.
            self._flushed_version = self._data_version()
            self._stop_event.clear()
            if self.background_flush and not self.read_only:
                self._thread = threading.Thread(target=self._flush_loop, name="buckethead-flush", daemon=True)
                self._thread.start()
        logger.info(
            "BucketSQLite started from %s (%s)",
            self.store.describe(),
            f"snapshot {self.config.key}, {self.restored_from.size} bytes" if self.restored_from else "no snapshot yet",
        )
        return self

    def stop(self) -> None:
        """Stop the flush loop, make a final flush and close the database.

        If the final flush fails the error is raised and the database stays
        open, so nothing is lost and `stop()` can be called again.
        """
        with self._state_lock:
            if self._conn is None:
                return
            self._stop_event.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        if not self.read_only:
            self.force_flush()
            self._release_lease()
        with self._state_lock:
            self._close_connections()
            self._conn = self._watcher = None
            self._kv = self._files = None

    @property
    def read_only(self) -> bool:
        """True for a read-only view: writes raise `ReadOnlyError`, nothing is ever uploaded."""
        return self.read_only_reason is not None

    def __enter__(self) -> BucketSQLite:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- connections and interfaces ------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """The keep-alive connection, in autocommit mode.

        It may be used from any thread, but by one at a time: a sqlite3
        connection must not run two statements at once. Give each thread
        its own `connect()`.
        """
        return self._require(self._conn)

    def connect(self, *, check_same_thread: bool = True, autocommit: bool = False) -> sqlite3.Connection:
        """A new connection to the same in-memory database, for one thread."""
        self._require(self._conn)
        conn = self._open(check_same_thread=check_same_thread, autocommit=autocommit)
        if self.read_only:
            conn.execute("PRAGMA query_only = ON")
        return conn

    @property
    def kv(self) -> KVStore:
        return self._require(self._kv)

    @property
    def files(self) -> FileStore:
        return self._require(self._files)

    def _close_connections(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections = []

    def _open(self, *, check_same_thread: bool, autocommit: bool) -> sqlite3.Connection:
        return sqlite3.connect(
            self._uri,
            uri=True,
            timeout=self.busy_timeout,
            check_same_thread=check_same_thread,
            isolation_level=None if autocommit else "DEFERRED",
        )

    def _require(self, value: T | None) -> T:
        if value is None:
            raise NotStarted("BucketSQLite is not running: call start() (or use it as a context manager) first")
        return value

    # -- flushing ----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True if something was committed since the last snapshot. Costs one pragma."""
        with self._flush_lock:
            try:
                return self._data_version() != self._flushed_version
            except sqlite3.OperationalError as exc:
                raise self._explain_lock(exc) from exc

    def flush(self) -> FlushResult:
        """Snapshot now unless one was attempted less than ``min_interval_seconds`` ago or nothing changed."""
        since = time.monotonic() - self._last_attempt
        if since < self.snapshot_config.min_interval_seconds:
            self._call(self._on_flush_skipped, "debounced")
            return FlushResult(uploaded=False, reason="debounced", at=time.time())
        return self.force_flush()

    def force_flush(self, *, progress: Progress | None = None) -> FlushResult:
        """Snapshot now if anything changed since the last snapshot, ignoring the debounce.

        ``progress`` is called with the bytes uploaded as the upload goes on.
        """
        self._require(self._conn)
        if self.read_only_reason is not None:
            raise ReadOnlyError(self.read_only_reason)
        with self._flush_lock:
            self._last_attempt = time.monotonic()
            try:
                changed = self._data_version() != self._flushed_version
            except sqlite3.OperationalError as exc:
                self._failed(exc)
            if not changed:
                # Nothing changed since the last snapshot, so it already records every pending deletion.
                self._delete_unreferenced_blobs(self._require(self._files).pending_deletions())
                self.last_flush = FlushResult(uploaded=False, reason="unchanged", at=time.time())
                self._call(self._on_flush_skipped, "unchanged")
                return self.last_flush
            self._call(self._on_flush_start)
            started = time.perf_counter()
            doomed = self._require(self._files).pending_deletions()  # their row deletions precede the capture
            try:
                image = snapshot.capture(self._require(self._watcher))
                info = snapshot.upload(
                    self.store,
                    self.config.key,
                    image,
                    keep_previous=self.snapshot_config.keep_previous,
                    progress=progress,
                )
            except Exception as exc:  # noqa: BLE001 - _failed() records it and raises it again
                self._failed(exc)
            duration = time.perf_counter() - started
            self._flushed_version = image.data_version
            self.last_error = None
            self.last_flush = FlushResult(
                uploaded=True,
                reason="changed",
                duration_seconds=duration,
                bytes=len(image.data),
                etag=info.etag,
                at=time.time(),
            )
            result = self.last_upload = self.last_flush
            self._delete_unreferenced_blobs(doomed)
        self._call(self._on_flush_complete, duration, len(image.data))
        return result

    def _delete_unreferenced_blobs(self, object_keys: list[str]) -> None:
        """Delete blobs whose removal a snapshot in the bucket now records; failures are retried next time."""
        if not object_keys:
            return
        try:
            self._require(self._files).delete_unreferenced(object_keys)
        except Exception:
            logger.exception(
                "BucketSQLite could not delete unreferenced blobs from %s; will retry", self.store.describe()
            )

    def _failed(self, exc: Exception) -> NoReturn:
        """Record a failed flush, tell the error callback, and raise (explained, if it was a lock)."""
        error = self._explain_lock(exc)
        self.last_error = error
        self._call(self._on_flush_error, error)
        if error is exc:
            raise exc
        raise error from exc

    def _explain_lock(self, exc: Exception) -> Exception:
        """Turn SQLite's bare "database is locked" into an error that says what to do."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return SnapshotError(
                f"could not read a consistent copy of the database within {self.busy_timeout}s: a write "
                "transaction stayed open the whole time. Commit or roll it back, then flush again."
            )
        return exc

    def _data_version(self) -> int:
        return int(self._require(self._watcher).execute("PRAGMA data_version").fetchone()[0])

    def _flush_loop(self) -> None:
        """Flush every ``interval_seconds``; renew the lease when half of it has passed."""
        interval = self.snapshot_config.interval_seconds
        tick = min(interval, self.lease_seconds / 4)
        next_flush = time.monotonic() + interval
        while not self._stop_event.wait(tick):
            try:
                if self.lease is not None and time.time() >= self.lease.renewed_at + self.lease_seconds / 2:
                    self._write_lease()
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + interval
                    self.flush()
            except Exception:
                logger.exception("BucketSQLite background work on %s failed; will retry", self.store.describe())

    # -- the writer lease --------------------------------------------------------------

    def writer_lease(self) -> WriterLease | None:
        """The bucket's current writer lease (this process's or another's), live or expired, or None."""
        return read_lease(self.store, self.config.key)

    def _take_lease(self) -> None:
        """Take the bucket's lease, refusing while another live process holds it."""
        current = self.writer_lease()
        if current is not None and held_by_another(current):
            raise WriterConflict(
                f"{self.store.describe()} is held by another writer, {current.holder} (running since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(current.started_at))}, lease valid for "
                f"{max(0, round(current.expires_at - time.time()))} more seconds). Only one process may write a "
                "bucket: stop that process first, or run this one as a reader (BUCKETHEAD['AUTOSTART'] = False). "
                "Serve with one process and many threads, for example `gunicorn --workers 1 --threads 8`."
            )
        self._write_lease()

    def _write_lease(self) -> None:
        """Take or renew this process's lease on the bucket."""
        lease = WriterLease.for_this_process(self.lease_seconds, self.lease.started_at if self.lease else None)
        self.store.put(lease_key(self.config.key), lease.to_json(), content_type="application/json")
        self.lease = lease

    def _release_lease(self) -> None:
        """Delete the lease after the final flush, unless another process has taken it since."""
        if self.lease is None:
            return
        try:
            current = self.writer_lease()
            if current is None or current.holder == self.lease.holder:
                self.store.delete(lease_key(self.config.key))
        except Exception:
            logger.exception("BucketSQLite could not release its writer lease on %s", self.store.describe())
        self.lease = None

    # -- operator actions --------------------------------------------------------------

    def snapshot(self, label: str | None = None, *, progress: Progress | None = None) -> SnapshotEntry:
        """Make the bucket hold the current state now; with ``label``, also keep it under that name.

        Labelled snapshots are never replaced by later flushes.
        """
        self.force_flush(progress=progress)
        if label is None:
            return snapshot.find_snapshot(self.store, self.config.key, snapshot.LATEST)
        snapshot.validate_label(label)
        if self.store.head(self.config.key) is None:
            # Nothing was ever flushed (an empty, unchanged database): label the current image itself.
            with self._flush_lock:
                image = snapshot.capture(self._require(self._watcher))
            return snapshot.write_label(self.store, self.config.key, label, image)
        return snapshot.copy_to_label(self.store, self.config.key, label)

    def restore(self, source: str | Path, *, progress: Progress | None = None) -> SnapshotEntry:
        """Replace the live database with a snapshot (by name) or a local SQLite file, and flush it.

        The source is validated first; if it is not a whole, valid SQLite
        database nothing changes. The current state is kept first as the
        labelled snapshot ``pre-restore-<UTC time>``, which is returned, so
        the restore itself can be undone.
        """
        self._require(self._conn)
        if self.read_only_reason is not None:
            raise ReadOnlyError(self.read_only_reason)
        with tempfile.TemporaryDirectory(prefix="buckethead-restore-") as tmp:
            if isinstance(source, Path):
                snapshot.validate(source, str(source))
                path = source
            else:
                entry = snapshot.find_snapshot(self.store, self.config.key, source)
                path = Path(tmp) / "snapshot.db"
                snapshot.download(self.store, entry.key, path, progress=progress)
            kept = self.snapshot(label=snapshot.timestamped_label("pre-restore"))
            with self._flush_lock:
                src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    src.backup(self._require(self._conn))
                finally:
                    src.close()
        # The restored file may predate columns or tables the interfaces need.
        self.kv._init_schema()
        self.files._init_schema()
        self.force_flush()
        return kept

    def stats(self) -> dict[str, int]:
        """Database size in bytes, and the numbers of KV entries and stored files."""
        with self._flush_lock:
            watcher = self._require(self._watcher)
            page_count = int(watcher.execute("PRAGMA page_count").fetchone()[0])
            page_size = int(watcher.execute("PRAGMA page_size").fetchone()[0])
        return {"database_bytes": page_count * page_size, "kv_entries": len(self.kv), "files": len(self.files)}

    def _call(self, callback: Callable[..., None] | None, *args: object) -> None:
        """Run a user callback; its failure is logged, never allowed to break a flush."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            logger.exception("BucketSQLite flush callback %r raised", callback)
