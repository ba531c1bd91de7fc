"""A real PostgreSQL server from Debian's package, on a free port of 127.0.0.1, for tests and benchmarks.

Its data directory is a temporary directory of its own, removed when it
stops. ``initdb`` and ``postgres`` refuse to run as root, so as root they run
as the ``postgres`` OS user (which Debian's package creates), with the data
directory handed over to it. Durability is switched off (``fsync``,
``synchronous_commit``, ``full_page_writes``): the data is thrown away after
the run, and the tests measure nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .moto_server import free_port

#: Where Debian's postgresql package puts its programs: one directory per major version.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The OS user the server runs as when the tests run as root.
OS_USER = "postgres"
#: The database superuser ``initdb`` creates; the server trusts connections from this machine only.
SUPERUSER = "postgres"


def postgres_bin() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` and ``postgres``."""
    found = [
        Path(d)
        for d in Path("/").glob(BIN_GLOB.lstrip("/"))
        if (Path(d) / "initdb").exists() and (Path(d) / "postgres").exists()
    ]
    found.sort(key=lambda d: [int(n) for n in re.findall(r"\d+", d.parent.name)] or [0])
    return found[-1] if found else None


class PostgresServer:
    """``initdb`` a fresh cluster, start ``postgres`` on it, create databases, and stop it (removing its data)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.host = "127.0.0.1"
        # Not under pytest's tmp_path: its parents are private to root, and the server may run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="bh-postgres-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log_path = self.root / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", OS_USER, "--", *argv]

    def start(self, timeout: float = 60) -> PostgresServer:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, OS_USER)
            shutil.chown(self.sockets, OS_USER)
        subprocess.run(
            self._as_server_user(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-N",
                 "-E", "UTF8", "--locale=C"]
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self._as_server_user(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", self.host,
                 "-k", str(self.sockets), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50"]
            ),
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not come up:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser; its output (tuples only, unaligned)."""
        done = subprocess.run(
            [str(self.bindir / "psql"), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", database,
             "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settings(self, name: str) -> dict[str, Any]:
        """A Django ``DATABASES`` entry for database ``name`` of this server."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": SUPERUSER,
            "HOST": self.host,
            "PORT": str(self.port),
        }

    def env(self, name: str, prefix: str = "EXPORT_PG_") -> dict[str, str]:
        """The same as environment variables, for a settings module of a child process to read."""
        return {f"{prefix}{k}": v for k, v in self.settings(name).items() if k != "ENGINE"}

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # postgres's "fast" shutdown (clients still connected are let go), to the whole group: runuser does
            # not pass signals on.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.root, ignore_errors=True)
