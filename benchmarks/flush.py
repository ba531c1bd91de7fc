"""What a flush of a large database costs the requests served meanwhile, and the replicator's memory.

    .venv/bin/python benchmarks/flush.py [--size-mb 100] [--seconds 50] [--flush-interval 10] [--workers 2] [--no-v1]

A moto S3 server holds a bucket seeded with a ``--size-mb`` MB database (a
table of 64 KiB random blobs). gunicorn serves the bench site (the example
project plus small views, benchmarks/bench_site) with ``--workers`` sync
workers on a fresh host directory in /dev/shm, flushing every
``--flush-interval`` seconds. One client sends small requests back to back
for ``--seconds`` seconds: nine cache reads, then one cache write (so every
flush has a change to ship: the whole database). Each flush is known from the
replicator's ``snapshot_written`` signal (end time and duration).

The peer, in the same run: half-way between two flushes, another process
uploads the same number of bytes to the same moto server with a bare boto3
``put_object``. moto runs on this machine, so an upload costs the machine's
CPUs what it costs; the difference between "during a flush" and "during a
bare upload" is what the flush adds on top of moving the bytes (the copy,
the hashing, sharing the replicator's interpreter with its requests).

The requests are grouped by window: each flush, each bare upload, and quiet
stretches (neither, with 0.25 s of margin) as long as a flush. Printed per
kind: the requests' median, p99 and max latency, and the slowest request of
each window (the median over the windows: a stall that happens once per flush
shows there, while a single hiccup of the shared machine does not); then the
replicator's resident memory while it flushed, next to its median before the
first flush: VmRSS and its parts (RssAnon: private memory; RssShmem: pages of
the /dev/shm database mapped into the process, the database file's own
memory, not a copy; RssFile), VmHWM's growth, and the median between later
flushes; then the capture alone, with the engine's connection settings and
with ``PRAGMA mmap_size = 0``.

The same is measured on v1 (the in-memory engine, commit 367957a, in a git
worktree; one gunicorn worker, as v1 allowed one writer process) unless
``--no-v1``. Goals: at most 10 ms added to the slowest request, at most
32 MiB of extra replicator memory.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import (
    MACHINE_NOTE,
    ROOT,
    SHM,
    SiteServer,
    check_imports_from,
    median,
    memory_kib,
    percentile,
    private_dir,
    ratio,
    read_events,
    run_child,
    seed_site,
    table,
    v1_worktree,
)
from tests.moto_server import MotoServer
from tests.servers import s3_env

MARGIN = 0.25
#: The peer's uploader: one long-lived process (its start-up costs nothing during a measurement), one upload per line.
UPLOADER = """
import boto3, json, sys, time
endpoint, bucket, path = sys.argv[1:4]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
print("ready", flush=True)
for n, _ in enumerate(sys.stdin):
    began = time.time()
    with open(path, "rb") as body:
        client.put_object(Bucket=bucket, Key=f"peer-upload-{n}", Body=body)
    print(json.dumps({"start": began, "end": time.time()}), flush=True)
