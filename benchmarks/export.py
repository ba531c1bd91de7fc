"""``manage.py buckethead export`` next to its peers, measured in the same run.

    .venv/bin/python benchmarks/export.py [--size-mb 100] [--quick]

The script starts PostgreSQL (Debian's package; tests/postgres_server.py),
a redis-server and a moto S3 server on this machine. The site is the
example project with the export targets as extra aliases
(tests/sites/export_site.py), its BucketHead bucket on moto. Two states:

1. ``example``: the example project's handful (tests/sites/export_data.py:
   3 users, 4 documents with 9.7 MB of files, 7 cache entries, an admin log
   entry).
2. ``<N> MB``: about ``--size-mb`` MB: 40 % rows (documents, users), 40 %
   files (256 KB files and two of 8 MiB), 20 % cache entries of 1 KB.

Each state is exported into a fresh migrated PostgreSQL database, an empty
redis and an empty bucket, and next to it, in the same run:

- rows: the rows part alone with each method, ``copy`` (COPY into a
  temporary table, then one upsert: what the export uses on PostgreSQL) and
  ``insert`` (batched INSERT ... ON CONFLICT), each in a process that has read
  the snapshot already; and Django's serialization, ``dumpdata
  --natural-foreign --natural-primary -e contenttypes -e auth.permission``
  then ``loaddata --database pg`` (two processes), the way Django's
  documentation moves data between databases;
- files: the same bytes uploaded with boto3's transfer manager, ten files at
  a time, from a local directory (what ``aws s3 sync`` does; the download to
  that directory is not counted), and downloaded from the BucketHead bucket
  and uploaded again (both counted);
- cache: the same number of entries of the same sizes and timeouts, SET
  through one redis-py pipeline (a lower bound: no Django, nothing read).

The export's own figures are its wall clock as a process (it starts Django
and reads the latest snapshot into a private copy first) and the seconds of
each part from its ``--json``. Printed: seconds, MB/s and ratios.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import MACHINE_NOTE, private_dir, table  # noqa: E402
from tests.moto_server import MotoServer  # noqa: E402
from tests.postgres_server import PostgresServer, postgres_bin  # noqa: E402
from tests.redis_server import RedisServer, redis_binary  # noqa: E402
from tests.servers import EXAMPLE, s3_env  # noqa: E402

SITES = ROOT / "tests" / "sites"
MB = 1_000_000
#: Share of the state's size in rows, files and cache entries.
SHARES = {"rows": 0.4, "files": 0.4, "cache": 0.2}
#: Bytes a demo document row takes in SQLite (a 190-character title, a file name, a time).
ROW_BYTES = 250
FILE_BYTES = 256 * 1024
BIG_FILE_BYTES = 8 * 1024 * 1024
CACHE_VALUE_BYTES = 1000
SYNC_THREADS = 10  # `aws s3 sync`'s default max_concurrent_requests


# -- the children: seeding a large state, and the rows part alone ------------------------------------------


def child_seed(size_mb: float) -> None:
    """In a process of the site: fill its BucketHead database with about ``size_mb`` MB; print what it made."""
    import django

    django.setup()
    from demo.models import Document
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    size = size_mb * MB
    password = make_password("bench")
    User.objects.bulk_create([User(username=f"user{i}", password=password) for i in range(1000)], batch_size=1000)
    files_budget = int(size * SHARES["files"])
    sizes = [BIG_FILE_BYTES] * 2 if files_budget >= 4 * BIG_FILE_BYTES else []
    sizes += [FILE_BYTES] * max(1, (files_budget - sum(sizes)) // FILE_BYTES)
    names = [
        default_storage.save(f"documents/bench-{i:05d}.bin", ContentFile(os.urandom(n))) for i, n in enumerate(sizes)
    ]
    rows = max(10, int(size * SHARES["rows"]) // ROW_BYTES)
    title = "t" * 180
    for start in range(0, rows, 10_000):
        Document.objects.bulk_create(
            [
                Document(title=f"{title}{i:09d}", file=names[i % len(names)])
                for i in range(start, min(rows, start + 10_000))
            ]
        )
    entries = max(10, int(size * SHARES["cache"]) // CACHE_VALUE_BYTES)
    for start in range(0, entries, 500):
        batch = {f"bench:{i}": os.urandom(CACHE_VALUE_BYTES) for i in range(start, min(entries, start + 500))}
        cache.set_many(batch, timeout=None if start % 1000 == 0 else 3600)
    print(json.dumps({"rows": rows + 1000, "files": len(names), "file_bytes": sum(sizes), "entries": entries}))


def child_rows(method: str) -> None:
    """In a process of the site: read the snapshot, then time the rows part alone with ``method``."""
    import django

    django.setup()
    from buckethead_django.export import rows, source
    from buckethead_django.management.bucket import Bucket

    bucket = Bucket.open()
    with source.opened(bucket):
        planned = rows.plan("default", "pg")
        started = time.perf_counter()
        rows.copy(planned, method=method)
        seconds = time.perf_counter() - started
    bucket.close()
    print(json.dumps({"method": method, "rows": planned.rows, "seconds": seconds}))


# -- the run --------------------------------------------------------------------------------------------


class Servers:
    """PostgreSQL (with a migrated template database), redis-server and moto, for the whole run."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path) -> None:
        bindir, redis_exe = postgres_bin(), redis_binary()
        if bindir is None or redis_exe is None:
            raise SystemExit("needs Debian's postgresql and redis-server: apt-get install -y postgresql redis-server")
        self.tmp = tmp
        self.postgres = PostgresServer(bindir).start()
        stack.callback(self.postgres.stop)
        self.redis = RedisServer(redis_exe).start()
        stack.callback(self.redis.stop)
        self.moto = MotoServer().start()
        stack.callback(self.moto.stop)
        self.template = self.postgres.create_database("migrated")
        self.manage(tmp / "migrate", "migrate", "--database", "pg", "-v", "0", env=self.env(None, self.template))

    def env(self, site: Site | None, database: str, bucket: str = "") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_", "EXPORT_"))}
        if site is not None:
            env.update(s3_env(site.bucket, self.moto.endpoint_url), BUCKETHEAD_LOCAL_DIR=str(site.state / "host"))
        else:  # a process that uses no BucketHead state: keep whatever it might make in the run's directory
            env.update(
                BUCKETHEAD_LOCAL_PATH=str(self.tmp / "unused-bucket"), BUCKETHEAD_LOCAL_DIR=str(self.tmp / "unused")
            )
        env.update(
            DJANGO_SETTINGS_MODULE="export_site",
            DJANGO_DEBUG="0",
            PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(SITES), str(ROOT)]),
            EXPORT_PG_NAME=database,
            EXPORT_PG_HOST=self.postgres.host,
            EXPORT_PG_PORT=str(self.postgres.port),
            EXPORT_REDIS_URL=self.redis.url(0),
            EXPORT_S3_BUCKET=bucket,
            EXPORT_S3_ENDPOINT_URL=self.moto.endpoint_url,
        )
        return env

    def manage(self, cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        cwd.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(  # noqa: S603 - our own interpreter and project
            [sys.executable, str(EXAMPLE / "manage.py"), *args],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        return done

    def python(self, *args: str, env: dict[str, str]) -> dict[str, Any]:
        done = subprocess.run(  # noqa: S603
            [sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=3600, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def fresh_database(self) -> str:
        name = f"target_{uuid.uuid4().hex[:10]}"
        self.postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def fresh_bucket(self) -> str:
        name = f"graduated-{uuid.uuid4().hex[:10]}"
        self.moto.create_bucket(name)
        return name


class Site:
    """One seeded state: its BucketHead bucket on moto and its host directory."""

    def __init__(self, servers: Servers, label: str) -> None:
        self.label = label
        self.state = servers.tmp / label.replace(" ", "-")
        self.bucket = servers.fresh_bucket()


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    found: list[float] = []
    started = time.perf_counter()
    yield found
    found.append(time.perf_counter() - started)


def measure(servers: Servers, site: Site) -> list[list[object]]:
    """Export the state, then run its peers; the table's rows."""
    database, bucket = servers.fresh_database(), servers.fresh_bucket()
    servers.redis.command("FLUSHALL")
    env = servers.env(site, database, bucket)
    args = ["buckethead", "export", "--database", "pg", "--cache", "redis", "--storage", "s3", "--json"]
    with timed() as wall:
        done = servers.manage(site.state, *args, env=env)
    data = json.loads(done.stdout)
    rows_s, cache_s, files_s = (data[p]["seconds"] for p in ("database", "cache", "files"))
    file_bytes, cache_bytes = data["files"]["bytes"], data["cache"]["bytes"]

    dump = servers.tmp / f"{site.label}-dump.json"
    dump_args = ["dumpdata", "--natural-foreign", "--natural-primary", "-e", "contenttypes", "-e", "auth.permission"]
    with timed() as dumped:
        servers.manage(site.state, *dump_args, "-e", "buckethead_django", "-o", str(dump), env=env)
    json_bytes = dump.stat().st_size
    with timed() as loaded:
        servers.manage(
            site.state, "loaddata", str(dump), "--database", "pg", env=servers.env(site, servers.fresh_database())
        )
    methods = {
        m: servers.python("--child-rows", m, env=servers.env(site, servers.fresh_database()))["seconds"]
        for m in ("copy", "insert")
    }

    sync, via_disk = files_peers(servers, site, data["files"]["names"])
    pipeline = cache_peer(servers, data["cache"]["entries"], cache_bytes)
    rows_n = data["database"]["rows"]
    peer_total = dumped[0] + loaded[0] + via_disk + pipeline

    def rate(nbytes: float, seconds: float) -> float:
        return nbytes / MB / seconds if seconds else float("nan")

    return [
        [f"{site.label}: export, whole (a process)", wall[0], (json_bytes + file_bytes + cache_bytes) / MB,
         rate(json_bytes + file_bytes + cache_bytes, wall[0]), "1.00x", f"{peer_total / wall[0]:.2f}x"],
        [f"  rows ({rows_n:,}), export's part", rows_s, json_bytes / MB, rate(json_bytes, rows_s), "1.00x", ""],
        ["  rows, method copy (alone)", methods["copy"], json_bytes / MB, rate(json_bytes, methods["copy"]),
         f"{methods['copy'] / rows_s:.2f}x", ""],
        ["  rows, method insert (alone)", methods["insert"], json_bytes / MB, rate(json_bytes, methods["insert"]),
         f"{methods['insert'] / rows_s:.2f}x", ""],
        ["  rows, dumpdata + loaddata", dumped[0] + loaded[0], json_bytes / MB,
         rate(json_bytes, dumped[0] + loaded[0]), f"{(dumped[0] + loaded[0]) / rows_s:.2f}x", ""],
        [f"  files ({data['files']['files']}), export's part", files_s, file_bytes / MB, rate(file_bytes, files_s),
         "1.00x", ""],
        ["  files, boto3 upload from disk (s3 sync)", sync, file_bytes / MB, rate(file_bytes, sync),
         f"{sync / files_s:.2f}x", ""],
        ["  files, boto3 download + upload", via_disk, file_bytes / MB, rate(file_bytes, via_disk),
         f"{via_disk / files_s:.2f}x", ""],
        [f"  cache ({data['cache']['entries']:,} entries), export's part", cache_s, cache_bytes / MB,
         rate(cache_bytes, cache_s), "1.00x", ""],
        ["  cache, redis-py pipeline", pipeline, cache_bytes / MB, rate(cache_bytes, pipeline),
         f"{pipeline / cache_s:.2f}x", ""],
    ]  # fmt: skip


def files_peers(servers: Servers, site: Site, names: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds to upload the files from disk (like ``aws s3 sync``), and to download them from the BucketHead
    bucket and upload them (both counted)."""
    client = servers.moto.client()
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(max_concurrency=SYNC_THREADS)
    with tempfile.TemporaryDirectory(dir=servers.tmp) as tmp:
        local = Path(tmp)

        def download(entry: dict[str, Any]) -> None:
            path = local / entry["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(site.bucket, f"files/{entry['sha256']}", str(path), Config=config)

        def upload(bucket: str, entry: dict[str, Any]) -> None:
            client.upload_file(str(local / entry["name"]), bucket, entry["name"], Config=config)

        def each(fn: Any, *args: Any) -> None:
            with concurrent.futures.ThreadPoolExecutor(SYNC_THREADS) as pool:
                list(pool.map(lambda e: fn(*args, e), names))

        with timed() as via_disk:
            each(download)
            each(upload, servers.fresh_bucket())
        with timed() as sync:
            each(upload, servers.fresh_bucket())
    return sync[0], via_disk[0]


def cache_peer(servers: Servers, entries: int, nbytes: int) -> float:
    """Seconds to SET as many values of the same total size through one redis-py pipeline, half with a TTL."""
    import pickle

    import redis

    client = redis.Redis.from_url(servers.redis.url(1))
    value = pickle.dumps(os.urandom(max(1, nbytes // max(1, entries)) - 20), pickle.HIGHEST_PROTOCOL)
    with timed() as took:
        pipe = client.pipeline(transaction=False)
        for i in range(entries):
            pipe.set(f":1:peer:{i}", value, px=3_600_000 if i % 2 else None)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
    client.flushdb()
    return took[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100, help="the size of the large state (100)")
    parser.add_argument("--quick", action="store_true", help="a 2 MB large state, for a smoke run")
    parser.add_argument("--child-seed", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child-rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_seed is not None:
        child_seed(args.child_seed)
        return
    if args.child_rows is not None:
        child_rows(args.child_rows)
        return
    size = 2.0 if args.quick else args.size_mb

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(private_dir("bench-export-"))
        servers = Servers(stack, tmp)
        results = []
        example = Site(servers, "example")
        servers.manage(example.state, "migrate", "-v", "0", env=servers.env(example, ""))
        servers.manage(
            example.state, "shell", "-c", "import export_data; export_data.seed()", env=servers.env(example, "")
        )
        results += measure(servers, example)
        large = Site(servers, f"{size:g} MB")
        servers.manage(large.state, "migrate", "-v", "0", env=servers.env(large, ""))
        servers.python("--child-seed", str(size), env=servers.env(large, ""))
        results += measure(servers, large)

    print(f"\nbuckethead export into PostgreSQL + redis-server + moto S3, all on this machine; {MACHINE_NOTE}\n")
    header = ["", "seconds", "MB", "MB/s", "x export's part", "peers / export"]
    print(table(header, results))
    print(
        "\nMB: rows as dumpdata's JSON, files and cache entries as stored. 'x export's part': the peer's seconds "
        "over the export's for the same part (above 1: the export is faster). 'peers / export': dumpdata + "
        "loaddata, boto3 download + upload and the redis pipeline, over the export's whole wall clock."
    )


if __name__ == "__main__":
    main()
