"""One engine in a process of its own, driven line by line by `snapshots.py`: this checkout's or PyPI buckethead 0.4.1.

    PYTHONPATH=<checkout> python benchmarks/snapshot_child.py --system ours --endpoint URL --bucket B --prefix P/
    <venv of buckethead 0.4.1>/bin/python benchmarks/snapshot_child.py --system buckethead041 ...

Not run by hand. It reads one JSON command a line on stdin (``{"op": "start"}``,
``fill``, ``change``, ``flush``, ``steady``, ``renew``, ``check``, ``stop``,
``exit``) and answers each with one JSON line on stdout, prefixed with ``@@ ``
(anything else a library prints is not an answer), so that the parent can cut
the requests its recording proxy saw into those of each command. Imports
nothing from this checkout but the engine under test, and only the standard
library otherwise: it runs on Python 3.11 (ours) and 3.13 (buckethead 0.4.1)
alike. A flush is timed and the process's resident memory sampled every
millisecond meanwhile (/proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import traceback
from pathlib import Path

ROW_BYTES = 64 * 1024
CHANGE_KEY = "bench-change"
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssShmem", "RssFile")
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


def memory_kib() -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in MEMORY_FIELDS:
            found[name] = int(rest.split()[0])
    return found


class Sampler(threading.Thread):
    """The largest value of each memory field while it runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = memory_kib()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.001):
            for name, value in memory_kib().items():
                self.peak[name] = max(self.peak.get(name, 0), value)

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join()
        return self.peak


class Ours:
    """This checkout's `BucketSQLite`, through its public API, as benchmarks/engine.py drives it."""

    def __init__(self, args: argparse.Namespace) -> None:
        from buckethead_django.engine import BucketConfig, BucketSQLite, SnapshotConfig
        from buckethead_django.engine.config import DEFAULT_FLUSH_INTERVAL, DEFAULT_LEASE_SECONDS

        config = BucketConfig(
            bucket=args.bucket,
            key=f"{args.prefix}bucketsqlite/snap.db",
            files_prefix=f"{args.prefix}files/",
            endpoint_url=args.endpoint,
            region="us-east-1",
            **CREDENTIALS,
        )
        # The engine's defaults (generations kept, ...), no background loop: the parent says when to flush.
        self.bh = BucketSQLite(config, SnapshotConfig(), background_flush=False, local_dir=Path(args.local_dir))
        self.defaults = {"flush_interval": DEFAULT_FLUSH_INTERVAL, "lease_seconds": DEFAULT_LEASE_SECONDS}

    def start(self) -> None:
        self.bh.start()

    def connect(self):
        return self.bh.connect()

    def set(self, value: str, key: str = CHANGE_KEY) -> None:
        self.bh.kv.set(key, value)

    def get(self) -> str | None:
        return self.bh.kv.get(CHANGE_KEY)

    def flush(self) -> int:
        result = self.bh.force_flush()
        return int(result.bytes) if result.uploaded else 0

    def renew(self) -> None:
        replicator = self.bh.replicator
        if replicator is None:
            raise RuntimeError("this process is not the host's replicator: it holds no lease to renew")
        replicator.renew_lease()

    def stop(self) -> None:
        self.bh.stop()


class Buckethead041:
    """PyPI ``buckethead`` 0.4.1: an in-memory SQLite database, the whole of it uploaded on every flush."""

    def __init__(self, args: argparse.Namespace) -> None:
        from buckethead import BucketConfig, BucketSQLite, SnapshotConfig
        from buckethead.observability.status import SilentReporter

        config = BucketConfig(
            bucket=args.bucket,
            key=f"{args.prefix}bucketsqlite/snap.db",
            files_prefix=f"{args.prefix}files/",
            endpoint_url=args.endpoint,
            region="us-east-1",
            **CREDENTIALS,
        )
        # Its defaults (keep_previous), but no background flush during a measurement: the parent says when.
        self.bh = BucketSQLite(
            config,
            SnapshotConfig(interval_seconds=86400.0),
            on_flush_complete=self._completed,
            status_reporter=SilentReporter(),
        )
        self.defaults = {"flush_interval": SnapshotConfig().interval_seconds}
        self._uploaded = 0

    def _completed(self, _seconds: float, size: int) -> None:
        self._uploaded = size

    def start(self) -> None:
        self.bh.start()

    def connect(self):
        return self.bh.connect()

    def set(self, value: str, key: str = CHANGE_KEY) -> None:
        self.bh.kv.set(key, value)

    def get(self) -> str | None:
        return self.bh.kv.get(CHANGE_KEY)

    def flush(self) -> int:
        self._uploaded = 0
        self.bh.force_flush()
        return self._uploaded

    def renew(self) -> None:
        raise RuntimeError("buckethead 0.4.1 has no writer lease")

    def stop(self) -> None:
        self.bh.stop()