"""


@dataclass(frozen=True)
class Request:
    start: float  # wall clock (time.time()), to compare with the server's flush times
    seconds: float
    pid: int
    ok: bool


def one_request(port: int, path: str) -> Request:
    started_wall, started = time.time(), time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        ok = response.status == 200
        pid = int(response.getheader("X-Bench-Pid") or 0)
    except OSError:
        ok, pid = False, 0
    finally:
        conn.close()
    return Request(started_wall, time.perf_counter() - started, pid, ok)


def client(port: int, seconds: float, write_every: int) -> list[Request]:
    done: list[Request] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        done.append(one_request(port, "/bench/set/" if i % write_every == 0 else "/bench/get/"))
        i += 1
    return done


class MemorySampler(threading.Thread):
    """Reads /proc/<pid>/status of each worker every ``every`` seconds."""

    def __init__(self, pids: list[int], every: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, int, dict[str, int]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            now = time.time()
            for pid in self.pids:
                found = memory_kib(pid)
                if found:
                    self.samples.append((now, pid, found))

    def stop(self) -> None:
        self._halt.set()
        self.join()


class UploadPeer(threading.Thread):
    """After each flush, half-way to the next one, uploads ``path`` with a bare boto3 put_object (another process)."""

    def __init__(self, state: Path, pids: list[int], endpoint: str, bucket: str, path: Path, interval: float) -> None:
        super().__init__(daemon=True)
        self.state, self.pids, self.interval = state, pids, interval
        self.windows: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self._proc = subprocess.Popen(  # noqa: S603 - this interpreter, our own code
            [sys.executable, "-c", UPLOADER, endpoint, bucket, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._proc.stdout is None or self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the peer uploader did not start")

    def run(self) -> None:
        seen = 0
        while not self._halt.wait(0.05):
            flushes = [e for e in read_events(self.state) if e["pid"] in self.pids]
            if len(flushes) <= seen:
                continue
            seen = len(flushes)
            last = flushes[-1]
            next_start = last["end"] - last["duration"] + self.interval
            # Start so that the upload's middle falls half-way between this flush's end and the next one's start.
            wait = (next_start - last["end"]) / 2 - last["duration"] / 2
            if wait < 0.2 or self._halt.wait(wait):
                continue
            stdin, stdout = self._proc.stdin, self._proc.stdout
            if stdin is None or stdout is None:
                return
            stdin.write("go\n")
            stdin.flush()
            done = json.loads(stdout.readline())
            self.windows.append((done["start"], done["end"]))

    def stop(self) -> None:
        self._halt.set()
        self.join()
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)


def overlaps(start: float, end: float, windows: list[tuple[float, float]], margin: float = 0.0) -> bool:
    return any(start < b + margin and end > a - margin for a, b in windows)


def classify(
    requests: list[Request], flushes: list[tuple[float, float]], uploads: list[tuple[float, float]]
) -> dict[str, list[list[Request]]]:
    """The requests by window: each flush, each bare upload (that overlaps no flush), and quiet stretches (neither,
    with 0.25 s of margin) as long as the median flush."""
    kinds: dict[str, list[list[Request]]] = {"quiet": [], "flush": [], "upload": []}
    for kind, windows in (("flush", flushes), ("upload", uploads)):
        for w in windows:
            kinds[kind].append([r for r in requests if overlaps(r.start, r.start + r.seconds, [w])])
    length = median([b - a for a, b in flushes]) if flushes else 1.0
    busy = flushes + uploads
    current: list[Request] = []
    for r in requests:
        if overlaps(r.start, r.start + r.seconds, busy, MARGIN):
            current = []  # a stretch ends where a flush or an upload begins
            continue
        current.append(r)
        if r.start + r.seconds - current[0].start >= length:
            kinds["quiet"].append(current)
            current = []
    return kinds


def latency_row(name: str, windows: list[list[Request]]) -> list[object]:
    """Requests, median, p99, max (ms); windows, and the slowest request per window: median and max over them."""
    ms = [r.seconds * 1000 for chunk in windows for r in chunk]
    maxima = [max(r.seconds for r in chunk) * 1000 for chunk in windows if chunk]
    return [name, len(ms), median(ms), percentile(ms, 99), max(ms, default=float("nan")), len(maxima),
            median(maxima), max(maxima, default=float("nan"))]  # fmt: skip


def difference(name: str, a: list[object], b: list[object]) -> list[object]:
    return [name, "", *(x - y for x, y in zip(a[2:5], b[2:5], strict=True)), "",  # type: ignore[operator]
            *(x - y for x, y in zip(a[6:], b[6:], strict=True))]  # type: ignore[operator]  # fmt: skip


def measure(label: str, code_root: Path, moto: MotoServer, args: argparse.Namespace, *, v2: bool) -> dict:
    bucket = f"bench-flush-{label}"
    moto.create_bucket(bucket)
    common = s3_env(bucket, moto.endpoint_url)
    common.update(BUCKETHEAD_FLUSH_INTERVAL=str(args.flush_interval), BUCKETHEAD_MIN_FLUSH_INTERVAL="0")
    workers = args.workers if v2 else 1
    with (
        private_dir(f"bench-flush-{label}-") as state,
        private_dir("bench-flush-host-", under=SHM) as host,
        private_dir("bench-flush-seed-", under=SHM) as seed_host,
    ):
        local = {"BUCKETHEAD_LOCAL_DIR": str(seed_host)} if v2 else {}
        seeded = seed_site(code_root, state, args.size_mb, **common, **local)
        payload = state / "peer-upload.bin"
        payload.write_bytes(os.urandom(seeded["bytes"]))
        env = {**common, **({"BUCKETHEAD_LOCAL_DIR": str(host)} if v2 else {})}
        server = SiteServer(code_root, state, "--workers", str(workers), **env)
        try:
            server.wait_ready()
            for _ in range(50):
                one_request(server.port, "/bench/get/")
            pids = server.workers()
            sampler = MemorySampler(pids)
            peer = UploadPeer(state, pids, moto.endpoint_url, bucket, payload, args.flush_interval)
            sampler.start()
            peer.start()
            begun = time.time()
            requests = client(server.port, args.seconds, args.write_every)
            ended = time.time()
            peer.stop()
            sampler.stop()
        finally:
            server.stop()
        big = seeded["bytes"] // 2
        events = read_events(state)
    flushes = [e for e in events if e["pid"] in pids and e["bytes"] >= big and begun < e["end"] <= ended]
    windows = [(e["end"] - e["duration"], e["end"]) for e in flushes]
    uploads = [w for w in peer.windows if not overlaps(*w, windows)]
    replicator = max({e["pid"] for e in flushes}, key=lambda p: sum(e["pid"] == p for e in flushes)) if flushes else 0
    return {
        "label": label,
        "workers": workers,
        "flushes": flushes,
        "uploads": uploads,
        "replicator": replicator,
        "windows": classify(requests, windows, uploads),
        "failed": sum(not r.ok for r in requests),
        "memory": memory_effect(sampler.samples, replicator, windows),
        "bytes": seeded["bytes"],
    }


def memory_effect(
    samples: list[tuple[float, int, dict[str, int]]], pid: int, windows: list[tuple[float, float]]
) -> dict:
    """The replicator's memory (MiB): median before the first flush, max during flushes, and the difference."""
    mine = [(t, m) for t, p, m in samples if p == pid]
    if not windows or not mine:
        return {}
    first = min(a for a, _ in windows)
    before = [m for t, m in mine if t < first - MARGIN]
    inside = [m for t, m in mine if overlaps(t, t, windows)]
    if not before or not inside:
        return {}
    after = [m for t, m in mine if t > first and not overlaps(t, t, windows, MARGIN)]
    out = {}
    for field in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
        base = median([m.get(field, 0) for m in before]) / 1024
        peak = max(m.get(field, 0) for m in inside) / 1024
        between = median([m.get(field, 0) for m in after]) / 1024
        out[field] = (base, peak, peak - base, between)
    hwm_before = max(m.get("VmHWM", 0) for m in before) / 1024
    hwm_after = max(m.get("VmHWM", 0) for _, m in mine) / 1024
    out["VmHWM"] = (hwm_before, hwm_after, hwm_after - hwm_before, float("nan"))
    return out


