"""Real server processes of the example project, for lifecycle tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .moto_server import CREDENTIALS, free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"
BIN = Path(sys.executable).parent
WRITER_LINE = re.compile(r"BucketHead started as writer in pid (\d+)")
STOPPED_LINE = re.compile(r"BucketHead stopped in pid (\d+) after its final flush")


def example_env(state: Path, **extra: str) -> dict[str, str]:
    """The environment of an example-project process whose state lives under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_", "PYTEST_"))}
    env.update(
        BUCKETHEAD_LOCAL_PATH=str(state / "bucket"),
        DJANGO_DB_PATH=str(state / "db.sqlite3"),
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


class Server:
    """A server process started in its own session, with its output kept in a log file."""

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

    def writer_pids(self) -> list[int]:
        return [int(pid) for pid in WRITER_LINE.findall(self.log())]

    def stopped_pids(self) -> list[int]:
        return [int(pid) for pid in STOPPED_LINE.findall(self.log())]

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read().decode()
