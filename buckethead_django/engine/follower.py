"""A read replica's follower: the one process of a replica host that keeps its database equal to the bucket's.

A replica host (``ROLE = "replica"``) never writes the bucket. Its processes
read one file (see `replica_database`); one of them, the follower, holds
the host's role lock (see `host`), restores the bucket's newest committed
point into the file once, and then polls:

- it asks for the current generation's next delta by name (a GET that is
  usually answered 404), and for as many after it as there are;
- it then reads the current record's ETag (a HEAD). Unchanged, the deltas
  it found are committed for good (a writer's claim replaces that record
  before it lists the chain, so it counts every delta written before), and
  they are applied, in one step readers see whole. Changed, it reads the
  record, and follows the chain as far as it is committed, or loads the
  new generation (a compaction, or another writer's) by writing the pages
  that differ.

An idle poll is therefore two Class B requests. A follower that fell behind
(it was stopped, or its deltas are found many at once) lists the
generation and reads merged deltas, the fewest objects to its end; it lists
every `LIST_EVERY_SECONDS` too, in case a delta it would ask for was
thinned away while it was not looking. Where it stands is kept in
``follow.json`` beside the file, so a takeover or a restart goes on from
there instead of downloading the database again.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import chain as chains
from .chain import Link
from .delta import Delta
from .errors import CurrentSnapshotCorrupt, ObjectNotFound, SnapshotCorrupt
from .history import LEGACY_LATEST, Current, History, point_name
from .host import Host
from .record import SnapshotRecord
from .replica_database import ReplicaDatabase

logger = logging.getLogger("buckethead_django.engine")

#: Deltas asked for by name in one poll before the follower lists the generation instead.
PROBE_LIMIT = 8
#: The follower lists the current generation at least this often (a delta it would ask for may have been thinned).
LIST_EVERY_SECONDS = 300.0


@dataclass(frozen=True)
class Following:
    """The point of the bucket's history the replica's file holds, and the writer's time of it.

    ``generation`` is None for a bucket without generations (empty, or a
    0.4.x snapshot, named by ``source``); ``tip`` is the digest the next
    delta names as its parent.
    """

    bucket: str
    generation: str | None
    seq: int
    tip: str
    applied_at: float
    source: str | None = None

    @property
    def point(self) -> str | None:
        if self.generation is None:
            return self.source
        return point_name(self.generation, self.seq)

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Following | None:
        if raw is None:
            return None
        try:
            return cls(
                bucket=str(raw["bucket"]),
                generation=raw["generation"],
                seq=int(raw["seq"]),
                tip=str(raw["tip"]),
                applied_at=float(raw["applied_at"]),
                source=raw.get("source"),
            )
        except (KeyError, TypeError, ValueError):
            return None


class Follower:
    """Keeps the replica host's file at the bucket's newest committed point (see the module's docstring)."""

    def __init__(
        self,
        *,
        history: History,
        database: ReplicaDatabase,
        host: Host,
        bucket_id: str,
        verify_keys: Sequence[bytes],
        poll_seconds: float,
        prepare: Callable[[Path], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self.database = database
        self.host = host
        self.bucket_id = bucket_id
        self.verify_keys = tuple(verify_keys)
        self.poll_seconds = poll_seconds
        #: Makes the interfaces' tables in a database that no writer's generation made (an empty bucket's, a
        #: 0.4.x snapshot), since no process of a replica host may write them later.
        self.prepare = prepare
        self.clock = clock
        self.following: Following | None = None
        #: The current record as the follower last read it.
        self._current: Current | None = None
        #: When the follower last knew the file held the bucket's newest committed point (the start of that poll).
        self.checked_at: float | None = None
        self.last_error: str | None = None
        self._listed_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()

    # -- taking the role ------------------------------------------------------------------------

    def attach(self, *, alone: bool) -> None:
        """Make the file hold the bucket's newest committed point: go on from where the file stands when it
        is the bucket's, else load it. ``alone``: no other process has the file open (the host's start)."""
        self.following = Following.from_json(self.host.following())
        usable = (
            self.following is not None
            and self.following.bucket == self.bucket_id
            and self.database.exists()
            and not self.database.damaged()
        )
        if not usable:
            self.following = None
        started = self.clock()
        self._sync(alone=alone)
        self.checked_at = started

    # -- polling ------------------------------------------------------------------------------

    def poll(self) -> int:
        """Look once whether the bucket moved on, and follow it; the points the file moved forward (a point
        loaded whole, as a new generation is, counts as one)."""
        with self._poll_lock:
            started = self.clock()
            try:
                moved = self._poll(started)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.announce()
                raise
            self.last_error = None
            self.checked_at = started
            self.announce()
            return moved

    def _poll(self, started: float) -> int:
        if self.database.damaged():  # a write that failed half-way: every differing page is written again
            self.following = None
        following, current = self.following, self._current
        if (
            following is None
            or current is None
            or current.record is None
            or following.generation != current.record.name
            or started - self._listed_at >= LIST_EVERY_SECONDS
        ):
            return self._sync(alone=False)
        record = current.record
        found = self._probe(record, following) if current.writer == record.writer else []
        info = self.history.store.head(self.history.current_key)
        if info is None or info.etag != current.etag:
            return self._sync(alone=False)  # a claim or a new generation: read it, and follow what is committed
        if len(found) >= PROBE_LIMIT:
            return self._sync(alone=False)  # far behind: merged deltas get there in fewer objects
        return self._apply(record, found)

    def _probe(self, record: SnapshotRecord, following: Following) -> list[Delta]:
        """The generation's deltas after the file's point, asked for by name, verified, up to `PROBE_LIMIT`."""
        bodies: dict[str, bytes] = {}
        links: list[Link] = []
        for seq in range(following.seq + 1, following.seq + 1 + PROBE_LIMIT):
            key = self.history.delta_key(record.name, seq)
            try:
                bodies[key] = self.history.store.get(key)
            except ObjectNotFound:
                break
            links.append(Link(seq, seq, 0.0, key, len(bodies[key])))
        if not links:
            return []
        deltas = self.history.read_links(record, links, keys=self.verify_keys, known=bodies)
        if deltas[0].header.parent != following.tip:
            raise SnapshotCorrupt(links[0].key, "it does not follow the point the replica holds")
        return deltas

    def _apply(self, record: SnapshotRecord, deltas: Sequence[Delta]) -> int:
        following = self.following
        if not deltas or following is None:
            return 0
        self.database.apply(deltas)
        last = deltas[-1]
        self._record(Following(self.bucket_id, record.name, last.header.seq, last.tip, last.header.created_at))
        return last.header.seq - following.seq

    def _sync(self, *, alone: bool) -> int:
        """Read the current record, and bring the file to the newest committed point: along the chain when the
        file holds a point of the current generation, else by loading that point."""
        try:
            current = self.history.current()
        except SnapshotCorrupt as damage:
            raise CurrentSnapshotCorrupt(damage, None) from None
        self._listed_at = self.clock()
        self._current = current
        before = self.following
        if current is None or current.record is None:
            return self._load_legacy(alone=alone)
        record = current.record
        links = self.history.links(record.name)
        end = self.history.committed_deltas(current, chains.points(links))
        if before is not None and before.generation == record.name and before.seq <= end:
            if before.seq == end:
                return 0
            route = _route(links, end, start=before.seq)
            if route is not None:
                deltas = self.history.read_links(record, route, keys=self.verify_keys)
                if deltas and deltas[0].header.parent != before.tip:
                    raise SnapshotCorrupt(route[0].key, "it does not follow the point the replica holds")
                return self._apply(record, deltas)
            # The deltas after the file's point were thinned away (it stood inside a merged run): load the point.
        with self._building() as image:
            head = self.history.fetch(record, image, keys=self.verify_keys, deltas=end, links=links)
            at = record.created_at if head.seq == 0 else next(at for seq, at in chains.points(links) if seq == head.seq)
            self._load(image, alone=alone)
        self._record(Following(self.bucket_id, record.name, head.seq, head.digest, at))
        return 1

    def _load_legacy(self, *, alone: bool) -> int:
        """Follow a bucket without generations: its 0.4.x snapshot if it has one, else an empty database."""
        legacy = next((r for r in self.history.legacy() if r.name == LEGACY_LATEST), None)
        source = f"{LEGACY_LATEST}@{legacy.sha256 or legacy.size}" if legacy is not None else None
        before = self.following
        if before is not None and before.generation is None and before.source == source:
            return 0
        with self._building() as image:
            if legacy is not None:
                self.history.fetch(legacy, image, keys=self.verify_keys)
            else:
                _empty_database(image)
            if self.prepare is not None:
                self.prepare(image)
            self._load(image, alone=alone)
        at = legacy.created_at if legacy is not None else 0.0
        self._record(Following(self.bucket_id, None, 0, "", at, source=source))
        return 1

    @contextlib.contextmanager
    def _building(self) -> Iterator[Path]:
        """A path for the image of a point, beside the file (so on its filesystem: it may be renamed into place),
        removed afterwards."""
        self.database.prepare()
        with tempfile.TemporaryDirectory(prefix=".follow-", dir=self.database.directory) as tmp:
            yield Path(tmp) / "point.sqlite3"

    def _load(self, image: Path, *, alone: bool) -> None:
        """Make the file the verified database ``image``: renamed into place when no process has the file open,
        else written over page by page, so every reader sees the new state at its next transaction."""
        if alone or not self.database.exists():
            self.database.replace_file(image)
            return
        try:
            self.database.apply_image(image)
        except ValueError as exc:  # another page size: the file must be replaced whole
            logger.warning(
                "BucketSQLite replaced the replica's database file whole (%s): processes that hold it open read "
                "the old one until they reconnect",
                exc,
            )
            self.database.replace_file(image)

    def _record(self, following: Following) -> None:
        self.following = following
        self.host.record_following(asdict(following))

    # -- reporting ------------------------------------------------------------------------------

    def announce(self) -> None:
        """Tell the host's other processes where the file stands and how fresh it is (for status and health)."""
        following = self.following
        self.host.announce(
            ready=True,
            current_snapshot=following.point if following is not None else None,
            last_error=self.last_error,
            applied_at=following.applied_at if following is not None else None,
            checked_at=self.checked_at,
        )

    # -- the loop ------------------------------------------------------------------------------

    def start_loop(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="buckethead-follower", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:
                failures += 1
                if failures == 1:
                    logger.exception("BucketSQLite's replica could not follow the bucket; will retry")
                continue
            if failures:
                logger.info("BucketSQLite's replica follows the bucket again after %d failed polls", failures)
            failures = 0

    def close(self) -> None:
        """Stop polling and close the file's writer (the process leaves the host)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.database.close_writer()


def _route(links: Sequence[Link], end: int, *, start: int) -> list[Link] | None:
    """The fewest links from point ``start`` to ``end`` (see `chain.path`), or None when the bucket no longer
    holds a way from there."""
    try:
        return chains.path(links, end, start=start)
    except KeyError:
        return None


def _empty_database(path: Path) -> None:
    """A whole, empty SQLite file: what a replica serves until the bucket has a snapshot."""
    conn = sqlite3.connect(path, isolation_level=None)
    with contextlib.closing(conn):
        conn.execute("CREATE TABLE empty (x)")
        conn.execute("DROP TABLE empty")
        conn.execute("VACUUM")