def summary(r: dict) -> dict[str, list[object]]:
    rows = {
        "quiet": latency_row("quiet", r["windows"]["quiet"]),
        "upload": latency_row("during a bare upload (peer)", r["windows"]["upload"]),
        "flush": latency_row("during a flush", r["windows"]["flush"]),
    }
    rows["flush - quiet"] = difference("a flush adds, over quiet", rows["flush"], rows["quiet"])
    rows["flush - upload"] = difference("a flush adds, over a bare upload", rows["flush"], rows["upload"])
    return rows


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{args.size_mb} MB database on moto S3 (this machine); one client, back to back, 1 write in "
          f"{args.write_every}; {MACHINE_NOTE}\n")  # fmt: skip
    rows: list[list[object]] = []
    sums = {}
    for r in results:
        durations = [e["duration"] for e in r["flushes"]]
        peers = [b - a for a, b in r["uploads"]]
        name = f"{r['label']} ({r['workers']} worker{'s' if r['workers'] > 1 else ''})"
        print(f"{name}: {len(durations)} flushes of {r['bytes'] / 2**20:.0f} MiB, median {median(durations):.2f} s; "
              f"{len(peers)} bare uploads of as many bytes, median {median(peers):.2f} s; {r['failed']} failed "
              "requests")  # fmt: skip
        s = sums[r["label"]] = summary(r)
        for row in s.values():
            rows.append([f"{r['label']}, {row[0]}", *row[1:]])
        if r["workers"] > 1:
            flush_requests = [x for chunk in r["windows"]["flush"] for x in chunk]
            for whose, test in (("the replicator", True), ("another worker", False)):
                mine = [[x for x in flush_requests if (x.pid == r["replicator"]) == test]]
                row = latency_row(f"{r['label']}, during a flush, served by {whose}", mine)
                rows.append([*row[:5], "", "", ""])
    print()
    print(table(["request latency (ms)", "requests", "median", "p99", "max", "windows", "window max: median",
                 "worst"], rows))  # fmt: skip
    print("(windows: each flush, each bare upload, and stretches of neither as long as a flush; 'window max' is the "
          "slowest request of a window)\n")  # fmt: skip
    mem_rows = []
    for r in results:
        m = r["memory"]
        if not m:
            mem_rows.append([r["label"], "no flush seen", "", "", ""])
            continue
        for field in ("VmRSS", "RssAnon", "RssShmem", "RssFile", "VmHWM"):
            base, peak, extra, between = m[field]
            mem_rows.append([f"{r['label']} replicator {field}", base, peak, extra, between])
    print(table(["replicator memory (MiB)", "before the first flush", "during a flush (max)", "extra",
                 "between later flushes"], mem_rows))  # fmt: skip
    v2 = results[0]
    if len(results) == 2 and all(r["memory"] for r in results):
        v1 = results[1]
        a2, a1 = sums["v2"]["flush - quiet"], sums["v1"]["flush - quiet"]
        print(f"\nv2/v1: what a flush adds to the slowest request of a window (median) {ratio(a2[6], a1[6])}, to p99 "
              f"{ratio(a2[3], a1[3])}; extra VmRSS {ratio(v2['memory']['VmRSS'][2], v1['memory']['VmRSS'][2])}, "
              f"extra RssAnon {ratio(v2['memory']['RssAnon'][2], v1['memory']['RssAnon'][2])}")  # fmt: skip
    if v2["memory"]:
        over_upload, over_quiet = sums["v2"]["flush - upload"], sums["v2"]["flush - quiet"]
        print(f"\ngoals (v2): a flush adds {over_upload[6]:+.1f} ms to the slowest request of a window (median over "
              f"windows) over a bare upload of the same bytes, {over_quiet[6]:+.1f} ms over quiet (goal < 10 ms); "
              "extra VmRSS "
              f"{v2['memory']['VmRSS'][2]:.1f} MiB: private (RssAnon) {v2['memory']['RssAnon'][2]:.1f} MiB, mapped "
              f"database pages (RssShmem) {v2['memory']['RssShmem'][2]:.1f} MiB (goal <= 32 MiB)")  # fmt: skip


