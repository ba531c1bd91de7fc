"""Real server processes of the example project, for lifecycle tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

from .moto_server import CREDENTIALS, free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"
BIN = Path(sys.executable).parent
#: A process attached to its host's database: as the host's replicator, a member, a read-only view, or a process of
#: a read replica's host.
STARTED_LINE = re.compile(r"BucketHead started as (replicator|member|read-only|replica) in pid (\d+)")
#: The host's replicator made its final flush.
STOPPED_LINE = re.compile(r"BucketHead stopped in pid (\d+) after its final flush")
#: A member left the host's database; the replicator ships.
LEFT_LINE = re.compile(r"BucketHead left the host's database in pid (\d+)")


def example_env(state: Path, **extra: str) -> dict[str, str]:
    """The environment of an example-project process whose state lives under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_", "PYTEST_"))}
    env.update(
        BUCKETHEAD_LOCAL_PATH=str(state / "bucket"),
        BUCKETHEAD_LOCAL_DIR=str(state / "host"),  # this test's host: never another test's database
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(EXAMPLE),
    )
    env.update(extra)
    return env


def s3_env(bucket: str, endpoint_url: str, **extra: str) -> dict[str, str]:
    """Environment variables that point an example-project process at ``bucket`` on ``endpoint_url`` (moto)."""
    return {
        "BUCKETHEAD_BACKEND": "s3",
        "BUCKETHEAD_BUCKET": bucket,
        "BUCKETHEAD_ENDPOINT_URL": endpoint_url,
        "BUCKETHEAD_REGION": "us-east-1",
        "BUCKETHEAD_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "BUCKETHEAD_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        **extra,
    }


def manage(state: Path, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py <args>`` of the example project to completion."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), *args],
        env=example_env(state, **extra),
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def kill_leftover_servers() -> None:
    """Kill (with their process groups) the servers a test started and left running, say after it failed."""
    for server in list(Server.running):
        if server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
        Server.running.discard(server)


class Server:
    """A server process started in its own session, with its output kept in a log file."""

    #: Every server started and not yet known to have exited (see `kill_leftover_servers`).
    running: ClassVar[set[Server]] = set()

    def __init__(self, kind: str, state: Path, *extra_args: str, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state / f"{kind}-{self.port}.log"
        argv = {
            "runserver": [sys.executable, str(EXAMPLE / "manage.py"), "runserver", f"127.0.0.1:{self.port}"],
            "gunicorn": [str(BIN / "gunicorn"), "example_site.wsgi", "--bind", f"127.0.0.1:{self.port}"],
            "uvicorn": [str(BIN / "uvicorn"), "example_site.asgi:application", "--port", str(self.port)],
        }[kind]
        state.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*argv, *extra_args],
            env=example_env(state, **env),
            cwd=EXAMPLE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        Server.running.add(self)

    def __enter__(self) -> Server:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()

    def wait_ready(self, timeout: float = 60) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/not-a-page", timeout=2).close()
                return self
            except urllib.error.HTTPError:
                return self  # it answered: the server is up
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"{self.proc.args[0]} did not come up:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, *, group: bool = False, timeout: float = 30) -> int:
        """Send ``sig`` (to the process, or its whole process group like a terminal's Ctrl-C) and wait."""
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"no exit {timeout}s after signal {sig}:\n{self.log()}") from None
        finally:
            self._log.close()
        time.sleep(0.3)  # let reparented children (autoreloader) finish writing the log
        return code

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def started(self) -> list[tuple[str, int]]:
        """``(role, pid)`` of every engine the server's processes started, in order."""
        return [(role, int(pid)) for role, pid in STARTED_LINE.findall(self.log())]

    def started_pids(self, role: str | None = None) -> list[int]:
        """The pids that started an engine (as ``role`` only, if given)."""
        return [pid for started_as, pid in self.started() if role in (None, started_as)]

    def wait_started(self, count: int, timeout: float = 30) -> list[tuple[str, int]]:
        """`started`, once ``count`` engines have started (a server's workers boot one after another)."""
        deadline = time.monotonic() + timeout
        while len(self.started()) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        started = self.started()
        assert len(started) >= count, f"{len(started)} engines started, not {count}:\n{self.log()}"
        return started

    def stopped_pids(self) -> list[int]:
        """The pids that made the host's final flush as its replicator."""
        return [int(pid) for pid in STOPPED_LINE.findall(self.log())]

    def left_pids(self) -> list[int]:
        """The pids that left the host's database as members."""
        return [int(pid) for pid in LEFT_LINE.findall(self.log())]

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read().decode()
