"""Django's ORM on the host database (``buckethead_django.db``) next to Django's sqlite3 backend, and v1.

    .venv/bin/python benchmarks/orm.py [--ops 2000] [--procs 4] [--seconds 10] [--no-v1]

1. One process: the median microseconds of an ORM create, get by pk, filter on
   an indexed field (a table of ``5 * --ops`` rows, ~10 rows per tag) and
   update by pk, on:

   - ``bucket``: ``ENGINE: buckethead_django.db``, the host database in a
     fresh LOCAL_DIR under /dev/shm, on a local bucket, flushing every 5 s;
   - ``sqlite3 shm, same pragmas``: Django's sqlite3 backend on a file in
     /dev/shm with the host database's settings (WAL, synchronous=NORMAL,
     a 1 GiB mmap, BEGIN IMMEDIATE);
   - ``sqlite3 disk, same pragmas``: the same on a file on disk;
   - ``sqlite3 disk, defaults``: Django's sqlite3 backend as it comes (a
     rollback journal, synchronous=FULL, BEGIN DEFERRED) on a file on disk.

2. v1 had no ORM on BucketHead (Django's tables were in a plain SQLite file):
   its engine's KV get/set and plain SQL are measured by `engine_child.py` in
   a process of its own on v1's worktree (commit 367957a, the in-memory
   engine), next to the same script on this checkout.

3. ``--procs`` processes write ORM rows at once for ``--seconds`` seconds:
   each loop creates a row, then in a transaction reads a row and saves it
   again (a read-then-write transaction, which SQLite's deferred transactions
   fail with "database is locked" when another process wrote meanwhile).
   Rows per second over all processes, and the errors, per backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import (  # noqa: E402
    MACHINE_NOTE,
    SHM,
    check_imports_from,
    median,
    private_dir,
    ratio,
    run_child,
    table,
    v1_worktree,
)
from benchmarks.timing import interleaved  # noqa: E402

SAME_PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA mmap_size=1073741824"
LABELS = {
    "default": "bucket",
    "sqlite_shm": "sqlite3 shm, same pragmas",
    "sqlite_disk": "sqlite3 disk, same pragmas",
    "sqlite_plain": "sqlite3 disk, defaults",
}


def configure(disk: Path, shm: Path) -> None:
    """Django settings with one database alias per backend measured; the same in the parent and its workers."""
    import django
    from django.conf import settings

    same = {"init_command": SAME_PRAGMAS, "transaction_mode": "IMMEDIATE"}
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "buckethead_django", "benchmarks.bench_orm"],
        DATABASES={
            "default": {"ENGINE": "buckethead_django.db"},
            "sqlite_shm": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(shm / "peer.sqlite3"), "OPTIONS": same},
            "sqlite_disk": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(disk / "peer.sqlite3"),
                "OPTIONS": same,
            },
            "sqlite_plain": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(disk / "plain.sqlite3")},
        },
        BUCKETHEAD={"LOCAL_PATH": str(disk / "bucket"), "LOCAL_DIR": str(shm / "host"), "FLUSH_INTERVAL": 5},
        SECRET_KEY="benchmarks-orm",  # noqa: S106 - a throwaway settings module
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def create_tables() -> None:
    from django.db import connections

    from benchmarks.bench_orm.models import Row

    for alias in LABELS:
        with connections[alias].schema_editor() as editor:
            editor.create_model(Row)


def single_process(n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median microseconds per operation and backend; the backends take turns, ``rounds`` times ``n`` calls each.

    The table holds ``5 * n`` rows (bulk-inserted first), ~10 per tag. Writes
    on the defaults backend (an fsync each) run a tenth as many calls.
    """
    from django.db import transaction
    from django.db.models import F

    from benchmarks.bench_orm.models import Row

    payload = "x" * 100
    rows = 5 * n
    tags = rows // 10
    for alias in LABELS:
        with transaction.atomic(using=alias):
            Row.objects.using(alias).bulk_create(
                [Row(tag=f"t{i % tags}", number=i, payload=payload) for i in range(rows)], batch_size=500
            )
    per_round = max(1, n // rounds)
    slow = max(1, per_round // 10)

    def calls(alias: str, write: bool) -> int:
        return slow if write and alias == "sqlite_plain" else per_round

    operations = {
        "create": (True, lambda o: lambda i: o.create(tag=f"t{i % tags}", number=i, payload=payload)),
        "get by pk": (False, lambda o: lambda i: o.get(pk=i % rows + 1)),
        "filter (indexed, ~10 rows)": (False, lambda o: lambda i: list(o.filter(tag=f"t{i % tags}"))),
        "update by pk": (True, lambda o: lambda i: o.filter(pk=i % rows + 1).update(number=F("number") + 1)),
    }
    results: dict[str, dict[str, float]] = {label: {} for label in LABELS.values()}
    for op, (write, make) in operations.items():
        fns = {alias: (make(Row.objects.using(alias)), calls(alias, write)) for alias in LABELS}
        for alias, us in interleaved(fns, rounds).items():
            results[LABELS[alias]][op] = us
    return results


def worker(alias: str, start_at: float, seconds: float) -> dict:
    """One of the concurrent writers: rows created, transactions, and the errors met."""
    from django.db import OperationalError, transaction

    from benchmarks.bench_orm.models import Row

    objects = Row.objects.using(alias)
    top = objects.order_by("-pk").values_list("pk", flat=True).first() or 1
    rng = random.Random(os.getpid())  # noqa: S311 - which row to update, not a secret
    errors: Counter[str] = Counter()
    created = updated = 0
    time.sleep(max(0.0, start_at - time.time()))
    late = time.time() - start_at
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            objects.create(tag=f"p{os.getpid()}", number=created, payload="y" * 100)
            created += 1
            with transaction.atomic(using=alias):
                row = objects.get(pk=rng.randint(1, top))
                row.number += 1
                row.save(using=alias, update_fields=["number"])
            updated += 1
        except OperationalError as exc:
            errors[str(exc)] += 1
    return {"created": created, "updated": updated, "errors": dict(errors), "late": late}


def run_writers(alias: str, disk: Path, shm: Path, procs: int, seconds: float) -> list[dict]:
    start_at = time.time() + 2.0 + procs  # after every process has set Django up (see "late")
    children = [
        subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                __file__,
                "--worker",
                alias,
                "--start-at",
                str(start_at),
                "--seconds",
                str(seconds),
                "--disk",
                str(disk),
                "--shm",
                str(shm),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(procs)
    ]
    results = []
    for child in children:
        stdout, _ = child.communicate(timeout=seconds + 120)
        if child.returncode != 0:
            raise RuntimeError(f"a writer process failed ({child.returncode}): {stdout[-2000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def concurrent(disk: Path, shm: Path, procs: int, seconds: float, rounds: int = 2) -> dict[str, dict]:
    """``procs`` writer processes per backend; the backends take turns, ``rounds`` times ``seconds / rounds``."""
    aliases = ("default", "sqlite_shm", "sqlite_plain")
    results: dict[str, list[dict]] = {alias: [] for alias in aliases}
    for _ in range(rounds):
        for alias in aliases:
            results[alias] += run_writers(alias, disk, shm, procs, seconds / rounds)
    from benchmarks.bench_orm.models import Row

    out = {}
    for alias, found in results.items():
        errors: Counter[str] = Counter()
        for r in found:
            errors.update(r["errors"])
        out[LABELS[alias]] = {
            "rows/s": sum(r["created"] for r in found) / seconds,
            "transactions/s": sum(r["updated"] for r in found) / seconds,
            "errors": sum(errors.values()),
            "messages": dict(errors),
            "late": max(r["late"] for r in found),
            # Every acknowledged create is there, read back by another process.
            "rows found": Row.objects.using(alias).filter(tag__startswith="p").count(),
            "rows created": sum(r["created"] for r in found),
        }
    return out


def report(single: dict, engines: dict, multi: dict, args: argparse.Namespace) -> None:
    print(f"\nDjango ORM, one process, median us per call ({args.ops} calls in {args.rounds} rounds, the backends "
          f"taking turns; a tenth as many writes on the defaults backend); {MACHINE_NOTE}\n")  # fmt: skip
    labels = list(single)
    ops = list(single[labels[0]])
    rows = [[op, *(single[label][op] for label in labels), *(ratio(single["bucket"][op], single[label][op])
             for label in labels[1:])] for op in ops]  # fmt: skip
    header = ["operation (us)", *labels, *(f"bucket / {label}" for label in labels[1:])]
    print(table(header, rows))
    if engines:
        print(f"\nThe engine alone (engine_child.py, median us of {5 * args.ops} calls; v1 and v2 run in turns, "
              f"{args.repeat} times each, median of the runs)\n")  # fmt: skip
        names = list(engines["v2"])
        cols = list(engines)
        rows = [[n, *(engines[c][n] for c in cols), ratio(engines["v2"][n], engines["v1"][n]) if "v1" in engines
                 else "-"] for n in names]  # fmt: skip
        print(table(["operation (us)", *(f"{c} engine" for c in cols), "v2 / v1"], rows))
    if multi:
        print(f"\n{args.procs} processes writing at once for {args.seconds:g} s (a create, then a read-then-write "
              "transaction, per loop)\n")  # fmt: skip
        base = multi["bucket"]["rows/s"]
        rows = [[label, m["rows/s"], m["transactions/s"], m["errors"], f"{m['rows found']}/{m['rows created']}",
                 ratio(base, m["rows/s"])] for label, m in multi.items()]  # fmt: skip
        print(
            table(["backend", "rows/s", "transactions/s", "errors", "rows read back", "bucket / this (rows/s)"], rows)
        )
        for label, m in multi.items():
            for message, count in m["messages"].items():
                print(f"  {label}: {count} x {message!r}")
        late = max(m["late"] for m in multi.values())
        if late > 0.5:
            print(f"  (a writer process started {late:.1f} s late: the machine is busy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=2000, help="calls per operation and backend, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="how often the backends take turns")
    parser.add_argument("--procs", type=int, default=4, help="concurrent writer processes")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the concurrent writers run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of engine_child.py per version, in turns")
    parser.add_argument("--no-v1", action="store_true", help="skip v1's engine")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--disk", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--shm", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # one of the concurrent writers, started by the parent below
        configure(args.disk, args.shm)
        result = worker(args.worker, args.start_at, args.seconds)
        print(json.dumps(result))
        return

    with private_dir("bench-orm-") as disk, private_dir("bench-orm-", under=SHM) as shm:
        configure(disk, shm)
        create_tables()
        single = single_process(args.ops, args.rounds)
        multi = concurrent(disk, shm, args.procs, args.seconds) if args.procs > 1 else {}
        from buckethead_django import runtime

        runtime.stop()
    with contextlib.ExitStack() as stack:
        v1 = None if args.no_v1 else stack.enter_context(v1_worktree())
        engines = engine_runs(v1, args.ops, args.repeat)
    report(single, engines, multi, args)


def engine_runs(v1: Path | None, ops: int, repeat: int) -> dict[str, dict[str, float]]:
    """engine_child.py on this checkout (and v1's worktree), in turns, ``repeat`` times; the median of each figure."""
    child = str(Path(__file__).with_name("engine_child.py"))
    runs: dict[str, list[dict]] = {"v2": []} if v1 is None else {"v2": [], "v1": []}
    if v1 is not None:
        check_imports_from(v1, [v1])
    for _ in range(repeat):
        with private_dir("bench-orm-v2-", under=SHM) as host:
            runs["v2"].append(
                run_child([child, "--ops", str(ops), "--local-dir", str(host / "host")], pythonpath=[ROOT])
            )
        if v1 is not None:
            found = run_child([child, "--ops", str(ops)], pythonpath=[v1])
            if not Path(found["engine"]).is_relative_to(v1):
                raise RuntimeError(f"v1's run imported {found['engine']}")
            runs["v1"].append(found)
    return {
        version: {name: median([r[name] for r in found]) for name in found[0] if name != "engine"}
        for version, found in runs.items()
    }


if __name__ == "__main__":
    main()