def capture_probe(size_mb: int, mmap: bool) -> dict:
    """In this (fresh) process: `HostDatabase.capture` of a ``size_mb`` MB database, and how much VmRSS it added.

    ``mmap`` False sets ``PRAGMA mmap_size = 0`` on the capturing connection: SQLite then reads pages with
    read() into its small page cache instead of mapping the whole file into the process.
    """
    import os
    import sqlite3
    import tempfile

    from buckethead_django.engine.database import HostDatabase

    with private_dir("bench-capture-", under=SHM) as directory, tempfile.TemporaryDirectory() as tmp:
        database = HostDatabase(directory, busy_timeout=5)
        database.create(None)
        conn = database.connect(autocommit=True)
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        with contextlib.closing(sqlite3.connect(database.path)) as filler, filler:
            filler.executemany(
                "INSERT INTO blobs (data) VALUES (?)", ((os.urandom(65536),) for _ in range(size_mb * 16))
            )
        if not mmap:
            conn.execute("PRAGMA mmap_size = 0")
        sampler = MemorySampler([os.getpid()], every=0.002)
        before = memory_kib(os.getpid())
        sampler.start()
        began = time.perf_counter()
        database.capture(conn, Path(tmp) / "image.sqlite3")
        took = time.perf_counter() - began
        sampler.stop()
        conn.close()
    peak = {f: max(m.get(f, 0) for _, _, m in sampler.samples) for f in ("VmRSS", "RssAnon", "RssShmem")}
    return {"seconds": took, **{f: (peak[f] - before[f]) / 1024 for f in peak}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=50.0, help="how long the client sends requests, per version")
    parser.add_argument("--flush-interval", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for v2 (v1 runs one)")
    parser.add_argument("--write-every", type=int, default=10, help="one cache write in this many requests")
    parser.add_argument("--no-v1", action="store_true", help="measure this checkout only")
    parser.add_argument("--capture-probe", choices=["mmap", "no-mmap"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture_probe:
        print(json.dumps(capture_probe(args.size_mb, args.capture_probe == "mmap")))
        return

    moto = MotoServer().start()
    try:
        results = [measure("v2", ROOT, moto, args, v2=True)]
        if not args.no_v1:
            with v1_worktree() as v1:
                check_imports_from(v1, [v1])
                results.append(measure("v1", v1, moto, args, v2=False))
    finally:
        moto.stop()
    report(results, args)
    probes = {
        how: run_child([__file__, "--size-mb", str(args.size_mb), "--capture-probe", how], pythonpath=[ROOT])
        for how in ("mmap", "no-mmap")
    }
    print(f"\nThe capture alone (HostDatabase.capture of {args.size_mb} MB, each in a fresh process): what it adds\n")
    rows = [
        [f"capture, {name}", p["seconds"], p["VmRSS"], p["RssAnon"], p["RssShmem"]]
        for name, p in (
            ("the engine's pragmas (1 GiB mmap)", probes["mmap"]),
            ("PRAGMA mmap_size = 0", probes["no-mmap"]),
        )
    ]
    print(table(["", "seconds", "VmRSS (MiB)", "RssAnon (MiB)", "RssShmem (MiB)"], rows))


if __name__ == "__main__":
    main()