def fill(engine: Ours | Buckethead041, size_mb: int) -> int:
    """A table of 64 KiB random blobs, ``size_mb`` MB of them, as the other benchmarks make; the database's bytes."""
    conn = engine.connect()
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, data BLOB)")
        with conn:
            conn.executemany(
                "INSERT INTO blobs (data) VALUES (?)", ((os.urandom(ROW_BYTES),) for _ in range(size_mb * 16))
            )
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(conn.execute("PRAGMA page_count").fetchone()[0]) * int(page_size)
    finally:
        conn.close()


def timed_flush(engine: Ours | Buckethead041) -> dict[str, object]:
    before = memory_kib()
    sampler = Sampler()
    sampler.start()
    began = time.perf_counter()
    size = engine.flush()
    seconds = time.perf_counter() - began
    peak = sampler.stop()
    after = memory_kib()
    return {
        "seconds": seconds,
        "bytes": size,
        "extra": {f: (peak.get(f, 0) - before.get(f, 0)) / 1024 for f in MEMORY_FIELDS},
        "kept": {f: (after.get(f, 0) - before.get(f, 0)) / 1024 for f in MEMORY_FIELDS},
    }


#: The steady writes of a simulated day: a cache entry among this many keys, or an event row, in turn.
DAY_KEYS = 10_000
DAY_VALUE_BYTES = 200


class SimulatedClock:
    """The time module, but for ``time()``, which the caller moves on: the engine's sense of the date."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def steady_day(engine: Ours, flushes: int, writes: int, interval: float) -> dict[str, object]:
    """``flushes`` flushes, each after ``writes`` small writes, made without waiting. The engine's snapshot
    code sees its clock move ``interval`` seconds a flush, so retention ages points and generations as it
    would over the time they stand for (the lease and the bucket keep the real clock)."""
    from buckethead_django.engine import history, replicator

    clock = SimulatedClock()
    history.time = replicator.time = clock  # type: ignore[attr-defined]
    conn = engine.connect()
    rng = random.Random(1)  # noqa: S311 - workload, not secrets
    began = time.perf_counter()
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at REAL, body TEXT)")
        for n in range(flushes):
            for w in range(writes):
                body = os.urandom(DAY_VALUE_BYTES // 2).hex()
                if w % 2:
                    with conn:
                        conn.execute("INSERT INTO events (at, body) VALUES (?, ?)", (time.time(), body))
                else:
                    engine.set(body, key=f"day:{rng.randrange(DAY_KEYS)}")
            engine.flush()
            clock.now += interval
            if n and n % 2000 == 0:
                print(f"  day: {n} of {flushes} flushes", file=sys.stderr, flush=True)
    finally:
        conn.close()
        history.time = replicator.time = time  # type: ignore[attr-defined]
    return {"seconds": time.perf_counter() - began}


def run(engine: Ours | Buckethead041, command: dict) -> dict[str, object]:
    op = command["op"]
    if op == "start":
        began = time.perf_counter()
        engine.start()
        return {"seconds": time.perf_counter() - began, "defaults": engine.defaults, "python": sys.version.split()[0]}
    if op == "fill":
        return {"bytes": fill(engine, int(command["size_mb"]))}
    if op == "change":
        engine.set(str(command.get("value", time.time())))
        return {}
    if op == "flush":
        return timed_flush(engine)
    if op == "steady":
        seconds = []
        for n in range(int(command["n"])):
            engine.set(f"steady {n} {time.time()}")
            began = time.perf_counter()
            engine.flush()
            seconds.append(time.perf_counter() - began)
        return {"seconds": seconds}
    if op == "day":
        if not isinstance(engine, Ours):
            raise ValueError("the simulated day runs on this checkout's engine only")
        return steady_day(engine, int(command["flushes"]), int(command["writes"]), float(command["interval"]))
    if op == "renew":
        engine.renew()
        return {}
    if op == "check":
        conn = engine.connect()
        try:
            rows = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
        finally:
            conn.close()
        return {"rows": rows, "value": engine.get()}
    if op == "stop":
        engine.stop()
        return {}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    # This script's directory holds the benchmark modules: none of them may shadow what an engine imports.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=["ours", "buckethead041"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--local-dir", help="the host database's directory (ours)")
    args = parser.parse_args()
    engine = Ours(args) if args.system == "ours" else Buckethead041(args)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command["op"] == "exit":
            # Leave without stop(): buckethead 0.4.1 would upload the whole database again on its way out.
            sys.stdout.flush()
            os._exit(0)
        try:
            answer = run(engine, command)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            answer = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print("@@ " + json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
