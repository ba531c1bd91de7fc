"""BucketHeadCache next to Django's own cache backends, redis and v1, measured in the same run.

    .venv/bin/python benchmarks/cache.py [--ops 5000] [--threads 8] [--rounds 5] [--repeat 3] [--no-v1]

Backends, each in this process:

- ``bucket``: BucketHeadCache on the host database (a fresh LOCAL_DIR under
  /dev/shm, a local bucket, flushing every 5 s);
- ``locmem``: LocMemCache (this process's memory, nothing durable);
- ``database``: DatabaseCache on a SQLite file with the host database's
  pragmas (WAL, synchronous=NORMAL);
- ``redis``: django-redis on a redis-server started on a free port of
  127.0.0.1 (no persistence), stopped afterwards;
- ``file``: FileBasedCache (a tenth as many calls).

Printed: the median microseconds of one set, get (hit), get (miss) and incr,
the backends taking turns ``--rounds`` times (``--ops`` calls each in all), and
the throughput of ``--threads`` threads doing a 90/10 get/set mix (1 s per
backend per round), with the ratio of bucket to each peer.

Then v1's BucketHeadCache (the in-memory engine, commit 367957a, in a git
worktree) and this checkout's run the same measurements as child processes
of their own (this script with ``--child``), in turns, ``--repeat`` times;
the median of the runs, and the ratio v2 / v1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# This script's directory is on the path: `timing` and `support` are imported from it, never through the
# checkout, so that a --child run measures whichever buckethead_django comes first on PYTHONPATH (v1's worktree).
from support import MACHINE_NOTE, ROOT, SHM, check_imports_from, private_dir, ratio, redis_server, run_child, table
from timing import interleaved

VALUE = {"user": 123, "name": "alice", "roles": ["staff"]}


def configure(tmp: Path, shm: Path | None, redis_url: str | None, *, v2: bool = True) -> list[str]:
    """Django settings with one cache alias per backend; returns the aliases (bucket first)."""
    import django
    from django.conf import settings

    room = {"MAX_ENTRIES": 10**7}  # no culling in the middle of a measurement, for every backend alike
    caches = {"bucket": {"BACKEND": "buckethead_django.cache.BucketHeadCache", "OPTIONS": room}}
    if redis_url is not None:
        caches.update(
            locmem={"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": room},
            database={"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table",
                      "OPTIONS": room},
            redis={"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url},
            file={"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp / "fc"),
                  "OPTIONS": room},
        )  # fmt: skip
    bucket = {"LOCAL_PATH": str(tmp / "bucket"), "AUTOSTART": True, "FLUSH_INTERVAL": 5}
    if v2:
        bucket["LOCAL_DIR"] = str(shm)
    pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA mmap_size=1073741824"
    settings.configure(
        INSTALLED_APPS=["buckethead_django"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(tmp / "db.sqlite3"),
                "OPTIONS": {"init_command": pragmas},
            }
        },
        BUCKETHEAD=bucket,
        CACHES=caches,
        SECRET_KEY="benchmarks-cache",  # noqa: S106 - a throwaway settings module
        USE_TZ=True,
    )
    django.setup()
    if "database" in caches:
        from django.core.management import call_command

        call_command("createcachetable", verbosity=0)
    return list(caches)


def threaded_ops_per_second(alias: str, threads: int, seconds: float) -> float:
    from django.core.cache import caches

    done = [0] * threads
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        cache = caches[alias]
        start.wait()
        stop = time.monotonic() + seconds
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
    start.wait()
    for thread in pool:
        thread.join()
    return sum(done) / seconds


def measure(aliases: list[str], ops: int, threads: int, rounds: int) -> dict[str, dict[str, float]]:
    from django.core.cache import caches

    per_round = max(1, ops // rounds)

    def calls(alias: str) -> int:
        return max(1, per_round // 10) if alias == "file" else per_round

    results: dict[str, dict[str, float]] = {alias: {} for alias in aliases}
    metrics: dict[str, Callable[[object], Callable[[int], object]]] = {
        "set": lambda c: lambda i: c.set(f"k{i}", VALUE),
        "get (hit)": lambda c: lambda i: c.get(f"k{i % (ops // 10) if ops >= 10 else 0}"),
        "get (miss)": lambda c: lambda i: c.get(f"missing{i}"),
        "incr": lambda c: lambda _i: c.incr("counter"),
    }
    for metric, make in metrics.items():
        if metric == "incr":
            for alias in aliases:
                caches[alias].set("counter", 0, timeout=None)
        fns = {alias: (make(caches[alias]), calls(alias)) for alias in aliases}
        for alias, us in interleaved(fns, rounds).items():
            results[alias][f"{metric} (us)"] = us
    mix = f"{threads} threads 90/10 (ops/s)"
    totals = dict.fromkeys(aliases, 0.0)
    for _ in range(rounds):
        for alias in aliases:
            totals[alias] += threaded_ops_per_second(alias, threads, 1.0)
    for alias in aliases:
        results[alias][mix] = totals[alias] / rounds
    return results


def child(args: argparse.Namespace) -> None:
    """Only BucketHeadCache, in a process of its own (this checkout's, or v1's on PYTHONPATH)."""
    import buckethead_django

    with private_dir("bench-cache-") as tmp, private_dir("bench-cache-", under=SHM) as shm:
        v2 = (Path(buckethead_django.__file__).parent / "db").is_dir()
        configure(tmp, shm / "host", None, v2=v2)
        from buckethead_django import runtime

        try:
            results = measure(["bucket"], args.ops, args.threads, args.rounds)["bucket"]
        finally:
            runtime.stop()
    print(json.dumps({"engine": buckethead_django.__file__, **results}))


def versions(v1: Path | None, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    argv = [__file__, "--child", "--ops", str(args.ops), "--threads", str(args.threads), "--rounds", str(args.rounds)]
    runs: dict[str, list[dict]] = {"v2": []} if v1 is None else {"v2": [], "v1": []}
    for _ in range(args.repeat):
        runs["v2"].append(run_child(argv, pythonpath=[ROOT]))
        if v1 is not None:
            found = run_child(argv, pythonpath=[v1])
            if not Path(found["engine"]).is_relative_to(v1):
                raise RuntimeError(f"v1's run imported {found['engine']}")
            runs["v1"].append(found)
    return {
        version: {k: statistics.median([r[k] for r in found]) for k in found[0] if k != "engine"}
        for version, found in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=5000, help="calls per metric and backend, over all rounds")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="how often the backends take turns")
    parser.add_argument("--repeat", type=int, default=3, help="runs per version for the v1 comparison")
    parser.add_argument("--no-v1", action="store_true", help="skip v1's BucketHeadCache")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(1, str(ROOT))  # this checkout's buckethead_django (after this directory)
    with private_dir("bench-cache-") as tmp, private_dir("bench-cache-", under=SHM) as shm, redis_server() as url:
        aliases = configure(tmp, shm / "host", url)
        from buckethead_django import runtime

        try:
            results = measure(aliases, args.ops, args.threads, args.rounds)
        finally:
            runtime.stop()
    print(f"\nCache backends in one process, median us per call ({args.ops} calls in {args.rounds} rounds, taking "
          f"turns; a tenth as many for file); {MACHINE_NOTE}\n")  # fmt: skip
    metrics = list(results["bucket"])
    peers = [a for a in aliases if a != "bucket"]
    rows = [[m, *(results[a][m] for a in aliases), *(ratio(results["bucket"][m], results[p][m]) for p in peers)]
            for m in metrics]  # fmt: skip
    print(table(["metric", *aliases, *(f"bucket/{p}" for p in peers)], rows))

    from support import v1_worktree

    if args.no_v1:
        found = versions(None, args)
    else:
        with v1_worktree() as v1:
            check_imports_from(v1, [v1])
            found = versions(v1, args)
    print(f"\nBucketHeadCache, this checkout (v2) and v1, each in processes of their own, in turns, {args.repeat} "
          "runs each, median of the runs\n")  # fmt: skip
    cols = list(found)
    rows = [[m, *(found[c][m] for c in cols), ratio(found["v2"][m], found["v1"][m]) if "v1" in found else "-"]
            for m in found["v2"]]  # fmt: skip
    print(table(["metric", *cols, "v2/v1"], rows))


if __name__ == "__main__":
    main()
