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

from .config import SnapshotConfig
from .database import Fingerprint, HostDatabase, temporary_copy_path
from .errors import (
    CurrentSnapshotCorrupt,
    ObjectStoreError,
    PreconditionFailed,
    SnapshotCorrupt,
    SnapshotError,
    WriterFenced,
)
from .history import LEGACY_LATEST, Current, GenerationObjects, History, new_generation_name, retained
from .host import Host, HostState
from .interfaces import FileStore
from .lease import LeaseKeeper
from .objectstore import Progress
from .record import GENERATION, SnapshotRecord
from .retry import backoff

logger = logging.getLogger("buckethead_django.engine")

#: How often a starting replicator reads and claims again when another writer committed meanwhile.
CLAIM_ATTEMPTS = 3
#: How often the loop looks for a flush another process of the host asked for.
REQUEST_POLL_SECONDS = 0.1
#: What `Replicator._settle` did with the host's database file.
INSTALLED, KEPT, FENCED = "installed", "kept", "fenced"


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
            current_snapshot=self._current_name(),
        )

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
            settled, shipped = self._settle(current, alone=alone)
            self._watch()
            if settled == FENCED:
                return  # this host's file went its own way while other processes use it: ship nothing
            if settled == KEPT:
                # Read before the file is looked at: a commit after this is seen by the watcher, one before by this.
                self._flushed_version = self._data_version()
                self._pending = shipped is None or self.database.fingerprint() != shipped
                state = self.host.state()
                if shipped is not None and state is not None:  # the bucket's copy was whole then
                    committed = current.record.name if current is not None and current.record is not None else None
                    self.last_upload = FlushResult(
                        uploaded=True, reason="changed", generation=committed, at=state.recorded_at
                    )
            if self.lease.lease is None:
                self.lease.take(wait=wait)
            try:
                self._current = self._claim(current, listing)
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
            self._record(HostState(self.bucket_id, self._current_name(), self.database.fingerprint(), time.time()))

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

    def _settle(self, current: Current | None, *, alone: bool) -> tuple[str, Fingerprint | None]:
        """Make the file hold what it must: `INSTALLED` the bucket's, `KEPT` as it is (it holds the bucket's
        current generation, maybe with changes since), or `FENCED` (it does not, but other processes use it).

        With `KEPT` comes how the file looked when it equalled the bucket's generation (None: it never did,
        an adopted file), so that changes since are shipped.
        """
        source = current.record if current is not None else None
        if source is None:
            legacy = self.history.legacy()
            source = legacy[0] if legacy and legacy[0].name == LEGACY_LATEST else None
        wanted = source.name if source is not None else None
        self.restored_from = source
        state = self.host.state()
        if not self.database.exists():
            self._install(source)
            return INSTALLED, None
        damage = self.database.quick_check() if alone else []
        ours = state is not None and state.bucket == self.bucket_id
        shipped = state.fingerprint_of(wanted) if ours else None  # type: ignore[union-attr]
        if shipped is not None and not damage:
            self.restored_from = None  # nothing was restored: the host's copy is current
            return KEPT, shipped
        if not alone:
            self._fence_host(
                f"this host's database does not hold the bucket's current generation {wanted!r} (it last held "
                f"{state.generation if state else 'something of unknown origin'!r}): another host wrote the bucket "
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
                f"it holds changes never shipped, and the bucket moved on from {state.generation!r} to "  # type: ignore[union-attr]
                f"{wanted!r} (another host wrote it)",
            )
        self._install(source)
        return INSTALLED, None

    def _install(self, source: SnapshotRecord | None) -> None:
        """Replace the file with ``source`` (verified first; None: an empty database). Nobody has it open."""
        if source is None:
            self.database.create(None)
        else:
            self.database.prepare()
            self.database.check_room(source.size)
            try:
                with self.history.fetched(source, keys=self.verify_keys) as path:
                    self.database.create(path)
            except SnapshotCorrupt as damage:
                raise CurrentSnapshotCorrupt(damage, self._newest_verifying(source.name)) from None
        self.restored_from = source
        self._pending = False

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
        self._current = self._claim(current, self._generations)
        return self._commit_generation(source)

    # -- shipping ------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True if something was committed (by any process) since the last generation. Costs one pragma."""
        return self._pending or self._data_version() != self._flushed_version

    def flush(self) -> FlushResult:
        """Ship now unless a flush was attempted less than ``min_interval_seconds`` ago or nothing changed."""
        if time.monotonic() - self._last_attempt < self.snapshot_config.min_interval_seconds:
            self.callbacks.call(self.callbacks.on_flush_skipped, "debounced")
            return FlushResult(uploaded=False, reason="debounced", at=time.time())
        return self.force_flush()

    def force_flush(self, *, progress: Progress | None = None) -> FlushResult:
        """Commit a new generation now if anything changed since the last one, ignoring the debounce.

        Raises `WriterFenced` once another host has taken the bucket over.
        """
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
                self._record(HostState(self.bucket_id, self._current_name(), seen, seen_at))
                self.last_flush = FlushResult(uploaded=False, reason="unchanged", at=time.time())
                self.callbacks.call(self.callbacks.on_flush_skipped, "unchanged")
                return self.last_flush
            self.callbacks.call(self.callbacks.on_flush_start)
            started = time.perf_counter()
            doomed = files.pending_deletions() if files is not None else []  # their row deletions precede the capture
            try:
                with temporary_copy_path("buckethead-flush-") as image:
                    version = self._capture(image)
                    size = image.stat().st_size
                    record = self._commit_generation(image, progress, seen=seen)
            except PreconditionFailed as exc:
                self._fence(exc)
            except Exception as exc:  # noqa: BLE001 - _failed() records it and raises it again
                self._failed(exc)
            duration = time.perf_counter() - started
            self._flushed_version, self._pending = version, False
            self._record(HostState(self.bucket_id, record.name, seen, seen_at))
            self.last_error = None
            self._failures, self._retry_at = 0, None
            result = self.last_flush = self.last_upload = FlushResult(
                uploaded=True, reason="changed", duration_seconds=duration, bytes=size, generation=record.name,
                at=time.time(),
            )  # fmt: skip
            self._delete_unreferenced_blobs(doomed)
            self._apply_retention()
        self.announce()
        self.callbacks.call(self.callbacks.on_flush_complete, duration, size)
        return result

    def _current_name(self) -> str | None:
        record = self.current_record
        return record.name if record is not None else self._source_name()

    def _record(self, state: HostState) -> None:
        """Write down what the file holds (see `HostState`).

        Where the directory is full this fails, and is only logged: the record
        saves a later replicator work, and without it that one ships again.
        """
        try:
            self.host.record(state)
        except OSError as exc:
            logger.warning("BucketSQLite could not record what the host's database holds: %s", exc)

    def _capture(self, image: Path) -> int:
        """Copy the database to ``image``; the watcher's version it holds at least (a later commit may be in it too,
        and is then shipped again, never missed)."""
        if self._capturer is None:
            raise SnapshotError("this replicator is not attached to the host's database")
        version = self._data_version()
        self.database.capture(self._capturer, image)
        return version

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
                parent=current.record.name if current.record is not None else None, progress=progress,
            )  # fmt: skip
            state = self.host.state()
            if seen is not None and state is not None:
                self._record(replace(state, shipping=record.name, shipping_fingerprint=seen))
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
        try:
            with self._watch_lock:
                self._require_watcher().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:  # a full directory, say: the next start then only ships once more
            logger.warning("BucketSQLite could not checkpoint the host's database at exit: %s", exc)
            return
        if not self.dirty:
            self._record(HostState(self.bucket_id, self._current_name(), self.database.fingerprint(), time.time()))

    def close(self) -> None:
        self.stop_loop()
        for conn in (self._watcher, self._capturer):
            if conn is not None:
                conn.close()
        self._watcher = self._capturer = None
