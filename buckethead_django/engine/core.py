"""BucketSQLite: the host's SQLite database, made durable in a bucket — the engine's public face.

The database is one SQLite file in WAL mode in a RAM-backed directory of the
host (see `database`), shared by every process of the site on that host.
One of them is the host's replicator (see `replicator`): it restores the
file from the bucket when the host has no current copy, ships the file as a
new generation whenever something changed, and makes the final flush. The
others read and write the same file, ask the replicator to flush when they
need it now, and one of them takes the role over when the replicator dies
(see `host`). `start()` attaches this process to its host in the role it
gets; `stop()` leaves, shipping what is unshipped when it is the last.

A process that may only read (``read_only_reason``, or another host keeping
the bucket's lease with ``lease_conflict="read-only"``) gets a private copy
of the latest snapshot instead, and never writes the bucket.

On a read replica's host (``replica=True``) every process reads one file
that follows the bucket: one of them, the follower (see `follower`), keeps
it at the writer's newest flush, and the others take the role over when it
dies. Writes raise `ReadOnlyError`; nothing is ever written to the bucket.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from . import snapshot
from .config import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_KV_MAX_VALUE_BYTES,
    DEFAULT_LEASE_CONFLICT,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_LEASE_WAIT,
    DEFAULT_REPLICA_MAX_LAG,
    DEFAULT_REPLICA_POLL_INTERVAL,
    DEFAULT_STARTUP_TIMEOUT,
    LEASE_CONFLICT_CHOICES,
    BucketConfig,
    SnapshotConfig,
)
from .database import HostDatabase, LocalDir, choose_local_dir, host_identity, temporary_copy_path
from .errors import (
    BucketHeadError,
    BucketMisconfigured,
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
    WriterConflict,
    WriterFenced,
)
from .follower import Follower
from .history import LATEST, LEGACY_LATEST, PRE_RESTORE, History, SnapshotEntry, timestamped_label, validate_label
from .host import Host, ReplicatorInfo
from .interfaces import FileStore, KVStore
from .lease import LeaseKeeper, WriterLease, read_lease
from .objectstore import ObjectStore, Progress, open_object_store
from .record import LABELLED, SnapshotRecord
from .replica_database import ReplicaDatabase
from .replicator import Callbacks, FlushResult, Replicator
from .retry import backoff

logger = logging.getLogger("buckethead_django.engine")

T = TypeVar("T")

#: How often a process that is not the replicator looks whether the role is free to take over.
TAKEOVER_SECONDS = 1.0
#: How long a replicator that is stopping waits for the host's other processes to stop too, before it hands over.
EXIT_GRACE_SECONDS = 5.0
#: Where a process looks for the replicator's answer to its flush request, and for its readiness.
POLL_SECONDS = 0.05

REPLICA = (
    'BucketHead is a read replica on this host (ROLE = "replica"): it serves what the bucket\'s writer has '
    "flushed, and refuses writes. Send writes to the writer host's application."
)
STOPPING = (
    "BucketHead is stopping in this process and has taken its final snapshot, so this write was refused: "
    "it could not be saved. Retry it once the server is back."
)

FlushStartCallback = Callable[[], None]
FlushCompleteCallback = Callable[[float, int], None]
FlushErrorCallback = Callable[[BaseException], None]
FlushSkippedCallback = Callable[[str], None]

__all__ = ["BucketSQLite", "FlushResult"]


class BucketSQLite:
    """The host's SQLite database, restored from and shipped to a bucket.

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
        local_dir: Path | str | LocalDir | None = None,
        lease_conflict: str = DEFAULT_LEASE_CONFLICT,
        replica: bool = False,
        poll_seconds: float | None = DEFAULT_REPLICA_POLL_INTERVAL,
        max_lag: float = DEFAULT_REPLICA_MAX_LAG,
    ) -> None:
        if lease_conflict not in LEASE_CONFLICT_CHOICES:
            raise ValueError(
                f"lease_conflict must be one of {', '.join(LEASE_CONFLICT_CHOICES)}, not {lease_conflict!r}"
            )
        self.config = config
        self.snapshot_config = snapshot_config or SnapshotConfig()
        self.store: ObjectStore = store if store is not None else open_object_store(config)
        #: The bucket's generations, labels and current record under ``config.key``.
        self.history = History(self.store, config.key)
        self.busy_timeout = busy_timeout
        self.kv_max_value_bytes = kv_max_value_bytes
        self.background_flush = background_flush
        #: A read replica's process: the host's file follows the bucket (see `follower`).
        self.replica = replica
        self.read_only_reason = REPLICA if replica and read_only_reason is None else read_only_reason
        #: How often a replica's follower polls the bucket.
        self.poll_seconds = self.snapshot_config.interval_seconds if poll_seconds is None else poll_seconds
        #: How far behind the bucket a replica may fall before its health says it lags.
        self.max_lag = max_lag
        self.lease_conflict = lease_conflict
        self.startup_timeout = startup_timeout
        self.signing_key = signing_key
        #: Snapshots verify when signed with any of these (the signing key first); none: no signature check.
        self.verify_keys: tuple[bytes, ...] = tuple(k for k in (signing_key, *verify_keys) if k)
        #: Where the host's database lives, and why there.
        self.local: LocalDir = (
            local_dir
            if isinstance(local_dir, LocalDir)
            else choose_local_dir(
                Path(local_dir) if local_dir is not None else None,
                host_identity(config.identity, replica=replica),
                Path(tempfile.gettempdir()) / "buckethead",
            )
        )
        #: The host's database file.
        self.database: HostDatabase = (ReplicaDatabase if replica else HostDatabase)(
            self.local.path, busy_timeout=busy_timeout
        )
        self.host = Host(self.local.path)
        self._lease_keeper = LeaseKeeper(self.store, config.key, lease_seconds=lease_seconds, wait_seconds=lease_wait)
        self._callbacks = Callbacks(on_flush_start, on_flush_complete, on_flush_error, on_flush_skipped)
        #: This process as the host's replicator, while it is one.
        self.replicator: Replicator | None = None
        #: This process as a replica host's follower, while it is one.
        self.follower: Follower | None = None
        self._view_dir: Path | None = None
        self._view_source: SnapshotRecord | None = None
        self._state_lock = threading.RLock()
        self._stop_event = threading.Event()
        self._takeover: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._connections: list[sqlite3.Connection] = []
        self._kv: KVStore | None = None
        self._files: FileStore | None = None
        self._last_attempt = float("-inf")
        #: What the last `stop()` shipped as the host's replicator (None: it left as a member, or was fenced).
        self.final_flush: FlushResult | None = None

    # -- lifecycle -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._conn is not None

    def start(self) -> BucketSQLite:
        """Attach this process to its host's database, in the role it gets, and begin.

        The host's first process restores the database from the bucket (after
        verifying it) and becomes the replicator; the others wait until the
        database is ready and use it. Raises rather than start over data it
        could not load: `WriterConflict` if another host keeps the bucket's
        lease past ``lease_wait`` (unless ``lease_conflict="read-only"``),
        `CurrentSnapshotCorrupt` (naming the newest snapshot that does
        verify) if the current one fails verification, `BucketUnavailable` if
        the bucket cannot be reached within ``startup_timeout``. Nothing is
        left running then, and nothing in the bucket was changed.
        """
        with self._state_lock:
            if self._conn is not None:
                return self
            try:
                self._with_startup_retries(self._attach)
                self._open_interfaces()
            except BaseException:
                self._detach()
                raise
            self._stop_event.clear()
            if self.replicator is not None:
                self.replicator.files = self._files
                self.replicator.baseline()
                self.host.join()  # the database is ready: the host's other processes may use it now
                self.replicator.announce()
                if self.background_flush:
                    self.replicator.start_loop()
            elif self.follower is not None:
                self.host.join()
                self.follower.announce()
                if self.background_flush:
                    self.follower.start_loop()
            takes_over = not self.read_only or self.replica  # a read-only view has no role to take over
            if self.replicator is None and self.follower is None and self.background_flush and takes_over:
                self._takeover = threading.Thread(target=self._takeover_loop, name="buckethead-takeover", daemon=True)
                self._takeover.start()
        logger.info("BucketSQLite started as %s on %s (%s)", self.role, self.store.describe(), self._origin())
        return self

    def _origin(self) -> str:
        if self.replica:
            info = self.host.replicator()
            point = info.current_snapshot if info is not None else None
            return f"a read replica at {point}" if point else "a read replica of a bucket with no snapshot yet"
        source = self.restored_from
        if source is not None:
            return f"restored snapshot {source.name}, {source.size} bytes"
        if self.replicator is None and not self.read_only:
            return f"the host's database in {self.local.path}"
        return "no snapshot yet" if self.replicator is None or not self.database.exists() else "the host's database"

    def _with_startup_retries(self, step: Callable[[], None]) -> None:
        """Run ``step``, retrying while the bucket is unreachable, for at most ``startup_timeout`` seconds."""
        deadline = time.monotonic() + self.startup_timeout
        for attempt in itertools.count(1):
            try:
                step()
                return
            except (ObjectNotFound, BucketMisconfigured):
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

    def _attach(self) -> None:
        """Take this process's place on the host: its replicator (a replica's follower), or a member once the
        database is ready."""
        if self.replica:
            self.database.prepare()
            self._join_host(lambda: self._become_follower(alone=self.host.claim_alone()), self.startup_timeout)
            return
        if self.read_only_reason is not None:
            self._attach_view()
            return
        self.database.prepare()
        self._lease_keeper.host_token = self.host.token()
        self._join_host(self._become_writer, self.startup_timeout + self.lease_wait)

    def _join_host(self, become: Callable[[], object], patience: float) -> None:
        """``become`` the host's replicator (a replica's follower) if the role is free, else join the host as soon
        as the process holding the role has made the database ready."""
        deadline = time.monotonic() + patience + 60.0
        while True:
            if self.host.try_become_replicator():
                become()
                return
            info = self.host.replicator()
            if info is not None and info.ready and info.running and self.host.join():
                return
            if time.monotonic() > deadline:
                who = f"pid {info.pid}" if info is not None else "another process"
                raise HostNotReady(
                    f"the host's {'follower' if self.replica else 'replicator'} ({who}) has not made the database "
                    f"in {self.local.path} ready: it may be stuck restoring from the bucket. See its log; this "
                    "process did not start."
                )
            time.sleep(POLL_SECONDS)

    def _become_writer(self) -> None:
        """Play the writer host's replicator, or with ``lease_conflict="read-only"`` a read-only view when another
        host keeps the bucket's lease."""
        # Another process of the host waited for the lease in vain just now: look once, do not wait again.
        waited = self.host.recent_conflict(within=self.lease_wait + TAKEOVER_SECONDS) is not None
        try:
            self._become_replicator(alone=self.host.claim_alone(), wait=not waited)
        except WriterConflict as conflict:
            self.host.record_conflict(str(conflict))
            if self.lease_conflict != "read-only":
                raise
            self.read_only_reason = (
                f"BucketHead is read-only on this host: {conflict} This process serves a copy of the "
                "latest snapshot, and its writes are refused."
            )
            self._attach_view()

    def _become_follower(self, *, alone: bool) -> Follower:
        """Play the replica host's follower (the role lock is held); ``alone``: no other process reads the file."""
        if not isinstance(self.database, ReplicaDatabase):
            raise TypeError("only a replica engine (replica=True) has a follower")
        follower = Follower(
            history=self.history,
            database=self.database,
            host=self.host,
            bucket_id=self.config.identity,
            verify_keys=self.verify_keys,
            poll_seconds=self.poll_seconds,
            prepare=self._make_interface_tables,
        )
        try:
            follower.attach(alone=alone)
        except BaseException:
            follower.close()
            self.host.give_up_replicator()
            raise
        self.follower = follower
        return follower

    def _become_replicator(self, *, alone: bool, wait: bool = True) -> Replicator:
        """Play the host's replicator (the lock is held); ``alone``: no other process uses the database."""
        replicator = Replicator(
            history=self.history,
            lease=self._lease_keeper,
            database=self.database,
            host=self.host,
            bucket_id=self.config.identity,
            snapshot_config=self.snapshot_config,
            signing_key=self.signing_key,
            verify_keys=self.verify_keys,
            callbacks=self._callbacks,
        )
        try:
            replicator.attach(alone=alone, wait=wait)
        except BaseException:
            replicator.close()
            self._lease_keeper.release()
            self.host.give_up_replicator()
            raise
        self.host.forget_conflict()
        self.replicator = replicator
        return replicator

    def _attach_view(self) -> None:
        """A private, read-only copy of the bucket's latest snapshot (verified), for a process that only reads."""
        try:
            current = self.history.current()
        except SnapshotCorrupt as damage:
            raise CurrentSnapshotCorrupt(damage, None) from None
        source = current.record if current is not None else None
        if source is None:
            legacy = self.history.legacy()
            source = legacy[0] if legacy and legacy[0].name == LEGACY_LATEST else None
        self._view_dir = Path(tempfile.mkdtemp(prefix="buckethead-view-"))
        self.database = HostDatabase(self._view_dir, busy_timeout=self.busy_timeout)
        if source is None:
            self.database.create(None)
        else:
            try:
                # One listing says how much of the current generation's chain is committed (no whole catalogue).
                deltas = self.history.committed_deltas(current) if current is not None and current.record else None
                self.database.install(
                    lambda path: self.history.fetch(source, path, keys=self.verify_keys, deltas=deltas)
                )
            except SnapshotCorrupt as damage:
                raise CurrentSnapshotCorrupt(damage, None) from None
        self._view_source = source

    def _make_interface_tables(self, path: Path) -> None:
        """Make the interfaces' tables in the database at ``path``, which no process may write once it is live."""
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            KVStore(conn, max_value_bytes=self.kv_max_value_bytes)
            FileStore(conn, self.store, prefix=self.config.files_prefix)
        finally:
            conn.close()

    def _open_interfaces(self) -> None:
        conn, kv_conn, files_conn = (self.database.connect(check_same_thread=False, autocommit=True) for _ in range(3))
        self._connections = [kv_conn, files_conn, conn]
        kv = KVStore(kv_conn, max_value_bytes=self.kv_max_value_bytes)
        files = FileStore(files_conn, self.store, prefix=self.config.files_prefix)
        if self.read_only_reason is not None:
            for c in self._connections:
                c.execute("PRAGMA query_only = ON")
            kv.read_only_reason = files.read_only_reason = self.read_only_reason
        self._conn, self._kv, self._files = conn, kv, files

    def _takeover_loop(self) -> None:
        """Take the replicator's role over as soon as it is free (the replicator died or left)."""
        failures = 0
        while not self._stop_event.wait(TAKEOVER_SECONDS):
            try:
                if self._take_over(start_loop=True):
                    return
            except BucketHeadError as exc:
                failures += 1
                if failures == 1:  # later failures of the streak would only repeat it
                    logger.exception("BucketSQLite could not take over as the host's replicator; will retry")
                else:
                    logger.debug("BucketSQLite still cannot take over as the host's replicator: %s", exc)

    def _take_over(self, *, start_loop: bool) -> bool:
        """Become the host's replicator if the role is free; True if this process is it now."""
        with self._state_lock:
            if self._conn is None:
                return True  # stopped meanwhile: nothing more to do
            if self.replicator is not None or self.follower is not None:
                return True
            if not self.host.try_become_replicator():
                return False
            if self.replica:
                follower = self._become_follower(alone=False)
                follower.announce()
                if start_loop:
                    follower.start_loop()
                logger.info("BucketSQLite in pid %d took over as the replica's follower", os.getpid())
                return True
            replicator = self._become_replicator(alone=False)
            replicator.files = self._files
            replicator.announce()
            if start_loop:
                replicator.start_loop()
        logger.info("BucketSQLite in pid %d took over as the host's replicator", os.getpid())
        return True

    def stop(self) -> None:
        """Leave the host; its replicator ships what changed first, and releases the lease if it is the last.

        Writes through `kv` and `files` are refused from the moment the final
        flush begins. A replicator that other processes of the host outlive
        hands the role over to them (one takes it within a second); the last
        process of the host releases the bucket's lease. If the final flush
        fails the error is raised and the database stays open, so nothing is
        lost and `stop()` can be called again. A fenced host cannot flush:
        its database is kept in a local file, and the log says where.
        """
        with self._state_lock:
            if self._conn is None:
                return
            self._stop_event.set()
            takeover, self._takeover = self._takeover, None
        if takeover is not None:
            takeover.join()
        if self.replicator is None and not self.read_only and self.host.try_become_replicator():
            # The replicator is gone: this process ships what the host changed before it leaves.
            try:
                self._become_replicator(alone=False).files = self._files
            except BucketHeadError:
                logger.exception("BucketSQLite could not take over to make the host's final flush")
        replicator = self.replicator
        self.final_flush = None
        if replicator is not None:
            replicator.stop_loop()
            # From here on a write could be acknowledged after the final snapshot was taken, and so be lost.
            for interface in (self.kv, self.files):
                interface.refuse_writes(STOPPING)
            if replicator.fenced is None:
                self.final_flush = replicator.force_flush()
                if self._wait_alone():
                    if replicator.dirty:  # written by a process that left while this one flushed
                        self.final_flush = replicator.force_flush()
                    replicator.checkpoint()
                    self._lease_keeper.release()
            else:
                self._save_fenced_copy()
        with self._state_lock:
            self._detach()

    def _wait_alone(self) -> bool:
        """Wait a little for the host's other processes to stop too; True once this one is the last."""
        deadline = time.monotonic() + EXIT_GRACE_SECONDS
        while not self.host.claim_alone():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    def _detach(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections = []
        self._conn = self._kv = self._files = None
        if self.replicator is not None:
            self.replicator.close()
            self.replicator = None
        if self.follower is not None:
            self.follower.close()
            self.follower = None
        self.host.leave()
        if self._view_dir is not None:
            shutil.rmtree(self._view_dir, ignore_errors=True)
            self._view_dir = None

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
        conn = self.database.connect(autocommit=True)
        try:
            self.database.capture(conn, path)
        finally:
            conn.close()
        return path

    @property
    def read_only(self) -> bool:
        """True for a read-only view: writes raise `ReadOnlyError`, nothing is ever uploaded."""
        return self.read_only_reason is not None

    @property
    def role(self) -> str:
        """This process on its host: ``replicator``, ``member`` (another process ships), ``replica`` (a read
        replica's process: see `follower`) or ``read-only``."""
        if self.replica:
            return "replica"
        if self.read_only:
            return "read-only"
        return "replicator" if self.replicator is not None else "member"

    def replicator_info(self) -> ReplicatorInfo | None:
        """The host's replicator (a replica's follower) as it announced itself (None for a read-only view, or
        before any did)."""
        return None if self.read_only and not self.replica else self.host.replicator()

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
        """A new connection to the host's database, for one thread."""
        self._require(self._conn)
        return self.database.connect(
            check_same_thread=check_same_thread, autocommit=autocommit, read_only=self.read_only
        )

    @property
    def kv(self) -> KVStore:
        return self._require(self._kv)

    @property
    def files(self) -> FileStore:
        return self._require(self._files)

    def _require(self, value: T | None) -> T:
        if value is None:
            raise NotStarted("BucketSQLite is not running: call start() (or use it as a context manager) first")
        return value

    # -- flushing ----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True if something was committed on the host since the bucket's last generation."""
        if self.read_only:
            return False
        if self.replicator is not None:
            return self.replicator.dirty
        state = self.host.state()
        return state is None or self.database.fingerprint() != state.fingerprint

    def flush(self) -> FlushResult:
        """Snapshot now unless one was attempted less than ``min_interval_seconds`` ago or nothing changed."""
        if self.replicator is not None:
            return self.replicator.flush()
        if time.monotonic() - self._last_attempt < self.snapshot_config.min_interval_seconds:
            self._callbacks.call(self._callbacks.on_flush_skipped, "debounced")
            return FlushResult(uploaded=False, reason="debounced", at=time.time())
        return self.force_flush()

    def force_flush(self, *, progress: Progress | None = None) -> FlushResult:
        """Commit a new generation now if anything changed on the host since the last one.

        In the replicator it happens here; any other process asks the
        replicator and waits for its answer. ``progress`` is called with the
        bytes uploaded as the upload goes on (in the replicator). Raises
        `WriterFenced` once another host has taken the bucket over.
        """
        self._require(self._conn)
        if self.read_only_reason is not None:
            raise ReadOnlyError(self.read_only_reason)
        self._last_attempt = time.monotonic()
        if self.replicator is not None:
            return self.replicator.force_flush(progress=progress)
        return self._ask_replicator()

    def _ask_replicator(self) -> FlushResult:
        """Ask the host's replicator to flush now, and wait until it has."""
        before = self.host.state()
        asked = self.host.request_flush()
        patience = max(self.startup_timeout, 2 * self.snapshot_config.min_interval_seconds)
        deadline = time.monotonic() + patience
        while True:
            info = self.host.replicator()
            if (info is None or not info.running) and self.background_flush is False:
                self._take_over(start_loop=False)  # no takeover thread in this process: take the free role now
            if self.replicator is not None:  # this process took the role over meanwhile
                return self.replicator.force_flush()
            state = self.host.state()
            if state is not None and state.recorded_at >= asked:
                changed = before is None or state.point != before.point
                return FlushResult(
                    uploaded=changed, reason="changed" if changed else "unchanged", generation=state.generation,
                    at=state.recorded_at, point=state.point,
                )  # fmt: skip
            if info is not None and info.fenced:
                raise WriterFenced(info.fenced)
            if time.monotonic() > deadline:
                who = f"pid {info.pid}" if info is not None else "no process"
                detail = f" Its last error: {info.last_error}" if info is not None and info.last_error else ""
                raise SnapshotError(
                    f"the host's replicator ({who}) did not flush within {patience:g}s of "
                    f"being asked.{detail} The change stays in the host's database and is shipped once it can be."
                )
            time.sleep(POLL_SECONDS)

    # -- what the process knows of the host's replication ----------------------------------------

    @property
    def fenced(self) -> WriterFenced | None:
        """Why the host no longer ships (another host took the bucket over), or None."""
        if self.replicator is not None:
            return self.replicator.fenced
        info = self.replicator_info()
        return WriterFenced(info.fenced) if info is not None and info.fenced else None

    @property
    def last_error(self) -> BaseException | None:
        """The error of the host's last failed flush, or None."""
        if self.replicator is not None:
            return self.replicator.last_error
        info = self.replicator_info()
        return SnapshotError(info.last_error) if info is not None and info.last_error else None

    @property
    def last_flush(self) -> FlushResult | None:
        """The replicator's last flush (in the replicator; elsewhere, its last upload)."""
        return self.replicator.last_flush if self.replicator is not None else self.last_upload

    @property
    def last_upload(self) -> FlushResult | None:
        """The host's last committed generation: how old the bucket's copy of the data is."""
        if self.replicator is not None:
            return self.replicator.last_upload
        info = self.replicator_info()
        if info is None or info.last_upload_at is None:
            return None
        return FlushResult(uploaded=True, reason="changed", generation=info.current_snapshot, at=info.last_upload_at)

    @property
    def replica_lag(self) -> float | None:
        """On a read replica: seconds since its follower last found that the bucket held nothing newer than the
        host's file (None elsewhere, or before the first look). Writes are seen here about this much later, plus
        the writer's flush interval."""
        if not self.replica:
            return None
        info = self.host.replicator()
        if info is None or info.checked_at is None:
            return None
        return max(0.0, time.time() - info.checked_at)

    @property
    def restored_from(self) -> SnapshotRecord | None:
        """The snapshot this process's role restored the database from (None: the host's copy was current)."""
        if self.replicator is not None:
            return self.replicator.restored_from
        return self._view_source

    @property
    def set_aside(self) -> list[tuple[str, str]]:
        """Copies of the host's database that had to make way for the bucket's at a start: ``(path, why)``.

        They stay, and say so, until the operator removes them.
        """
        return [] if self.read_only else self.database.set_aside_copies()

    # -- the writer lease --------------------------------------------------------------

    @property
    def lease(self) -> WriterLease | None:
        """This process's writer lease while it is the host's replicator, else None."""
        return self._lease_keeper.lease

    @property
    def lease_seconds(self) -> float:
        """How long the writer lease lasts; it is renewed at half its life."""
        return self._lease_keeper.lease_seconds

    @property
    def lease_wait(self) -> float:
        """How long `start()` waits for another live writer to release the lease."""
        return self._lease_keeper.wait_seconds

    @property
    def writer_id(self) -> str:
        """Who this writer is in the current record and on every object it writes: host, pid, lease token."""
        return self.lease.writer_id if self.lease else ""

    def writer_lease(self) -> WriterLease | None:
        """The bucket's current writer lease (this host's or another's), live or expired, or None."""
        return read_lease(self.store, self.config.key)

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
        current = self.history.current()
        seq = current.record.seq if current is not None and current.record is not None else 0
        try:
            if self.history.store.head(self.history.record_key(label, LABELLED)) is not None:
                raise FileExistsError(label)
            # The state as it is now, whole: a label outlives the generation (and deltas) it was flushed in.
            with temporary_copy_path("buckethead-label-") as image:
                conn = self.database.connect(autocommit=True)
                try:
                    self.database.capture(conn, image)
                finally:
                    conn.close()
                labelled = self.history.write(
                    label, LABELLED, image, seq=seq, writer=self.writer_id, signing_key=self.signing_key
                )
        except (PreconditionFailed, FileExistsError):
            raise FileExistsError(f"a snapshot labelled {label!r} already exists; choose another label") from None
        return self.history.find(labelled.name)

    def restore(self, source: str | Path, *, progress: Progress | None = None) -> SnapshotEntry:
        """Replace the host's database with a snapshot (by name) or a local SQLite file, and flush it.

        The source is verified first; if it fails nothing changes. The
        current state is kept first as the labelled snapshot
        ``pre-restore-<UTC time>``, which is returned, so the restore itself
        can be undone. Every process of the host sees the restored state at
        its next transaction.
        """
        self._require(self._conn)
        if self.read_only_reason is not None:
            raise ReadOnlyError(self.read_only_reason)
        with self._verified(source, progress) as path:
            kept = self.snapshot(label=timestamped_label(PRE_RESTORE))
            self.database.replace_with(path)
        # The restored file may predate columns or tables the interfaces need.
        self.kv._init_schema()
        self.files._init_schema()
        self.force_flush()
        try:
            self.history.prune_labels(PRE_RESTORE, self.snapshot_config.keep_pre_restore)
        except ObjectStoreError:
            logger.warning("BucketSQLite could not prune old %s labels; the next restore tries again", PRE_RESTORE)
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
                replicator = Replicator(
                    history=self.history, lease=self._lease_keeper, database=self.database, host=self.host,
                    bucket_id=self.config.identity, snapshot_config=self.snapshot_config,
                    signing_key=self.signing_key, verify_keys=self.verify_keys, callbacks=self._callbacks,
                )  # fmt: skip
                return replicator.recover(path)
        finally:
            self._lease_keeper.release()

    @contextlib.contextmanager
    def _verified(self, source: str | Path, progress: Progress | None) -> Iterator[Path]:
        """A local copy of ``source`` (a snapshot name, or a SQLite file) that passed every check."""
        if isinstance(source, Path):
            snapshot.validate(source, str(source))
            yield source
            return
        entry = self.history.find(source)
        with self.history.fetched(entry.record, keys=self.verify_keys, progress=progress, deltas=entry.deltas) as path:
            yield path

    def stats(self) -> dict[str, int]:
        """Database size in bytes, and the numbers of KV entries and stored files."""
        conn = self.database.connect(autocommit=True)
        try:
            page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        finally:
            conn.close()
        return {"database_bytes": page_count * page_size, "kv_entries": len(self.kv), "files": len(self.files)}
