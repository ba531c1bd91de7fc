"""BucketHeadCache next to Django's own cache backends, measured in the same run.

    .venv/bin/python benchmarks/cache.py [--ops 5000] [--threads 8]

Prints, per backend, the median microseconds of get (hit), get (miss), set and
incr, and the throughput of ``--threads`` threads doing a 90/10 get/set mix,
with the ratio to LocMemCache (process memory) and to DatabaseCache on a
SQLite file (durable, like BucketHead).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import per_op  # noqa: E402


def configure(tmp: Path) -> None:
    settings.configure(
        INSTALLED_APPS=["buckethead_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / "db.sqlite3")}},
        BUCKETHEAD={"LOCAL_PATH": str(tmp / "bucket"), "AUTOSTART": True, "FLUSH_INTERVAL": 3600},
        CACHES={
            "bucket": {"BACKEND": "buckethead_django.cache.BucketHeadCache"},
            "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"MAX_ENTRIES": 10**7}},
            "database": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"},
            "file": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp / "fc")},
        },
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")


def threaded_ops_per_second(alias: str, threads: int, seconds: float = 2.0) -> float:
    from django.core.cache import caches

    done = [0] * threads
    stop = time.monotonic() + seconds

    def work(t: int) -> None:
        cache = caches[alias]
        i = 0
        while time.monotonic() < stop:
            key = f"mix:{t}:{i % 500}"
            if i % 10 == 0:
                cache.set(key, i)
            else:
                cache.get(key)
            i += 1
        done[t] = i

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        configure(Path(tmp))
        from django.core.cache import caches

        value = {"user": 123, "name": "alice", "roles": ["staff"]}
        results: dict[str, dict[str, float]] = {}
        for alias in ("bucket", "locmem", "database", "file"):
            cache = caches[alias]
            n = args.ops if alias != "file" else max(500, args.ops // 10)
            row = {
                "set": per_op(lambda i, c=cache: c.set(f"k{i}", value), n),
                "get hit": per_op(lambda i, c=cache: c.get(f"k{i}"), n),
                "get miss": per_op(lambda i, c=cache: c.get(f"missing{i}"), n),
            }
            cache.set("counter", 0)
            row["incr"] = per_op(lambda _i, c=cache: c.incr("counter"), n)
            row[f"{args.threads} threads ops/s"] = threaded_ops_per_second(alias, args.threads)
            results[alias] = row
        metrics = list(results["bucket"])
        print(f"{'metric':<22}" + "".join(f"{a:>12}" for a in results) + "   bucket/locmem  bucket/database")
        for metric in metrics:
            cells = "".join(f"{results[a][metric]:>12.1f}" for a in results)
            b, lm, db = results["bucket"][metric], results["locmem"][metric], results["database"][metric]
            print(f"{metric + (' (us)' if 'ops' not in metric else ''):<22}{cells}   {b / lm:>12.2f}x {b / db:>14.2f}x")
        from buckethead_django import runtime

        runtime.stop()


if __name__ == "__main__":
    main()
