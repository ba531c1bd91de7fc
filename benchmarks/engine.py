"""Engine measurements, each against a peer measured in the same run.

    .venv/bin/python benchmarks/engine.py [--size-mb 100]

Prints, for a database of ``--size-mb`` MB on a moto S3 server over HTTP:
- flush: `force_flush()` versus a bare boto3 upload of the same bytes;
- restore: `start()` on a fresh host (download, verify, install) versus a bare boto3 download of the same object;
- idle tick: an unchanged `force_flush()` versus one `PRAGMA data_version`;
- KV get/set latency versus a file-backed SQLite database (WAL) and a dict.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import best_of, per_op
from buckethead_django.engine import BucketConfig, BucketSQLite, SnapshotConfig
from buckethead_django.engine.history import LATEST
from tests.moto_server import CREDENTIALS, MotoServer

SHM = "/dev/shm"  # noqa: S108 - the host database's default place; a private directory is made in it


def line(name: str, ours: float, peer: float, peer_name: str, unit: str) -> None:
    print(f"{name:<34} {ours:>10.3f} {unit:<3}  {peer_name:<26} {peer:>10.3f} {unit:<3}  ratio {ours / peer:6.2f}x")


def fill(bh: BucketSQLite, size_mb: int) -> None:
    conn = bh.connect()
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    row = os.urandom(64 * 1024)
    with conn:
        conn.executemany("INSERT INTO blobs (data) VALUES (?)", ((row,) for _ in range(size_mb * 16)))
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        moto = MotoServer().start()
        stack.callback(moto.stop)
        moto.create_bucket("bench")
        cfg = BucketConfig(
            bucket="bench",
            endpoint_url=moto.endpoint_url,
            region="us-east-1",
            access_key_id=CREDENTIALS["aws_access_key_id"],
            secret_access_key=CREDENTIALS["aws_secret_access_key"],
        )
        client = moto.client()
        snap = SnapshotConfig(min_interval_seconds=0, keep_previous=False)
        print(f"database of {args.size_mb} MB on moto over HTTP; best of 5; per-op figures are medians of 5 batches\n")

        hosts = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-engine-", dir=SHM)))
        bh = BucketSQLite(cfg, snap, background_flush=False, local_dir=hosts / "writer").start()
        fill(bh, args.size_mb)

        def flush_changed() -> None:
            bh.kv.set("tick", str(time.time()))
            bh.force_flush()

        flush_s = best_of(flush_changed)
        nbytes = bh.last_flush.bytes if bh.last_flush else 0
        payload = os.urandom(nbytes)
        upload_s = best_of(lambda: client.upload_fileobj(io.BytesIO(payload), "bench", "peer.bin"))
        line("flush (changed)", flush_s, upload_s, "boto3 upload_fileobj", "s")

        idle_us = per_op(lambda _i: bh.force_flush(), 2000)
        watcher = bh.connect()
        pragma_us = per_op(lambda _i: watcher.execute("PRAGMA data_version").fetchone(), 2000)
        line("idle tick (unchanged)", idle_us, pragma_us, "PRAGMA data_version", "us")
        bh.stop()

        fresh = iter(range(1000))

        def restore() -> None:
            # A fresh host each time: a host whose LOCAL_DIR is current would download nothing.
            host = hosts / f"new-{next(fresh)}"
            BucketSQLite(cfg, snap, background_flush=False, local_dir=host).start().stop()
            shutil.rmtree(host)

        restore_s = best_of(restore)
        chunk_key = bh.history.find(LATEST).record.chunks[0].key
        with tempfile.TemporaryDirectory() as tmp:
            download_s = best_of(lambda: client.download_file("bench", chunk_key, str(Path(tmp) / "x")))
        line("restore (start)", restore_s, download_s, "boto3 download_file", "s")
        print()

        with tempfile.TemporaryDirectory() as tmp:
            bh = BucketSQLite(
                BucketConfig.local(Path(tmp) / "b"), snap, background_flush=False, local_dir=hosts / "kv"
            ).start()
            file_db = sqlite3.connect(Path(tmp) / "peer.db", isolation_level=None)
            file_db.execute("PRAGMA journal_mode=WAL")
            file_db.execute("PRAGMA synchronous=NORMAL")
            file_db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB)")
            value = "x" * 100
            n = 5000
            ours_set = per_op(lambda i: bh.kv.set(f"k{i}", value), n)
            peer_set = per_op(
                lambda i: file_db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{i}", value.encode())), n
            )
            line("kv.set (100 B)", ours_set, peer_set, "SQLite file, WAL", "us")
            ours_get = per_op(lambda i: bh.kv.get(f"k{i}"), n)
            peer_get = per_op(lambda i: file_db.execute("SELECT value FROM kv WHERE key=?", (f"k{i}",)).fetchone(), n)
            line("kv.get (100 B)", ours_get, peer_get, "SQLite file, WAL", "us")
            d: dict[str, str] = {}
            dict_set = per_op(lambda i: d.__setitem__(f"k{i}", value), n)
            line("kv.set (100 B)", ours_set, dict_set, "Python dict", "us")
            bh.stop()
            file_db.close()


if __name__ == "__main__":
    main()
