"""The example project, run as a real ``manage.py runserver`` process and stopped with real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .moto_server import free_port

MANAGE = Path(__file__).resolve().parents[1] / "example_project" / "manage.py"


@contextmanager
def runserver(bucket: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "BUCKETHEAD_LOCAL_PATH": str(bucket), "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.Popen(
        [sys.executable, str(MANAGE), "runserver", f"127.0.0.1:{port}", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "up", timeout=2).close()  # noqa: S310 - loopback test server
            except urllib.error.HTTPError:
                break  # answered (404): the server is up, and the counter page was not touched
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"runserver did not come up:\n{out}") from None
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def visits(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        page = response.read().decode()
    match = re.search(r"visited <strong>(\d+)</strong>", page)
    assert match, page
    return int(match.group(1))


def test_the_counter_survives_a_restart(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    with runserver(bucket, "--noreload") as url:
        first = visits(url)
        assert visits(url) == first + 1
    assert (bucket / "bucketsqlite" / "snap.db").exists(), "SIGINT made a final flush"
    with runserver(bucket, "--noreload") as url:
        assert visits(url) == first + 2


def test_under_the_autoreloader_only_the_serving_child_writes(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    with runserver(bucket) as url:
        count = visits(url)
    with runserver(bucket) as url:
        assert visits(url) == count + 1
