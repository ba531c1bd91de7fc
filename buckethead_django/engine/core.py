"""BucketSQLite: one in-memory SQLite database, made durable in a bucket.

A writer takes the bucket's lease, restores the current generation (after
verifying it), and from then on commits a new generation whenever something
changed; see `history` for the layout and `lease` for the single-writer
rule.

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

import contextlib
import itertools
import logging
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import NoReturn, TypeVar

from . import snapshot
from .config import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_KV_MAX_VALUE_BYTES,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_LEASE_WAIT,
    DEFAULT_STARTUP_TIMEOUT,
    BucketConfig,
    SnapshotConfig,
)
from .errors import (
    BucketMisconfigured,
    BucketUnavailable,
    CurrentSnapshotCorrupt,
    NotStarted,
    ObjectNotFound,
    ObjectStoreError,
    PreconditionFailed,
    ReadOnlyError,
    SnapshotCorrupt,
    SnapshotError,
    WriterFenced,
)
from .history import (
    LATEST,
    LEGACY_LATEST,
    Current,
    GenerationObjects,
    History,
    SnapshotEntry,
    new_generation_name,
    retained,
    timestamped_label,
    validate_label,
)
from .interfaces import FileStore, KVStore
from .lease import LeaseKeeper, WriterLease, read_lease
from .objectstore import ObjectStore, Progress, open_object_store
from .record import GENERATION, LABELLED, SnapshotRecord
from .retry import backoff

logger = logging.getLogger("buckethead_django.engine")

#: How often a starting writer reads and claims again when another process changed the bucket meanwhile.
CLAIM_ATTEMPTS = 3

T = TypeVar("T")

STOPPING = (
    "BucketHead is stopping in this process and has taken its final snapshot, so this write was refused: "
    "it could not be saved. Retry it once the server is back."
)

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
    #: The generation the flush committed.
    generation: str | None = None
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
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        kv_max_value_bytes: int = DEFAULT_KV_MAX_VALUE_BYTES,
        background_flush: bool = True,
        read_only_reason: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        lease_wait: float = DEFAULT_LEASE_WAIT,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        signing_key: bytes | None = None,
        verify_keys: Sequence[bytes] = (),
    ) -> None:
        self.config = config
        self.snapshot_config = snapshot_config or SnapshotConfig()
        self.store: ObjectStore = store if store is not None else open_object_store(config)
        #: The bucket's generations, labels and current record under ``config.key``.
        self.history = History(self.store, config.key)
        self.busy_timeout = busy_timeout
        self.kv_max_value_bytes = kv_max_value_bytes
        self.background_flush = background_flush
        self.read_only_reason = read_only_reason
        self._lease_keeper = LeaseKeeper(self.store, config.key, lease_seconds=lease_seconds, wait_seconds=lease_wait)
        self.startup_timeout = startup_timeout
        self.signing_key = signing_key
        #: Snapshots verify when signed with any of these (the signing key first); none: no signature check.
        self.verify_keys: tuple[bytes, ...] = tuple(k for k in (signing_key, *verify_keys) if k)
        self._current: Current | None = None
        #: The sequence number of this writer's next generation (see `_claim`).
        self._next_seq = 1
        self._generations: list[GenerationObjects] = []
        #: Flushes that failed after writing some of their objects: deleted once a later one commits.
        self._abandoned: list[GenerationObjects] = []
        self._failures = 0
        self._retry_at: float | None = None
        #: Set when another writer took the bucket over: this engine no longer flushes.
        self.fenced: WriterFenced | None = None
        self._on_flush_start = on_flush_start
        self._on_flush_complete = on_flush_complete
        self._on_flush_error = on_flush_error
        self._on_flush_skipped = on_flush_skipped
        self._uri = ""
        self._state_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        #: Guards the private watcher connection alone, so `dirty` never waits for an upload.
        self._watch_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._connections: list[sqlite3.Connection] = []
        self._watcher: sqlite3.Connection | None = None
        self._kv: KVStore | None = None
        self._files: FileStore | None = None
        self._flushed_version: int | None = None
        self._last_attempt = float("-inf")
        #: The snapshot this engine started from (None: it started empty).
        self.restored_from: SnapshotRecord | None = None
        self.last_flush: FlushResult | None = None
        #: The last flush that uploaded a snapshot: how old the bucket's copy of the data is.
        self.last_upload: FlushResult | None = None
        self.last_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._conn is not None

    def start(self) -> BucketSQLite:
        """Take the lease (a writer), restore the current snapshot after verifying it, and begin flushing.

        Raises rather than start over data it could not load: `WriterConflict`
        if another writer keeps the lease past ``lease_wait``,
        `CurrentSnapshotCorrupt` (naming the newest snapshot that does verify)
        if the current one fails verification, `BucketUnavailable` if the
        bucket cannot be reached within ``startup_timeout``. Nothing is left
        running then, so a later `stop()` cannot upload an empty database.
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
                self._with_startup_retries(lambda: self._restore_into(conn))
                kv = KVStore(kv_conn, max_value_bytes=self.kv_max_value_bytes)
                files = FileStore(files_conn, self.store, prefix=self.config.files_prefix)
            except BaseException:
                self._close_connections()
                self._lease_keeper.release()
                raise
            if self.read_only_reason is not None:
                for c in (conn, kv_conn, files_conn):
                    c.execute("PRAGMA query_only = ON")
                kv.read_only_reason = files.read_only_reason = self.read_only_reason
            self._conn, self._watcher, self._kv, self._files = conn, watcher, kv, files
            # What is in memory now is what the bucket holds (schema creation aside,
            # which every start repeats): nothing to upload until something changes.
            self._flushed_version = self._data_version()
            self.fenced = None
            self._stop_event.clear()
            if self.background_flush and not self.read_only:
                self._thread = threading.Thread(target=self._flush_loop, name="buckethead-flush", daemon=True)
                self._thread.start()
        logger.info(
            "BucketSQLite started from %s (%s)",
            self.store.describe(),
            f"snapshot {self.restored_from.name}, {self.restored_from.size} bytes"
            if self.restored_from
            else "no snapshot yet",
        )
        return self

    def _with_startup_retries(self, step: Callable[[], None]) -> None:
        """Run ``step``, retrying while the bucket is unreachable, for at most ``startup_timeout`` seconds."""
        deadline = time.monotonic() + self.startup_timeout
        for attempt in itertools.count(1):
            try:
                step()
                return
            except (ObjectNotFound, BucketMisconfigured, SnapshotError):
                raise
            except (ObjectStoreError, OSError) as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BucketUnavailable(
                        f"could not reach {self.store.describe()} for {self.startup_timeout:g}s at startup "
                        f"({str(exc).rstrip('.')}). "
                        "Nothing was started, so nothing in the bucket can be overwritten by an empty database. "
                        "If the bucket is only slow to come up, allow a longer wait (STARTUP_TIMEOUT)."
                    ) from exc
                delay = min(remaining, backoff(attempt, cap=5.0))
                logger.warning(
                    "BucketSQLite cannot reach %s (%s); retrying in %.1fs", self.store.describe(), exc, delay
                )
                time.sleep(delay)

    def _restore_into(self, conn: sqlite3.Connection) -> None:
        """Load the current snapshot into ``conn``; a writer then takes the lease and claims the bucket.

        A writer first waits until no other live process holds the lease,
        then loads and verifies, and writes nothing before that has passed:
        one that refuses to start leaves the bucket, its lease included, as
        it found it. The claim is conditional on the current record it read,
        so if another writer committed meanwhile, it reads and verifies again.
        """
        for _ in range(CLAIM_ATTEMPTS):
            if not self.read_only and self.lease is None:
                # Before reading, so that what is restored is what the previous writer flushed last.
                self._lease_keeper.wait_until_free()
            current, listing = self._load_current(conn)
            if self.read_only:
                return
            if self.lease is None:
                self._lease_keeper.take()
            try:
                self._current = self._claim(current, listing)
            except PreconditionFailed:
                continue  # another writer committed since it was read: read and verify again
            self._generations = self._drop_unfinished(listing, current)
            return
        raise SnapshotError(
            f"the current record of {self.store.describe()} changed {CLAIM_ATTEMPTS} times while this writer "
            "started: another process keeps committing to the bucket. Stop it, then start this one again."
        )

    def _load_current(self, conn: sqlite3.Connection) -> tuple[Current | None, list[GenerationObjects]]:
        """Verify the current snapshot and load it into ``conn``; the current record and the generations listed.

        A reader lists the generations only when there is no current record.
        """
        try:
            current = self.history.current()
        except SnapshotCorrupt as damage:
            raise CurrentSnapshotCorrupt(damage, self._newest_verifying(None)) from None
        listing = self.history.generations() if current is None or not self.read_only else []
        if current is None and any(g.has_record for g in listing):
            damage = SnapshotCorrupt(self.history.current_key, "it is missing, but the bucket holds generations")
            raise CurrentSnapshotCorrupt(damage, self._newest_verifying(None))
        source = current.record if current is not None else None
        if source is None:
            legacy = self.history.legacy()
            source = legacy[0] if legacy and legacy[0].name == LEGACY_LATEST else None
        if source is not None:
            try:
                with self.history.fetched(source, keys=self.verify_keys) as path:
                    snapshot.load(path, conn)
            except SnapshotCorrupt as damage:
                raise CurrentSnapshotCorrupt(damage, self._newest_verifying(source.name)) from None
        self.restored_from = source
        return current, listing

    def _claim(self, current: Current | None, listing: list[GenerationObjects]) -> Current:
        """Make the current record name this writer, which fences off a predecessor that is merely paused.

        The claim skips the sequence number the predecessor would use next,
        so a flush it still finishes can never share a number with one of ours.
        """
        used = max((g.seq for g in listing), default=0)
        next_seq = used + 1 if current is None else max(current.next_seq, current.seq + 1, used + 1) + 1
        claimed = self.history.commit(
            current.record if current is not None else None,
            self.writer_id,
            etag=current.etag if current is not None else None,
            next_seq=next_seq,
        )
        self._next_seq = next_seq
        return claimed

    def _newest_verifying(self, excluding: str | None) -> str | None:
        good = self.history.newest_verifying(keys=self.verify_keys, excluding=excluding)
        return good.name if good is not None else None

    def _drop_unfinished(self, listing: list[GenerationObjects], current: Current | None) -> list[GenerationObjects]:
        """Delete the generations that were never committed (see `History.unfinished`); return the others.

        This writer has claimed the bucket, so none of them can be committed
        any more. A failure to delete is only logged.
        """
        unfinished = self.history.unfinished(listing, current.record if current is not None else None)
        for generation in unfinished:
            try:
                self.history.delete(generation)
            except ObjectStoreError:
                logger.warning("BucketSQLite could not delete the uncommitted generation %s", generation.name)
        return [g for g in listing if g not in unfinished]

    @property
    def writer_id(self) -> str:
        """Who this writer is in the current record and on every object it writes: host, pid, lease token."""
        return self.lease.writer_id if self.lease else ""

    def stop(self) -> None:
        """Stop the flush loop, make a final flush, release the lease and close the database.

        Writes through `kv` and `files` are refused from the moment the final
        flush begins, so no write is acknowledged that it misses; connections
        from `connect()` are the caller's to close first. If the final flush
        fails the error is raised and the database stays open (for reads),
        so nothing is lost and `stop()` can be called again. A fenced
        writer cannot flush: it saves its database to a local file instead
        and says where.
        """
        with self._state_lock:
            if self._conn is None:
                return
            self._stop_event.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        if not self.read_only:
            # From here on a write could be acknowledged after the final snapshot was taken, and so be lost.
            for interface in (self.kv, self.files):
                interface.refuse_writes(STOPPING)
            if self.fenced is None:
                self.force_flush()
                self._lease_keeper.release()
            else:
                self._save_fenced_copy()
        with self._state_lock:
            self._close_connections()
            self._conn = self._watcher = None
            self._kv = self._files = None

    def _save_fenced_copy(self) -> None:
        path = self.save_local_copy("fenced")
        logger.error(
            "BucketSQLite was fenced off %s and did not flush at stop; its database is saved in %s. "
            "Compare it with the bucket and restore it (`buckethead restore --file`) if it holds what you need.",
            self.store.describe(),
            path,
        )

    def save_local_copy(self, reason: str) -> Path:
        """Write the database to a new file in the temp directory and return its path.

        The last resort when the bucket cannot take the data (fenced off, or
        unreachable at shutdown): a valid SQLite file an operator can restore.
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = Path(tempfile.gettempdir()) / f"buckethead-{reason}-{stamp}-{os.getpid()}.db"
        path.write_bytes(self._capture().data)
        return path

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
        """Commit a new generation now if anything changed since the last one, ignoring the debounce.

        ``progress`` is called with the bytes uploaded as the upload goes on.
        Raises `WriterFenced` once another writer has taken the bucket over.
        """
        self._require(self._conn)
        if self.read_only_reason is not None:
            raise ReadOnlyError(self.read_only_reason)
        with self._flush_lock:
            self._last_attempt = time.monotonic()
            if self.fenced is not None:
                self._call(self._on_flush_skipped, "fenced")
                raise self.fenced
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
                image = self._capture()
                record = self._commit_generation(image.data, progress)
            except PreconditionFailed as exc:
                self._fence(exc)
            except Exception as exc:  # noqa: BLE001 - _failed() records it and raises it again
                self._failed(exc)
            duration = time.perf_counter() - started
            self._flushed_version = image.data_version
            self.last_error = None
            self._failures, self._retry_at = 0, None
            self.last_flush = FlushResult(
                uploaded=True,
                reason="changed",
                duration_seconds=duration,
                bytes=len(image.data),
                generation=record.name,
                at=time.time(),
            )
            result = self.last_upload = self.last_flush
            self._delete_unreferenced_blobs(doomed)
            self._apply_retention()
        self._call(self._on_flush_complete, duration, len(image.data))
        return result

    def _commit_generation(self, source: bytes | Path, progress: Progress | None = None) -> SnapshotRecord:
        """Write ``source`` as the next generation and make it current, fenced on the current record.

        An attempt that fails is remembered, and deleted once a later
        generation is committed (it may even have been committed unseen,
        until then). Its retry reuses the sequence number.
        """
        current = self._require(self._current)
        seq = self._next_seq
        attempt = self.history.planned(new_generation_name(seq), seq)
        try:
            record = self.history.write(
                attempt.name,
                GENERATION,
                source,
                seq=seq,
                writer=self.writer_id,
                signing_key=self.signing_key,
                parent=current.record.name if current.record is not None else None,
                progress=progress,
            )
            self._current = self.history.commit(record, self.writer_id, etag=current.etag, next_seq=seq + 1)
        except BaseException:
            self._abandoned.append(attempt)
            raise
        self._next_seq = seq + 1
        self._generations.append(replace(attempt, created_at=record.created_at))
        return record

    def _apply_retention(self) -> None:
        """Delete failed attempts and the generations retention no longer keeps; failures are retried next time."""
        for attempt in list(self._abandoned):
            try:
                self.history.delete(attempt)
            except ObjectStoreError:
                logger.warning("BucketSQLite could not delete the failed flush %s; will retry", attempt.name)
                return
            self._abandoned.remove(attempt)
        current = self._current.record.name if self._current and self._current.record else None
        keep = retained(
            self._generations,
            current=current,
            keep=self.snapshot_config.generations_kept,
            max_age_seconds=self.snapshot_config.keep_max_age_seconds,
            now=time.time(),
        )
        for generation in [g for g in self._generations if g.name not in keep]:
            try:
                self.history.delete(generation)
            except ObjectStoreError:
                logger.warning("BucketSQLite could not prune generation %s; will retry", generation.name)
                return
            self._generations.remove(generation)

    def _fence(self, exc: PreconditionFailed) -> NoReturn:
        """Stop flushing for good: another writer committed to the bucket or took the lease."""
        current = None
        try:
            current = self.history.current()
        except Exception:
            logger.debug("could not read the current record after a refused write", exc_info=True)
        other = current.writer if current is not None and current.writer != self.writer_id else "another process"
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.last_upload.at))
            if self.last_upload
            else "this process started"
        )
        self.fenced = WriterFenced(
            f"{other} has taken over {self.store.describe()} as its writer, so this process ({self.writer_id}) "
            f"stopped flushing: its snapshot would roll the bucket back ({exc}). It keeps serving from memory, but "
            f"changes made here since {since} are not in the bucket. Stop this process: its database is then "
            "saved to a local file. Run one writer per bucket (for example `gunicorn --workers 1 --threads 8`)."
        )
        logger.error("BucketSQLite: %s", self.fenced)
        self.last_error = self.fenced
        self._call(self._on_flush_error, self.fenced)
        raise self.fenced from exc

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
        """Record a failed flush, schedule its retry, tell the error callback, and raise."""
        error = self._explain_lock(exc)
        self.last_error = error
        self._failures += 1
        self._retry_at = time.monotonic() + backoff(self._failures, cap=self.snapshot_config.interval_seconds)
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
        with self._watch_lock:
            return int(self._require(self._watcher).execute("PRAGMA data_version").fetchone()[0])

    def _capture(self) -> snapshot.Capture:
        with self._watch_lock:
            return snapshot.capture(self._require(self._watcher))

    def _flush_loop(self) -> None:
        """Flush every ``interval_seconds``, retry failures with backoff, renew the lease at half its life."""
        interval = self.snapshot_config.interval_seconds
        next_flush = time.monotonic() + interval
        while True:
            now = time.monotonic()
            # A fenced writer no longer renews: the lease is another process's now, or soon will be.
            renew_at = self._lease_keeper.due() if self.fenced is None else float("inf")
            wake = min(next_flush, self._retry_at or next_flush, renew_at)
            if self._stop_event.wait(max(0.0, wake - now)):
                return
            try:
                if self.fenced is None and time.monotonic() >= self._lease_keeper.due():
                    self._renew_lease()
                if self.fenced is not None:
                    next_flush = time.monotonic() + interval
                    continue
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    next_flush = time.monotonic() + interval
                    self.force_flush()
                elif time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + interval
                    self.flush()
            except WriterFenced:
                continue
            except Exception as exc:
                retry_in = max(0.0, (self._retry_at or next_flush) - time.monotonic())
                if self._failures > 1:  # the first failure of a streak was logged in full
                    logger.warning("BucketSQLite still cannot flush (%s); retrying in %.1fs", exc, retry_in)
                else:
                    logger.exception(
                        "BucketSQLite could not flush to %s; retrying in %.1fs", self.store.describe(), retry_in
                    )

    # -- the writer lease --------------------------------------------------------------

    @property
    def lease(self) -> WriterLease | None:
        """This engine's own writer lease while it runs as the writer, else None."""
        return self._lease_keeper.lease

    @property
    def lease_seconds(self) -> float:
        """How long the writer lease lasts; it is renewed at half its life."""
        return self._lease_keeper.lease_seconds

    @property
    def lease_wait(self) -> float:
        """How long `start()` waits for another live writer to release the lease."""
        return self._lease_keeper.wait_seconds

    def writer_lease(self) -> WriterLease | None:
        """The bucket's current writer lease (this process's or another's), live or expired, or None."""
        return read_lease(self.store, self.config.key)

    def _renew_lease(self) -> None:
        """Renew the lease now; fence this writer off if another process has taken it over.

        Any other failure is raised, and the renewal retried with backoff.
        """
        try:
            self._lease_keeper.renew()
        except PreconditionFailed as exc:
            with self._flush_lock, contextlib.suppress(WriterFenced):
                self._fence(exc)

    # -- operator actions --------------------------------------------------------------

    def snapshot(self, label: str | None = None, *, progress: Progress | None = None) -> SnapshotEntry:
        """Make the bucket hold the current state now; with ``label``, also keep it under that name.

        Labelled snapshots are never pruned by retention. `FileExistsError`
        if the label is taken.
        """
        self.force_flush(progress=progress)
        if label is None:
            return self.history.find(LATEST)
        validate_label(label)
        current = self._require(self._current).record
        try:
            if current is None:
                # Nothing was flushed by this version yet (an empty or adopted database): label the image itself.
                image = self._capture()
                record = self.history.write(
                    label, LABELLED, image.data, seq=0, writer=self.writer_id, signing_key=self.signing_key
                )
            else:
                record = self.history.copy(
                    current, label, LABELLED, seq=current.seq, writer=self.writer_id, signing_key=self.signing_key
                )
        except (PreconditionFailed, FileExistsError):
            raise FileExistsError(f"a snapshot labelled {label!r} already exists; choose another label") from None
        return self.history.find(record.name)

    def restore(self, source: str | Path, *, progress: Progress | None = None) -> SnapshotEntry:
        """Replace the live database with a snapshot (by name) or a local SQLite file, and flush it.

        The source is verified first; if it fails nothing changes. The
        current state is kept first as the labelled snapshot
        ``pre-restore-<UTC time>``, which is returned, so the restore itself
        can be undone.
        """
        self._require(self._conn)
        if self.read_only_reason is not None:
            raise ReadOnlyError(self.read_only_reason)
        with self._verified(source, progress) as path:
            kept = self.snapshot(label=timestamped_label("pre-restore"))
            with self._flush_lock:
                snapshot.load(path, self._require(self._conn))
        # The restored file may predate columns or tables the interfaces need.
        self.kv._init_schema()
        self.files._init_schema()
        self.force_flush()
        return kept

    def recover(self, source: str | Path, *, progress: Progress | None = None) -> SnapshotRecord:
        """Make ``source`` (a snapshot name or a local file) the current generation, without starting.

        This is the way out when the current snapshot fails verification and
        so no engine can start: the source is verified, written as a new
        generation and committed. The damaged generation stays in the bucket
        until retention prunes it. Takes and releases the lease, so no writer
        may be running.
        """
        if self.started or self.read_only:
            raise SnapshotError("recover() is for a stopped writer engine; a running one uses restore()")
        self._lease_keeper.take(wait=False)
        try:
            with self._verified(source, progress) as path:
                self._generations = self.history.generations()
                self._current = self._claim(self._current_for_recovery(), self._generations)
                return self._commit_generation(path)
        finally:
            self._lease_keeper.release()

    def _current_for_recovery(self) -> Current | None:
        """The current record to replace: as it is, or only its version when it cannot be read."""
        try:
            return self.history.current()
        except SnapshotCorrupt:
            info = self.store.head(self.history.current_key)
            return None if info is None else Current(record=None, writer="", updated_at=0.0, etag=info.etag)

    @contextlib.contextmanager
    def _verified(self, source: str | Path, progress: Progress | None) -> Iterator[Path]:
        """A local copy of ``source`` (a snapshot name, or a SQLite file) that passed every check."""
        if isinstance(source, Path):
            snapshot.validate(source, str(source))
            yield source
            return
        entry = self.history.find(source)
        with self.history.fetched(entry.record, keys=self.verify_keys, progress=progress) as path:
            yield path

    def stats(self) -> dict[str, int]:
        """Database size in bytes, and the numbers of KV entries and stored files."""
        with self._watch_lock:
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
