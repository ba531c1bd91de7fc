"""The host's replicator: the one process of the host that talks to the bucket for its database.

It takes the bucket's writer lease, makes the host's database hold what the
bucket holds (once per host, not once per process), ships the database as a
new generation whenever something changed, and makes the final flush. Every
other process of the host reads and writes the same file; when the
replicator dies, one of them takes the role over from the state kept beside
the file (see `host`), with nothing re-uploaded and nothing lost.

What the database must hold is decided when the role is taken:

- no file yet (a new host): it is restored from the bucket's current
  generation (verified first), under a temporary name, then moved into place;
- the file holds the bucket's current generation, maybe with changes made
  since: it is kept, and the changes are shipped — no download;
- the bucket moved on (another host wrote it), the file is damaged, or it is
  of unknown origin: at the host's start, with no other process using it, a
  file with unshipped changes is copied aside (``set-aside/`` beside it) and
  the bucket's generation restored, and the operator is told; in a takeover,
  with other processes using it, it is left alone and this host is fenced.

A starting writer writes nothing to the bucket before that decision has
passed, so a writer that refuses to start leaves the bucket as it found it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from . import chain as chains
from .chain import Link, merges_due
from .config import SnapshotConfig
from .database import Fingerprint, HostDatabase, temporary_copy_path
from .delta import encode as encode_delta
from .delta import merge
from .errors import (
    CurrentSnapshotCorrupt,
    ObjectStoreError,
    PreconditionFailed,
    SnapshotCorrupt,
    SnapshotError,
    WriterFenced,
)
from .history import (
    LEGACY_LATEST,
    ChainHead,
    Current,
    GenerationObjects,
    History,
    generation_of,
    new_generation_name,
    point_name,
    retained,
)
from .host import COUNTERS, Host, HostState, Shipped
from .interfaces import FileStore
from .lease import LeaseKeeper
from .objectstore import Progress
from .record import GENERATION, SnapshotRecord
from .retry import backoff
from .wal import WalChanges, WalPosition, current_position, read_changes

logger = logging.getLogger("buckethead_django.engine")

#: How often a starting replicator reads and claims again when another writer committed meanwhile.
CLAIM_ATTEMPTS = 3
#: How often the loop looks for a flush another process of the host asked for.
REQUEST_POLL_SECONDS = 0.1
#: What `Replicator._settle` did with the host's database file.
INSTALLED, KEPT, FENCED = "installed", "kept", "fenced"
#: The replicator folds the WAL into the database file once it holds this many frames (SQLite's own default).
CHECKPOINT_FRAMES = 1000
#: Bytes of the deltas on the chain's restore path kept in memory, so that merging them reads nothing back.
RECENT_DELTA_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class FlushResult:
    """What one flush did: ``uploaded`` False means it was skipped (see ``reason``)."""

    uploaded: bool
    reason: str
    duration_seconds: float = 0.0
    bytes: int = 0
    #: The generation the flush committed to.
    generation: str | None = None
    at: float = 0.0
    #: The point it committed: ``<generation>+<deltas>`` (see `history.Point`).
    point: str | None = None


@dataclass(frozen=True)
class Callbacks:
    """The engine's flush callbacks; a failing one is logged, never allowed to break a flush."""

    on_flush_start: Callable[[], None] | None = None
    on_flush_complete: Callable[[float, int], None] | None = None
    on_flush_error: Callable[[BaseException], None] | None = None
    on_flush_skipped: Callable[[str], None] | None = None

    def call(self, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            logger.exception("BucketSQLite flush callback %r raised", callback)


class Replicator:
    """This process as its host's replicator (it holds the host's replicator lock)."""

    def __init__(
        self,
        *,
        history: History,
        lease: LeaseKeeper,
        database: HostDatabase,
        host: Host,
        bucket_id: str,
        snapshot_config: SnapshotConfig,
        signing_key: bytes | None,
        verify_keys: Sequence[bytes],
        callbacks: Callbacks,
    ) -> None:
        self.history = history
        self.lease = lease
        self.database = database
        self.host = host
        self.bucket_id = bucket_id
        self.snapshot_config = snapshot_config
        self.signing_key = signing_key
        self.verify_keys = tuple(verify_keys)
        self.callbacks = callbacks
        #: The file store, once the engine has opened it: blobs whose removal a snapshot records are deleted.
        self.files: FileStore | None = None
        self._current: Current | None = None
        self._next_seq = 1
        self._generations: list[GenerationObjects] = []
        #: Flushes that failed after writing some of their objects: deleted once a later one commits.
        self._abandoned: list[GenerationObjects] = []
        self._failures = 0
        self._retry_at: float | None = None
        #: Set when another writer took the bucket over: this host no longer ships.
        self.fenced: WriterFenced | None = None
        #: The generation the database was restored from at this start (None: it was not restored).
        self.restored_from: SnapshotRecord | None = None
        self.last_flush: FlushResult | None = None
        #: The last flush that uploaded a snapshot: how old the bucket's copy of the data is.
        self.last_upload: FlushResult | None = None
        self.last_error: BaseException | None = None
        self._watcher: sqlite3.Connection | None = None
        #: Takes the copies, under the flush lock: `dirty` never waits for one.
        self._capturer: sqlite3.Connection | None = None
        self._flushed_version: int | None = None
        #: True while the file holds changes no generation has (found at start, before any commit is seen).
        self._pending = False
        #: The end of the committed chain of the current generation: what the next delta follows.
        self._chain = ChainHead(0, "")
        #: How far the WAL was read for that chain (None: unknown, so the next flush writes a base).
        self._position: WalPosition | None = None
        #: True once this replicator read the WAL while holding a pin: a restarted WAL then lost nothing unread.
        self._continuous = False
        #: Pages read from the WAL before a checkpoint, not shipped yet (see `_checkpoint`), and the size after them.
        self._carry: dict[int, bytes] = {}
        self._carry_db_pages = 0
        #: False until this writer committed a generation of its own: it never adds to another writer's chain.
        self._own_generation = False
        #: The links a restore of the chain's end reads (see `chain`): past a fraction of the database, a new base.
        self._path: list[Link] = []
        #: The objects of the links on that path, as written, up to `RECENT_DELTA_BYTES`: what the next merge reads.
        self._recent: dict[str, bytes] = {}
        #: The host's flush counters as this replicator keeps them (None until its first count; see `_count`).
        self._counts: dict[str, int] | None = None
        #: Read transactions that keep the WAL from being restarted before it is read (see `wal`).
        self._pins: list[sqlite3.Connection] = []
        self._alone = False
        self._last_attempt = float("-inf")
        self._last_request = 0.0
        self._flush_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def writer_id(self) -> str:
        return self.lease.lease.writer_id if self.lease.lease else ""

    @property
    def current_record(self) -> SnapshotRecord | None:
        """The generation the bucket's current record names, as this replicator last committed or claimed it."""
        return self._current.record if self._current is not None else None

    @property
    def current_point(self) -> str | None:
        """The point (``<generation>+<deltas>``) the bucket's chain ends at, as this replicator last shipped it."""
        return self._current_name()

    def announce(self) -> None:
        """Tell the host's other processes that the database is ready, and how this replicator fares."""
        with contextlib.suppress(OSError):  # a full directory: the others see a stale state, nothing is lost
            self._announce()

    def _announce(self) -> None:
        self.host.announce(
            ready=True,
            fenced=None if self.fenced is None else str(self.fenced),
            last_error=None if self.last_error is None else str(self.last_error),
            last_upload_at=self.last_upload.at if self.last_upload is not None else None,
            current_snapshot=generation_of(self._current_name()),
            lease_expires_at=self.lease.lease.expires_at if self.lease.lease is not None else None,
            **(self._counts or {}),
        )

    def _count(self, **increments: int) -> None:
        """Add to the host's flush counters (see `ReplicatorInfo`), written with the next announcement.

        They start from the host's announcement, which carries a previous replicator's counts on.
        """
        if self._counts is None:
            info = self.host.replicator()
            self._counts = {name: getattr(info, name) if info is not None else 0 for name in COUNTERS}
        for name, n in increments.items():
            self._counts[name] += n

    # -- taking the role -------------------------------------------------------------------

    def attach(self, *, alone: bool, wait: bool = True) -> None:
        """Make the database hold what it must (see the module's docstring), take the lease and claim the bucket.

        ``alone`` says no other process has the file open (the host's
        start), so a stale file may be replaced. Raises, having written
        nothing to the bucket, when the current snapshot fails verification,
        or `WriterConflict` when another host keeps the lease past the wait
        (no wait with ``wait=False``).
        """
        self._alone = alone
        for _ in range(CLAIM_ATTEMPTS):
            if self.lease.lease is None:
                # Before reading, so that what is restored is what the previous writer flushed last.
                self.lease.wait_until_free(wait=wait)
            current, listing = self._read_bucket()
            committed = current.record.name if current is not None and current.record is not None else None
            generation = next((g for g in listing if g.name == committed), None)
            chain = generation.deltas if generation is not None else ()
            if current is not None:
                chain = chains.upto(chain, self.history.committed_deltas(current, chain))
            links = generation.links if generation is not None else ()
            settled, shipped = self._settle(current, chain, links, alone=alone)
            self._watch()
            if settled == FENCED:
                return  # this host's file went its own way while other processes use it: ship nothing
            if settled == KEPT:
                # Read before the file is looked at: a commit after this is seen by the watcher, one before by this.
                self._flushed_version = self._data_version()
                self._continue_from(shipped)
                state = self.host.state()
                if shipped is not None and state is not None:  # the bucket's copy was whole then
                    self.last_upload = FlushResult(
                        uploaded=True,
                        reason="changed",
                        generation=generation_of(shipped[0].point),
                        at=state.recorded_at,
                        point=shipped[0].point,
                    )
            if self.lease.lease is None:
                self.lease.take(wait=wait)
            try:
                self._current = self._claim(current, listing, deltas=chains.end(chain))
            except PreconditionFailed:
                continue  # another writer committed since it was read: read and decide again
            self._generations = self._drop_unfinished(listing, current)
            return
        raise SnapshotError(
            f"the current record of {self.history.store.describe()} changed {CLAIM_ATTEMPTS} times while this "
            "writer started: another host keeps committing to the bucket. Stop it, then start this one again."
        )

    def _watch(self) -> None:
        if self._watcher is None:
            self._watcher, self._capturer = (
                self.database.connect(check_same_thread=False, autocommit=True) for _ in range(2)
            )
            # A copy reads every page once: mapped, they would all count in this process's RSS, and stay there.
            self._capturer.execute("PRAGMA mmap_size = 0")
            self._pin()

    def _continue_from(self, shipped: tuple[Shipped, Fingerprint] | None) -> None:
        """Take up the chain the host's file equalled (None: an adopted file, shipped whole at the first flush)."""
        if shipped is None:
            self._pending, self._position = True, None
            return
        point, looked = shipped
        self._chain = ChainHead(int(point.point.rpartition("+")[2] or 0), point.digest)
        if self.database.fingerprint() == looked:
            # Nothing was written since: the WAL as it is now holds nothing unshipped.
            self._pending, self._position, self._continuous = False, current_position(self.database.path), True
        else:
            self._pending, self._position = True, point.position

    def _pin(self) -> sqlite3.Connection:
        """Open a read transaction that keeps the WAL from being restarted; the older pins stay until `_unpin`."""
        conn = self.database.connect(check_same_thread=False, autocommit=True)
        conn.execute("PRAGMA mmap_size = 0")
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        self._pins.append(conn)
        return conn

    def _unpin(self, *, keep: sqlite3.Connection | None = None) -> None:
        """Close every pin but ``keep``."""
        for conn in [c for c in self._pins if c is not keep]:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._pins.remove(conn)

    def baseline(self) -> None:
        """At the host's start, take what the file holds now as shipped, unless it has changes found at start.

        Called once the engine has created its tables (which every start
        repeats), so that creating them uploads nothing on its own. No other
        process can write yet. A takeover has nothing to add: what changed
        before it was found by `attach`, and what changes after by the watcher.
        """
        if not self._alone or self.fenced is not None:
            return
        if not self._pending:
            self._flushed_version = self._data_version()
            self._record_shipped(self.database.fingerprint(), time.time())

    def _source_name(self) -> str | None:
        return self.restored_from.name if self.restored_from is not None else None

    def _read_bucket(self) -> tuple[Current | None, list[GenerationObjects]]:
        try:
            current = self.history.current()
        except SnapshotCorrupt as damage:
            raise CurrentSnapshotCorrupt(damage, self._newest_verifying(None)) from None
        listing = self.history.generations()
        if current is None and any(g.has_record for g in listing):
            damage = SnapshotCorrupt(self.history.current_key, "it is missing, but the bucket holds generations")
            raise CurrentSnapshotCorrupt(damage, self._newest_verifying(None))
        return current, listing

    def _settle(
        self, current: Current | None, chain: tuple[tuple[int, float], ...], links: Sequence[Link], *, alone: bool
    ) -> tuple[str, tuple[Shipped, Fingerprint] | None]:
        """Make the file hold what it must: `INSTALLED` the bucket's, `KEPT` as it is (it holds the bucket's
        current generation, maybe with changes since), or `FENCED` (it does not, but other processes use it).

        With `KEPT` comes how the file looked when it equalled the bucket's generation (None: it never did,
        an adopted file), so that changes since are shipped.
        """
        source = current.record if current is not None else None
        if source is None:
            legacy = self.history.legacy()
            source = legacy[0] if legacy and legacy[0].name == LEGACY_LATEST else None
        wanted = None if source is None else point_name(source.name, chains.end(chain))
        self.restored_from = source
        state = self.host.state()
        if not self.database.exists():
            self._install(source, chains.end(chain), links)
            return INSTALLED, None
        damage = self.database.quick_check() if alone else []
        ours = state is not None and state.bucket == self.bucket_id
        shipped = state.find(wanted) if ours else None  # type: ignore[union-attr]
        if shipped is not None and shipped[0].position is None and not shipped[0].digest and source is not None:
            shipped = (replace(shipped[0], digest=source.sha256), shipped[1])  # recorded by a version without deltas
        if shipped is not None and not damage:
            self.restored_from = None  # nothing was restored: the host's copy is current
            return KEPT, shipped
        if not alone:
            self._fence_host(
                f"this host's database does not hold the bucket's current generation {wanted!r} (it last held "
                f"{state.point if state else 'something of unknown origin'!r}): another host wrote the bucket "
                "meanwhile. It keeps serving, but nothing it changes is shipped. Restart all of this host's "
                "processes: its copy is then kept aside and the bucket's restored."
            )
            return FENCED, None
        if damage:
            self._put_aside("damaged", f"it failed SQLite's integrity check ({'; '.join(damage[:3])})")
        elif not ours:
            if source is None:
                # A file of this host made by hand or by an older version, over an empty bucket: adopt it.
                logger.warning(
                    "BucketSQLite adopted the database file %s, which no replicator recorded, over an empty "
                    "bucket; it is shipped as the first generation.",
                    self.database.path,
                )
                self.database.use_wal()
                return KEPT, None
            self._put_aside("unknown", "no replicator of this bucket recorded what it holds")
        elif self.database.fingerprint() != state.fingerprint:  # type: ignore[union-attr]
            self._put_aside(
                "diverged",
                f"it holds changes never shipped, and the bucket moved on from {state.point!r} to "  # type: ignore[union-attr]
                f"{wanted!r} (another host wrote it)",
            )
        self._install(source, chains.end(chain), links)
        return INSTALLED, None

    def _install(self, source: SnapshotRecord | None, deltas: int, links: Sequence[Link]) -> None:
        """Replace the file with ``source`` and its first ``deltas`` deltas, found among ``links`` (verified
        first; None: an empty database). Nobody has it open."""
        if source is None:
            self.database.create(None)
        else:
            self.database.prepare()
            self.database.check_room(source.size)

            def download(path: Path) -> None:
                self._chain = self.history.fetch(source, path, keys=self.verify_keys, deltas=deltas, links=links)

            try:
                self.database.install(download)  # straight into the host's directory: no second copy
            except SnapshotCorrupt as damage:
                raise CurrentSnapshotCorrupt(damage, self._newest_verifying(source.name)) from None
        self.restored_from = source
        # A new file, opened by nobody yet: every frame its WAL will ever hold is a change after the chain's end.
        self._pending, self._position, self._continuous = False, WalPosition(), True

    def _put_aside(self, reason: str, why: str) -> None:
        path = self.database.set_aside(reason, why)
        logger.error(
            "BucketSQLite set this host's database aside as %s, because %s. The bucket's current generation is "
            "restored in its place. Compare the copy with it, and restore it (`buckethead restore --file %s`) "
            "if it holds what you need.",
            path,
            why,
            path,
        )

    def _claim(self, current: Current | None, listing: list[GenerationObjects], *, deltas: int) -> Current:
        """Make the current record name this writer, which fences off a predecessor that is merely paused.

        The claim skips the sequence number the predecessor would use next,
        so a flush it still finishes can never share a number with one of
        ours; and it records how many ``deltas`` of the current generation
        are committed, so a delta the predecessor still adds is never part
        of the history. This writer ships its own changes in a generation
        of its own, whose first flush is a new base.
        """
        used = max((g.seq for g in listing), default=0)
        next_seq = used + 1 if current is None else max(current.next_seq, current.seq + 1, used + 1) + 1
        claimed = self.history.commit(
            current.record if current is not None else None,
            self.writer_id,
            etag=current.etag if current is not None else None,
            next_seq=next_seq,
            deltas=deltas,
        )
        self._next_seq = next_seq
        self._own_generation = False
        if current is not None and current.record is not None and current.writer == current.record.writer:
            # The generation's own writer was current until now: listed after the claim, a delta it wrote before
            # it is counted, and any later one finds the current record changed and is never reported done (see
            # `_still_current`). A chain an earlier claim cut stays cut.
            listed = chains.reach(self.history.links(current.record.name, after=deltas), deltas)
            if listed != deltas:
                self.history.commit(current.record, self.writer_id, etag=claimed.etag, next_seq=next_seq, deltas=listed)
                raise PreconditionFailed(self.history.current_key, "the predecessor committed more deltas meanwhile")
        return claimed

    def _newest_verifying(self, excluding: str | None) -> str | None:
        return self.history.newest_verifying(keys=self.verify_keys, excluding=excluding)

    def _drop_unfinished(self, listing: list[GenerationObjects], current: Current | None) -> list[GenerationObjects]:
        """Delete the generations that were never committed (see `History.unfinished`); return the others."""
        unfinished = self.history.unfinished(listing, current.record if current is not None else None)
        for generation in unfinished:
            try:
                self.history.delete(generation)
            except ObjectStoreError:
                logger.warning("BucketSQLite could not delete the uncommitted generation %s", generation.name)
        return [g for g in listing if g not in unfinished]

    def recover(self, source: Path) -> SnapshotRecord:
        """Commit the verified database at ``source`` as the current generation; no engine runs on the bucket."""
        self._generations = self.history.generations()
        try:
            current = self.history.current()
        except SnapshotCorrupt:
            info = self.history.store.head(self.history.current_key)
            current = None if info is None else Current(record=None, writer="", updated_at=0.0, etag=info.etag)
        deltas = self.history.committed_deltas(current) if current is not None else 0
        self._current = self._claim(current, self._generations, deltas=deltas)
        self._chain = ChainHead(deltas, "")
        return self._commit_generation(source)

    # -- shipping ------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True if something was committed (by any process) since the last flush. Costs one pragma."""
        return self._pending or bool(self._carry) or self._data_version() != self._flushed_version

    def flush(self) -> FlushResult:
        """Ship now unless a flush was attempted less than ``min_interval_seconds`` ago or nothing changed."""
        if time.monotonic() - self._last_attempt < self.snapshot_config.min_interval_seconds:
            self.callbacks.call(self.callbacks.on_flush_skipped, "debounced")
            return FlushResult(uploaded=False, reason="debounced", at=time.time())
        return self.force_flush()

    def force_flush(self, *, progress: Progress | None = None) -> FlushResult:
        """Ship what changed since the last flush now (a delta, or a new base), ignoring the debounce.

        Raises `WriterFenced` once another host has taken the bucket over.
        A lease that is due is renewed first: a writer that was paused past
        its lease learns it was taken over before it ships anything.
        """
        if self.fenced is None and time.monotonic() >= self.lease.due():
            self.renew_lease()
        with self._flush_lock:
            self._last_attempt = time.monotonic()
            if self.fenced is not None:
                self.callbacks.call(self.callbacks.on_flush_skipped, "fenced")
                raise self.fenced
            # Before anything is read: a commit after this instant makes the file look changed, never shipped.
            seen_at, seen = time.time(), self.database.fingerprint()
            try:
                changed = self.dirty
            except sqlite3.OperationalError as exc:
                self._failed(exc)
            files = self.files
            if not changed:
                # Nothing changed since the last generation, so it already records every pending deletion.
                if files is not None:
                    self._delete_unreferenced_blobs(files.pending_deletions())
                return self._unchanged(seen, seen_at)
            self.callbacks.call(self.callbacks.on_flush_start)
            started = time.perf_counter()
            doomed = files.pending_deletions() if files is not None else []  # their row deletions precede the capture
            # Before the WAL is read: from now on it cannot be restarted before what is read here is shipped.
            pin = self._pin()
            try:
                version = self._data_version()
                changes = self._read_wal()
                size = self._ship(changes, seen, progress) if changes is not None else self._ship_base(seen, progress)
            except PreconditionFailed as exc:
                self._drop_pin(pin)
                self._fence(exc)
            except Exception as exc:  # noqa: BLE001 - _failed() records it and raises it again
                self._drop_pin(pin)
                self._failed(exc)
            self._unpin(keep=pin)
            self._continuous = True
            self._flushed_version, self._pending = version, False
            if size is None:  # the commits seen changed no page (a checkpoint moved the file, say)
                return self._unchanged(seen, seen_at)
            duration = time.perf_counter() - started
            self._record_shipped(seen, seen_at)
            self.last_error = None
            self._failures, self._retry_at = 0, None
            result = self.last_flush = self.last_upload = FlushResult(
                uploaded=True, reason="changed", duration_seconds=duration, bytes=size,
                generation=generation_of(self._current_name()), at=time.time(), point=self._current_name(),
            )  # fmt: skip
            self._count(flushes=1, uploaded_bytes=size)
            self._delete_unreferenced_blobs(doomed)
            self._merge()
            self._apply_retention()
            if current_position(self.database.path).frame >= CHECKPOINT_FRAMES:
                self._checkpoint()
        self.announce()
        self.callbacks.call(self.callbacks.on_flush_complete, duration, size)
        return result

    def _unchanged(self, seen: Fingerprint, seen_at: float) -> FlushResult:
        self._record_shipped(seen, seen_at)
        self.last_flush = FlushResult(uploaded=False, reason="unchanged", at=time.time())
        self.callbacks.call(self.callbacks.on_flush_skipped, "unchanged")
        return self.last_flush

    def _read_wal(self) -> WalChanges | None:
        """What was committed since the chain's end, or None when only a new base can ship it."""
        record = self.current_record
        if record is None or not self._own_generation or self._position is None or not self._chain.digest:
            return None  # no generation of this writer's to follow yet, or no telling what was shipped
        changes = read_changes(self.database.path, self._position)
        if changes.restarted and not self._continuous:
            return None  # the WAL was restarted while no replicator held it: frames may be lost, ship everything
        pages = len(self._carry.keys() | changes.pages.keys())
        page_size = changes.page_size or self._page_size()
        db_bytes = (changes.db_pages or self._carry_db_pages) * page_size or self.database.size_bytes()
        config = self.snapshot_config
        if self._chain.seq + 1 > config.compact_deltas or sum(link.size for link in self._path) + pages * page_size > (
            config.compact_ratio * db_bytes
        ):
            return None  # compaction: the deltas since the base have grown past a fraction of the database
        return changes

    def _ship(self, changes: WalChanges, seen: Fingerprint, progress: Progress | None) -> int | None:
        """Commit the pages changed since the chain's end as its next delta; None when no page changed."""
        pages = {**self._carry, **changes.pages}
        if not pages:
            self._position = changes.end
            return None
        record = self.current_record
        if record is None:
            raise SnapshotError("a delta needs a committed generation to follow")
        seq = self._chain.seq + 1
        data, delta = encode_delta(
            generation=record.name, seq=seq, created_at=time.time(), writer=self.writer_id, parent=self._chain.digest,
            page_size=changes.page_size or self._page_size(), db_pages=changes.db_pages or self._carry_db_pages,
            pages=pages, signing_key=self.signing_key,
        )  # fmt: skip
        shipping = Shipped(point_name(record.name, seq), delta.digest, changes.end)
        state = self.host.state()
        if state is not None:
            self._record(replace(state, shipping=shipping, shipping_fingerprint=seen))
        link = self.history.write_delta(delta, data, writer=self.writer_id)
        if progress is not None:
            progress(len(data))
        self._chain, self._position = ChainHead(seq, delta.digest), changes.end
        self._carry, self._carry_db_pages = {}, 0
        self._add_link(record, link, data)
        self._still_current()
        return len(data)

    def _add_link(self, record: SnapshotRecord, link: Link, data: bytes) -> None:
        """Count a delta this writer committed in: the generation's objects, and the path a restore reads."""
        self._generations = [
            replace(g, keys=(*g.keys, link.key), links=(*g.links, link)) if g.name == record.name else g
            for g in self._generations
        ]  # fmt: skip
        self._path = [*(x for x in self._path if x.first < link.first), link]
        self._recent = {x.key: self._recent[x.key] for x in self._path if x.key in self._recent}
        if sum(map(len, self._recent.values())) + len(data) <= RECENT_DELTA_BYTES:
            self._recent[link.key] = data

    def _merge(self) -> None:
        """Write the merged deltas due at the chain's end (see `chain`); a failure costs restores time, not data.

        Each is made from the links that lead through its run (kept from
        when they were written, or read back from the bucket), verified, so
        that it holds exactly what they do.
        """
        record, due = self.current_record, merges_due(self._chain.seq)
        generation = next((g for g in self._generations if record is not None and g.name == record.name), None)
        if record is None or generation is None or not self._own_generation or not due:
            return
        for first, last in due:
            try:
                route = chains.path(generation.links, last, start=first - 1)
                sources = self.history.read_links(record, route, keys=self.verify_keys, known=self._recent)
                data, merged = merge(
                    sources, created_at=time.time(), writer=self.writer_id, signing_key=self.signing_key
                )
                link = self.history.write_delta(merged, data, writer=self.writer_id)
            except Exception as exc:  # noqa: BLE001 - a merge is an optimisation: the deltas it would stand for stay
                logger.warning("BucketSQLite could not merge deltas %d-%d of %s: %s", first, last, record.name, exc)
                return
            self._add_link(record, link, data)
            generation = next(g for g in self._generations if g.name == record.name)
        self._thin()

    def _thin(self) -> None:
        """Delete the deltas that merged deltas stand for once retention no longer keeps them as points (see
        `chain.thinned` and `SnapshotConfig`). A failure is retried after the next merge."""
        config, now = self.snapshot_config, time.time()
        plain, merged = (
            None if seconds is None else now - seconds
            for seconds in (config.keep_every_flush_seconds, config.keep_max_age_seconds)
        )
        for index, generation in enumerate(list(self._generations)):
            doomed = chains.thinned(generation.links, plain_before=plain, merged_before=merged)
            deleted: set[str] = set()
            for link in doomed:
                try:
                    self.history.store.delete(link.key)
                except ObjectStoreError:
                    logger.warning("BucketSQLite could not thin the deltas of %s; will retry", generation.name)
                    break
                deleted.add(link.key)
            if deleted:
                self._generations[index] = replace(
                    generation,
                    keys=tuple(k for k in generation.keys if k not in deleted),
                    links=tuple(x for x in generation.links if x.key not in deleted),
                )

    def _still_current(self) -> None:
        """Raise `PreconditionFailed` if another writer has claimed the bucket since this one committed.

        A delta is committed by its own write, which no other writer's claim
        can refuse; a claim lists the chain only after it has replaced the
        current record. So a delta followed by a current record still as
        this writer left it is part of the history for good, and only then
        is the flush reported done. Otherwise it may fall after the claim's
        cut: the flush fails and this host is fenced, with its data kept.
        """
        current = self._current
        info = self.history.store.head(self.history.current_key)
        if current is None or info is None or info.etag != current.etag:
            raise PreconditionFailed(self.history.current_key, "another writer replaced the current record")

    def _ship_base(self, seen: Fingerprint, progress: Progress | None) -> int:
        """Commit the whole database as a new generation: its chain starts where the copy was read."""
        with temporary_copy_path("buckethead-flush-") as image:
            start = self._capture(image)
            size = image.stat().st_size
            record = self._commit_generation(image, progress, seen=seen)
        self._chain, self._position, self._path, self._recent = ChainHead(0, record.sha256), start, [], {}
        self._carry, self._carry_db_pages = {}, 0
        self._own_generation = True
        return size

    def _page_size(self) -> int:
        with self._watch_lock:
            return int(self._require_watcher().execute("PRAGMA page_size").fetchone()[0])

    def _checkpoint(self) -> None:
        """Fold the WAL into the file so that the next writer starts it afresh, losing no frame unread.

        Under the write lock nothing more is committed: the frames committed
        since the last read are read (and shipped with the next delta), the
        pins are let go, a passive checkpoint copies every frame into the
        file, and a new pin is taken before the lock is released.
        """
        conn = self._capturer
        if conn is None or self._position is None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # a writer kept its transaction open: the next flush tries again
        try:
            changes = read_changes(self.database.path, self._position)
            self._carry.update(changes.pages)
            self._carry_db_pages = changes.db_pages or self._carry_db_pages
            self._position = changes.end
            self._unpin()
            with self._watch_lock:
                self._require_watcher().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._pin()
        except sqlite3.Error as exc:
            logger.warning("BucketSQLite could not checkpoint the host's database: %s", exc)
            if not self._pins:
                self._pin()
        finally:
            conn.execute("ROLLBACK")

    def _drop_pin(self, pin: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            pin.close()
        if pin in self._pins:
            self._pins.remove(pin)

    def _record_shipped(self, seen: Fingerprint, seen_at: float) -> None:
        name = self._current_name()
        shipped = None
        if name is not None:
            shipped = Shipped(name, self._chain.digest, self._position)
        self._record(HostState(self.bucket_id, shipped, seen, seen_at))

    def _current_name(self) -> str | None:
        """The point the bucket's chain ends at, as this replicator committed it (or the source it restored)."""
        record = self.current_record
        if record is not None:
            return point_name(record.name, self._chain.seq)
        source = self._source_name()
        return None if source is None else point_name(source, 0)

    def _record(self, state: HostState) -> None:
        """Write down what the file holds (see `HostState`).

        Where the directory is full this fails, and is only logged: the record
        saves a later replicator work, and without it that one ships again.
        """
        try:
            self.host.record(state)
        except OSError as exc:
            logger.warning("BucketSQLite could not record what the host's database holds: %s", exc)

    def _capture(self, image: Path) -> WalPosition:
        """Copy the database to ``image``; the WAL position a chain following the copy starts from."""
        if self._capturer is None:
            raise SnapshotError("this replicator is not attached to the host's database")
        return self.database.capture(self._capturer, image)

    def _commit_generation(
        self, source: Path, progress: Progress | None = None, *, seen: Fingerprint | None = None
    ) -> SnapshotRecord:
        """Write ``source`` as the next generation and make it current, fenced on the current record.

        An attempt that fails is remembered, and deleted once a later
        generation is committed (it may even have been committed unseen,
        until then). Its retry reuses the sequence number. ``source`` copied
        the host's file as it looked at ``seen``: that is recorded as being
        shipped before the commit, so a replicator that dies right after it
        leaves its successor knowing the file is that generation.
        """
        current = self._current
        if current is None:
            raise SnapshotError("this replicator has not claimed the bucket")
        seq = self._next_seq
        attempt = self.history.planned(new_generation_name(seq), seq)
        try:
            record = self.history.write(
                attempt.name, GENERATION, source, seq=seq, writer=self.writer_id, signing_key=self.signing_key,
                parent=current.record.name if current.record is not None else None, parent_deltas=self._chain.seq,
                progress=progress,
            )  # fmt: skip
            state = self.host.state()
            if seen is not None and state is not None:
                shipping = Shipped(point_name(record.name, 0), record.sha256, None)
                self._record(replace(state, shipping=shipping, shipping_fingerprint=seen))
            self._current = self.history.commit(record, self.writer_id, etag=current.etag, next_seq=seq + 1)
        except BaseException:
            self._abandoned.append(attempt)
            raise
        self._next_seq = seq + 1
        self._generations.append(
            replace(attempt, created_at=record.created_at, keys=(record.key, *(c.key for c in record.chunks)))
        )
        return record

    def _apply_retention(self) -> None:
        """Delete failed attempts and the generations retention no longer keeps; failures are retried next time."""
        for attempt in list(self._abandoned):
            try:
                self.history.delete(self.history.with_every_object(attempt))
            except ObjectStoreError:
                logger.warning("BucketSQLite could not delete the failed flush %s; will retry", attempt.name)
                return
            self._abandoned.remove(attempt)
        keep = retained(
            self._generations,
            current=self._current_name(),
            keep=self.snapshot_config.generations_kept,
            max_age_seconds=self.snapshot_config.keep_max_age_seconds,
            now=time.time(),
            daily=self.snapshot_config.keep_daily,
        )
        for generation in [g for g in self._generations if g.name not in keep]:
            try:
                self.history.delete(generation)
            except ObjectStoreError:
                logger.warning("BucketSQLite could not prune generation %s; will retry", generation.name)
                return
            self._generations.remove(generation)

    def _delete_unreferenced_blobs(self, object_keys: list[str]) -> None:
        """Delete blobs whose removal a snapshot in the bucket now records; failures are retried next time."""
        if not object_keys or self.files is None:
            return
        try:
            self.files.delete_unreferenced(object_keys)
        except Exception:
            logger.exception("BucketSQLite could not delete unreferenced blobs; will retry")

    def _failed(self, exc: Exception) -> NoReturn:
        """Record a failed flush, schedule its retry, tell the error callback, and raise."""
        error = self._explain_lock(exc)
        self.last_error = error
        self._failures += 1
        self._retry_at = time.monotonic() + backoff(self._failures, cap=self.snapshot_config.interval_seconds)
        self._count(flush_failures=1)
        self.announce()
        self.callbacks.call(self.callbacks.on_flush_error, error)
        if error is exc:
            raise exc
        raise error from exc

    def _explain_lock(self, exc: Exception) -> Exception:
        """Turn SQLite's bare "database is locked" into an error that says what to do."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return SnapshotError(
                f"could not read a consistent copy of the database within {self.database.busy_timeout}s: a write "
                "transaction stayed open the whole time. Commit or roll it back, then flush again."
            )
        return exc

    def _fence(self, exc: PreconditionFailed) -> NoReturn:
        """Stop shipping for good: another host committed to the bucket or took the lease."""
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
        self._fence_host(
            f"{other} has taken over {self.history.store.describe()} as its writer, so this host "
            f"({self.writer_id}) stopped shipping: its snapshot would roll the bucket back ({exc}). It keeps "
            f"serving from its database, but changes made here since {since} are not in the bucket. Stop this "
            "host's processes: its database is then kept aside. Run one writer host per bucket."
        )
        raise self.fenced from exc  # type: ignore[misc]

    def _fence_host(self, message: str) -> None:
        self.fenced = WriterFenced(message)
        logger.error("BucketSQLite: %s", self.fenced)
        self.last_error = self.fenced
        self.announce()
        self.callbacks.call(self.callbacks.on_flush_error, self.fenced)

    def _data_version(self) -> int:
        with self._watch_lock:
            return int(self._require_watcher().execute("PRAGMA data_version").fetchone()[0])

    def _require_watcher(self) -> sqlite3.Connection:
        if self._watcher is None:
            raise SnapshotError("this replicator is not attached to the host's database")
        return self._watcher

    # -- the lease -----------------------------------------------------------------------------

    def renew_lease(self) -> None:
        """Renew the lease now; fence this host off if another has taken it over (other failures are raised)."""
        try:
            self.lease.renew()
        except PreconditionFailed as exc:
            with self._flush_lock, contextlib.suppress(WriterFenced):
                self._fence(exc)
        self.announce()  # the lease's new expiry, for the host's other processes

    # -- the loop ------------------------------------------------------------------------------

    def start_loop(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="buckethead-replicator", daemon=True)
        self._thread.start()

    def stop_loop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        """Flush every ``interval_seconds`` and when the host asks, retry failures, renew the lease."""
        interval = self.snapshot_config.interval_seconds
        next_flush = time.monotonic() + interval
        while True:
            renew_at = self.lease.due() if self.fenced is None else float("inf")
            wake = min(next_flush, self._retry_at or next_flush, renew_at, time.monotonic() + REQUEST_POLL_SECONDS)
            if self._stop.wait(max(0.0, wake - time.monotonic())):
                return
            try:
                if self.fenced is None and time.monotonic() >= self.lease.due():
                    self.renew_lease()
                if self.fenced is not None:
                    next_flush = time.monotonic() + interval
                    continue
                asked = self.host.flush_requested_at()
                debounced = time.monotonic() - self._last_attempt < self.snapshot_config.min_interval_seconds
                if asked > self._last_request and not debounced:  # the requests of a burst share one flush
                    self._last_request = asked
                    self.force_flush()
                elif self._retry_at is not None and time.monotonic() >= self._retry_at:
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
                        "BucketSQLite could not flush to %s; retrying in %.1fs",
                        self.history.store.describe(),
                        retry_in,
                    )

    def checkpoint(self) -> None:
        """At the host's last exit, with nothing unshipped: fold the WAL into the file, and record how it looks now.

        A checkpoint changes how the file looks, not what it holds; without
        this, the host's next start would take it for a change and ship the
        database again.
        """
        if self.fenced is not None or self.dirty:
            return
        self._unpin()
        try:
            with self._watch_lock:
                self._require_watcher().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:  # a full directory, say: the next start then only ships once more
            logger.warning("BucketSQLite could not checkpoint the host's database at exit: %s", exc)
            return
        if not self.dirty:
            self._position = current_position(self.database.path)
            self._record_shipped(self.database.fingerprint(), time.time())

    def close(self) -> None:
        self.stop_loop()
        self._unpin()
        for conn in (self._watcher, self._capturer):
            if conn is not None:
                conn.close()
        self._watcher = self._capturer = None
