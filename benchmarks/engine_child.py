"""KV and plain SQL through one engine, in a process of its own: run on this checkout and on v1's worktree alike.

    PYTHONPATH=<checkout> python benchmarks/engine_child.py --ops 2000 --local-dir /dev/shm/x

Not run by hand: `orm.py` runs it with ``PYTHONPATH`` on v1's worktree (the
in-memory engine, no Django ORM) and on this checkout (the host database), and
compares. Prints one JSON line: the median microseconds of one call, over 5 x ``--ops`` calls. Imports
nothing from the ``benchmarks`` package, so whichever ``buckethead_django``
is first on the path is the one measured.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
from pathlib import Path

from timing import per_call  # benchmarks/timing.py, beside this script

import buckethead_django
from buckethead_django.engine import BucketConfig, BucketSQLite, SnapshotConfig


def per_op(fn: object, n: int) -> float:
    """Median microseconds of one call, over ``5 * n`` calls."""
    return statistics.median(per_call(fn, 5 * n))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--local-dir", type=Path, help="the host database's directory (v2 only)")
    args = parser.parse_args()
    n = args.ops
    with tempfile.TemporaryDirectory() as tmp:
        kwargs: dict[str, object] = {"background_flush": False}
        if "local_dir" in inspect.signature(BucketSQLite).parameters:
            kwargs["local_dir"] = args.local_dir or Path(tmp) / "host"
        engine = BucketSQLite(
            BucketConfig.local(Path(tmp) / "bucket"), SnapshotConfig(min_interval_seconds=0), **kwargs
        ).start()
        try:
            value = "x" * 100
            out = {
                "engine": buckethead_django.__file__,
                "kv.set (100 B)": per_op(lambda i: engine.kv.set(f"k{i}", value), n),
                "kv.get (100 B)": per_op(lambda i: engine.kv.get(f"k{i}"), n),
                "kv.get (miss)": per_op(lambda i: engine.kv.get(f"missing{i}"), n),
            }
            conn = engine.connect(autocommit=True)
            conn.execute("CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, tag TEXT, number INTEGER, payload TEXT)")
            conn.execute("CREATE INDEX bench_rows_tag ON bench_rows (tag)")
            rows = 5 * n
            out["SQL insert (autocommit)"] = per_op(
                lambda i: conn.execute(
                    "INSERT INTO bench_rows (tag, number, payload) VALUES (?, ?, ?)", (f"t{i % (rows // 10)}", i, value)
                ),
                n,
            )
            out["SQL select by pk"] = per_op(
                lambda i: conn.execute("SELECT * FROM bench_rows WHERE id = ?", (i % rows + 1,)).fetchone(), n
            )
            out["SQL select by index"] = per_op(
                lambda i: conn.execute("SELECT * FROM bench_rows WHERE tag = ?", (f"t{i % (rows // 10)}",)).fetchall(),
                n,
            )
            out["SQL update by pk"] = per_op(
                lambda i: conn.execute("UPDATE bench_rows SET number = number + 1 WHERE id = ?", (i % rows + 1,)), n
            )
            conn.close()
        finally:
            engine.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
