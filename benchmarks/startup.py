"""How long a host takes to serve with several gunicorn workers on a large database, and how often it downloads it.

    .venv/bin/python benchmarks/startup.py [--size-mb 100] [--workers 4] [--runs 3]

A moto S3 server holds a bucket seeded with a ``--size-mb`` MB database (a
table of 64 KiB random blobs); the site reaches it through a counting TCP
proxy (tests/tcp_proxy.py) that notes every request for a snapshot's data.
gunicorn starts ``--workers`` sync workers of the bench site (the example
project, benchmarks/bench_site):

- on a fresh host: an empty LOCAL_DIR in /dev/shm, ``--runs`` times;
- on a host whose LOCAL_DIR already holds the current generation (the same
  directory again): nothing to download, ``--runs`` times.

Printed, per case: seconds from starting gunicorn to the first answered
request and to every worker having answered one; the GET requests for
snapshot data and how many whole snapshots they add up to (one download per
host is the design, not one per worker). Next to them, measured in the same
run: a bare boto3 download of the same object through the same proxy, and
gunicorn starting the same site without BucketHead (Django's sqlite3 backend,
LocMemCache). v1 allowed one worker per host, so it has no figure here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import (
    MACHINE_NOTE,
    ROOT,
    SHM,
    SiteServer,
    median,
    private_dir,
    ratio,
    seed_site,
    table,
)
from tests.moto_server import CREDENTIALS, MotoServer
from tests.servers import s3_env
from tests.tcp_proxy import TcpProxy

REQUEST_HEAD = re.compile(rb"(?s)(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.[01]\r\n(.*?)\r\n\r\n")
RANGE = re.compile(rb"(?im)^range: *bytes=(\d+)-(\d*)")


class CountingProxy(TcpProxy):
    """The test suite's TCP proxy, noting the method, path and byte range of every request that passes."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.requests: list[tuple[str, str, tuple[int, int | None] | None]] = []
        self.on_request(REQUEST_HEAD.pattern, lambda: None, times=10**12)

    def _claim_rules(self, window: bytes) -> list:
        hit = super()._claim_rules(window)
        if hit:
            found = REQUEST_HEAD.search(window)
            if found is not None:
                span = RANGE.search(found.group(3))
                byte_range = (int(span.group(1)), int(span.group(2)) if span.group(2) else None) if span else None
                with self._lock:
                    self.requests.append((found.group(1).decode(), found.group(2).decode(), byte_range))
        return hit

    def snapshot_gets(self, since: int, size: int) -> tuple[int, float]:
        """GET requests for snapshot chunks since request number ``since``, and the snapshots' worth they asked."""
        gets = [r for r in self.requests[since:] if r[0] == "GET" and ".chunk" in r[1]]
        asked = 0
        for _, _, byte_range in gets:
            if byte_range is None:
                asked += size
            else:
                first, last = byte_range
                asked += (min(last, size - 1) if last is not None else size - 1) - first + 1
        return len(gets), asked / size


def all_workers_answered(server: SiteServer, workers: int, timeout: float = 180) -> float:
    """Send requests from several threads until ``workers`` distinct pids answered; seconds since the start."""
    seen: set[int] = set()
    lock = threading.Lock()
    done = threading.Event()

    def ask() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(server.url + "/bench/pid/", timeout=30) as response:  # noqa: S310
                    pid = int(json.loads(response.read())["pid"])
            except OSError:
                time.sleep(0.01)
                continue
            with lock:
                seen.add(pid)
                if len(seen) >= workers:
                    done.set()

    threads = [threading.Thread(target=ask) for _ in range(2 * workers)]
    for t in threads:
        t.start()
    done.wait(timeout)
    took = time.perf_counter() - server.started_at
    for t in threads:
        t.join()
    if len(seen) < workers:
        raise RuntimeError(f"only {len(seen)} of {workers} workers answered:\n{server.log()[-3000:]}")
    return took


