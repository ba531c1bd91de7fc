"""Helpers shared by the benchmark scripts: statistics, tables, child processes, v1, redis, servers, memory.

Nothing here asserts a time: the scripts print figures next to peers measured
in the same run, and their ratios.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The last commit of the in-memory engine (v1), measured next to the host database (v2).
V1_COMMIT = "367957a"
#: The Django project the server benchmarks run: the example project with a few bench views (benchmarks/bench_site).
SITE = Path(__file__).resolve().parent / "bench_site"
SHM = Path("/dev/shm")  # noqa: S108 - private directories are made below it and removed afterwards
MACHINE_NOTE = (
    f"{os.cpu_count()} CPUs, shared with other work: figures are medians over many operations; "
    "compare the ratios, not the absolute numbers"
)


# -- statistics and tables ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(ours: float, peer: float) -> str:
    if not peer or math.isnan(ours) or math.isnan(peer):
        return "-"
    return f"{ours / peer:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, right-aligned numbers, as the scripts print it (and docs/performance.md quotes it)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- child processes ----------------------------------------------------------------------------------


def run_child(argv: Sequence[str], *, pythonpath: Sequence[Path] = (), env: dict[str, str] | None = None,
              timeout: float = 600) -> dict:  # fmt: skip
    """Run ``python argv...`` with ``pythonpath`` first on its path; return the JSON object its last line prints.

    It runs in the temporary directory, so that this checkout (the current directory) is not on its path.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_"))}
    child_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    child_env.update(env or {})
    done = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        [sys.executable, *argv],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def private_dir(prefix: str, *, under: Path | None = None) -> Iterator[Path]:
    """A temporary directory (under ``under``, e.g. /dev/shm), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=under))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def v1_worktree() -> Iterator[Path]:
    """A git worktree of v1 (`V1_COMMIT`, the in-memory engine) in a temporary directory, removed afterwards."""
    with private_dir("buckethead-v1-") as tmp:
        path = tmp / "v1"
        subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), V1_COMMIT],  # noqa: S607
            check=True,
        )
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)  # noqa: S603, S607
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)  # noqa: S603, S607


def check_imports_from(root: Path, pythonpath: Sequence[Path]) -> None:
    """Fail unless a child with ``pythonpath`` imports buckethead_django from ``root`` (not the editable install)."""
    code = "import buckethead_django, json; print(json.dumps({'file': buckethead_django.__file__}))"
    found = run_child(["-c", code], pythonpath=pythonpath)["file"]
    if not Path(found).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the child imported buckethead_django from {found}, not from {root}")


# -- redis ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free port of 127.0.0.1, no persistence, stopped afterwards; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: `apt-get install -y redis-server`")
    port = free_port()
    with private_dir("bench-redis-") as tmp:
        proc = subprocess.Popen(  # noqa: S603
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp), "--daemonize", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# -- memory --------------------------------------------------------------------------------------------

MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def memory_kib(pid: int) -> dict[str, int]:
    """The resident-memory lines of /proc/<pid>/status, in KiB (empty if the process is gone)."""
    found: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in MEMORY_FIELDS:
            found[name] = int(rest.split()[0])
    return found


# -- a Django site in a server process ---------------------------------------------------------------


def site_env(code_root: Path, state: Path, **extra: str) -> dict[str, str]:
    """The environment of a bench-site process of ``code_root`` (this checkout or v1's), its state under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_", "PYTEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="bench_settings",
        DJANGO_DB_PATH=str(state / "django.sqlite3"),  # v1's example keeps Django's tables in a plain SQLite file
        BENCH_EVENTS=str(state / "events.jsonl"),
        BUCKETHEAD_LOCAL_PATH=str(state / "bucket"),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(SITE), str(code_root / "example_project"), str(code_root)]),
    )
    env.update(extra)
    return env


def read_events(state: Path) -> list[dict]:
    """The flushes the site's replicator reported (bench_app), oldest first."""
    path = state / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class SiteServer:
    """gunicorn serving the bench site of ``code_root``, in its own session, its output in a log file."""

    def __init__(self, code_root: Path, state: Path, *gunicorn_args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        state.mkdir(parents=True, exist_ok=True)
        self.log_path = state / f"gunicorn-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(  # noqa: S603
            [str(Path(sys.executable).with_name("gunicorn")), "example_site.wsgi", "--bind",
             f"127.0.0.1:{self.port}", "--graceful-timeout", "60", "--timeout", "120", "--no-control-socket",
             *gunicorn_args],
            env=site_env(code_root, state, **env), cwd=code_root / "example_project",
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, path: str = "/bench/pid/", timeout: float = 180) -> float:
        """Wait for a 200 on ``path``; return the seconds since the server was started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return time.perf_counter() - self.started_at
            except (OSError, urllib.error.HTTPError):
                if self.proc.poll() is not None:
                    break
            time.sleep(0.01)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"gunicorn did not come up:\n{self.log()[-5000:]}")

    def workers(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def __enter__(self) -> SiteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def seed_site(code_root: Path, state: Path, size_mb: int, **env: str) -> dict:
    """Fill the site's bucket with a ``size_mb`` MB database (a table of random blobs), as its own process."""
    return run_child(
        [str(SITE / "seed.py"), str(size_mb)],
        pythonpath=[SITE, code_root / "example_project", code_root],
        env={**site_env(code_root, state, **env), "BUCKETHEAD_AUTOSTART": "true"},
    )
