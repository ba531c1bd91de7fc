"""Why the host database's pragmas are what they are: each candidate measured on RAM and on disk, in one run.

    .venv/bin/python benchmarks/pragmas.py [--rows 20000] [--reads 50000]

For each directory (``/dev/shm`` if present, and the system's temporary
directory) and each setting, it times small committed writes (one row per
transaction, as a web request makes them) and random point reads of a ~40 MB
table, several rounds in a shuffled order, and prints the median
microseconds per operation (the median of the rounds) with the ratio to
the setting the engine uses (``journal_mode=WAL``, ``synchronous=NORMAL``,
``mmap_size`` 1 GiB, the default page cache).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from buckethead_django.engine.database import MMAP_BYTES, SHM_ROOT  # noqa: E402

CHOSEN = "WAL, NORMAL, mmap"
SETTINGS: dict[str, list[str]] = {
    CHOSEN: ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", f"PRAGMA mmap_size={MMAP_BYTES}"],
    "WAL, NORMAL, no mmap": ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA mmap_size=0"],
    "WAL, OFF, mmap": ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=OFF", f"PRAGMA mmap_size={MMAP_BYTES}"],
    "WAL, FULL, mmap": ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", f"PRAGMA mmap_size={MMAP_BYTES}"],
    "WAL, NORMAL, mmap, 64 MB cache": [
        "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", f"PRAGMA mmap_size={MMAP_BYTES}",
        "PRAGMA cache_size=-65536",
    ],
    "rollback journal (DELETE), FULL": ["PRAGMA journal_mode=DELETE", "PRAGMA synchronous=FULL"],
}  # fmt: skip


def median_us(samples: list[float]) -> float:
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def measure(directory: Path, pragmas: list[str], rows: int, reads: int) -> tuple[float, float]:
    """Median µs of a one-row committed write, and of a point read by primary key."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        conn = sqlite3.connect(Path(tmp) / "bench.sqlite3", isolation_level=None)
        for pragma in pragmas:
            conn.execute(pragma)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (body) VALUES (randomblob(2000))", [()] * rows)
        conn.execute("COMMIT")
        writes = timed(lambda: conn.execute("INSERT INTO t (body) VALUES (randomblob(200))"), 2000)
        ids = [random.randint(1, rows) for _ in range(reads)]  # noqa: S311 - a benchmark's sample
        position = iter(ids)
        read = timed(lambda: conn.execute("SELECT body FROM t WHERE id = ?", (next(position),)).fetchone(), reads)
        conn.close()
    return median_us(writes), median_us(read)


def timed(operation: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--reads", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=5, help="Rounds over every setting, in a new order each time.")
    options = parser.parse_args()
    places = [("RAM (/dev/shm)", SHM_ROOT)] if SHM_ROOT.is_dir() else []
    places.append((f"disk ({tempfile.gettempdir()})", Path(tempfile.gettempdir())))
    for label, directory in places:
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
        for _ in range(options.rounds):  # interleaved, so that a busy moment or a warm cache favours none
            for name in random.sample(list(SETTINGS), len(SETTINGS)):
                rounds[name].append(measure(directory, SETTINGS[name], options.rows, options.reads))
        results = {
            name: (statistics.median(w for w, _ in samples), statistics.median(r for _, r in samples))
            for name, samples in rounds.items()
        }
        base_write, base_read = results[CHOSEN]
        print(f"\n{label}: median µs per operation, and the ratio to the engine's choice ({CHOSEN})")
        print(f"{'setting':34} {'write':>9} {'ratio':>6} {'read':>8} {'ratio':>6}")
        for name, (write, read) in results.items():
            print(f"{name:34} {write:9.1f} {write / base_write:6.2f} {read:8.2f} {read / base_read:6.2f}")


if __name__ == "__main__":
    main()