def start_once(state: Path, workers: int, env: dict[str, str]) -> tuple[float, float, str]:
    server = SiteServer(ROOT, state, "--workers", str(workers), **env)
    try:
        first = server.wait_ready()
        every = all_workers_answered(server, workers)
    finally:
        server.stop()
    return first, every, server.log()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="starts per case")
    args = parser.parse_args()

    moto = MotoServer().start()
    proxy = CountingProxy("127.0.0.1", moto.port).start()
    rows: list[list[object]] = []
    try:
        bucket = "bench-startup"
        moto.create_bucket(bucket)
        with (
            private_dir("bench-startup-") as state,
            private_dir("bench-startup-seed-", under=SHM) as seed_host,
            private_dir("bench-startup-host-", under=SHM) as hosts,
        ):
            seed_site(ROOT, state, args.size_mb, **s3_env(bucket, moto.endpoint_url),
                               BUCKETHEAD_LOCAL_DIR=str(seed_host))  # fmt: skip
            client = moto.client()
            chunk = next(
                o for o in client.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".chunk0000")
            )
            size = int(chunk["Size"])
            env = s3_env(bucket, proxy.url)
            results: dict[str, list[tuple[float, float, int, float]]] = {"fresh": [], "current": []}
            for case in ("fresh", "current"):
                for run in range(args.runs):
                    host = hosts / (f"fresh-{run}" if case == "fresh" else f"fresh-{args.runs - 1}")
                    mark = len(proxy.requests)
                    first, every, log = start_once(state, args.workers, {**env, "BUCKETHEAD_LOCAL_DIR": str(host)})
                    gets, downloads = proxy.snapshot_gets(mark, size)
                    results[case].append((first, every, gets, downloads))
                    restored = log.count("restored snapshot")
                    if case == "fresh" and restored != 1:
                        print(f"  note: {restored} processes logged a restore in a fresh-host run", file=sys.stderr)
            # Peers, in the same run: a bare download of the same object, and the site without BucketHead.
            downloads_s = []
            through = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1",
                                   config=Config(retries={"max_attempts": 2}), **CREDENTIALS)  # fmt: skip
            for _ in range(args.runs):
                with private_dir("bench-startup-dl-", under=SHM) as tmp:
                    began = time.perf_counter()
                    through.download_file(bucket, chunk["Key"], str(tmp / "x"))
                    downloads_s.append(time.perf_counter() - began)
            plain = []
            for _ in range(args.runs):
                with private_dir("bench-startup-plain-") as plain_state:
                    first, every, _ = start_once(plain_state, args.workers, {"BENCH_PLAIN": "1"})
                    plain.append((first, every))
    finally:
        proxy.stop()
        moto.stop()

    download = median(downloads_s)
    plain_first, plain_every = median([p[0] for p in plain]), median([p[1] for p in plain])
    for case, name in (("fresh", "fresh host (empty LOCAL_DIR)"), ("current", "LOCAL_DIR already current")):
        found = results[case]
        first, every = median([f[0] for f in found]), median([f[1] for f in found])
        gets = "/".join(str(f[2]) for f in found)
        downloads = "/".join(f"{f[3]:.2f}" for f in found)
        peer_first = plain_first + (download if case == "fresh" else 0.0)
        rows.append([f"v2, {name}", first, every, gets, downloads, ratio(first, peer_first)])
    rows.append(["bare boto3 download of the snapshot", download, float("nan"), "", "", ""])
    rows.append(["site without BucketHead (sqlite3 file)", plain_first, plain_every, "", "", ""])
    print(f"\n{args.workers} gunicorn workers, a {size / 2**20:.0f} MiB snapshot on moto S3 through a counting proxy; "
          f"medians of {args.runs} starts; {MACHINE_NOTE}\n")  # fmt: skip
    print(table(["start", "first answer (s)", "all workers (s)", "snapshot GETs per start", "downloads per start",
                 "first answer / peer"], rows))  # fmt: skip
    print(
        "\n(peer of a fresh host: the site without BucketHead plus a bare download; of a current host: the site "
        "without BucketHead. A GET is one request of a ranged, multipart download.)"
    )


if __name__ == "__main__":
    main()
