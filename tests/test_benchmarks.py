"""Every benchmark command the docs give runs, at a small size, and prints its comparison.

The figures themselves are not asserted (tests never time anything): what is
checked is that each script still works end to end against its peers in the
same run, so that the documented commands keep working.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .postgres_server import postgres_bin

ROOT = Path(__file__).resolve().parents[1]

#: The docs' commands (docs/performance.md), with small sizes, and a line each prints once it has compared.
COMMANDS = {
    "orm": (["--ops", "200", "--rounds", "1", "--procs", "2", "--seconds", "1", "--repeat", "1", "--no-v1"],
            "database is locked"),
    "cache": (["--ops", "200", "--rounds", "1", "--repeat", "1", "--no-v1"], "8 threads 90/10"),
    "flush": (["--size-mb", "2", "--seconds", "2", "--workers", "2", "--no-v1"], "PRAGMA mmap_size = 0"),
    "startup": (["--size-mb", "2", "--workers", "2", "--runs", "1"], "a bare download"),
    "engine": (["--size-mb", "2"], "Python dict"),
    "pragmas": (["--rows", "500", "--reads", "500", "--rounds", "1"], "rollback journal"),
    "snapshots": (["--quick", "--only", "ours"], "A simulated 0.25 h of steady writes"),
    "replica": (["--quick", "--only", "ours"], "ours: catch-up / fresh restore"),
    "export": (["--quick"], "rows, dumpdata + loaddata"),
}  # fmt: skip


def missing_server(script: str) -> str | None:
    """Why the script's peers cannot run here: the servers it starts, from Debian's packages."""
    if script in ("cache", "export") and shutil.which("redis-server") is None:
        return f"benchmarks/{script}.py compares with redis-server, which is not installed"
    if script == "export" and postgres_bin() is None:
        return "benchmarks/export.py exports into PostgreSQL, which is not installed"
    return None


@pytest.mark.parametrize("script", list(COMMANDS))
def test_the_documented_benchmark_runs_at_a_small_size(script: str) -> None:
    reason = missing_server(script)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so every benchmark must run)")
        pytest.skip(reason)
    args, compared = COMMANDS[script]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"benchmarks/{script}.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert compared in done.stdout, f"benchmarks/{script}.py printed no comparison:\n{done.stdout[-3000:]}"
