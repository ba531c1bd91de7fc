"""One writer per bucket, with real server processes on a moto bucket over HTTP."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import s3_config
from .moto_server import MotoServer
from .servers import Server, manage, s3_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

VISITS = re.compile(r"id=\"visits\">(\d+)<")


def bucket_env(moto: MotoServer, **extra: str) -> dict[str, str]:
    """Environment variables that point an example-project process at a new bucket on the moto server."""
    return s3_env(s3_config(moto).bucket, moto.endpoint_url, **extra)


def visit(server: Server) -> int:
    """One visit to the example's index page; the counter it shows (acknowledged by a 200)."""
    page = server.get("/")
    match = VISITS.search(page)
    assert match, page
    return int(match.group(1))


def health(server: Server) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.url + "/buckethead/health/", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_second_gunicorn_master_is_refused_and_the_first_keeps_its_data(tmp_path: Path, moto: MotoServer) -> None:
    env = bucket_env(moto, BUCKETHEAD_LEASE_WAIT="1")
    manage(tmp_path, "migrate", **env)
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4", **env) as first:
        acknowledged = [visit(first) for _ in range(5)]
        second = Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4", **env)
        code = second.proc.wait(timeout=90)
        second.stop()  # already exited: this only closes its log
        log = second.log()
        assert code != 0, "the second master gives up"
        assert "held by another writer" in log, log
        assert "gunicorn --workers 1 --threads 8" in log, "the refusal says what to do"
        assert "started as writer" not in log
        acknowledged.append(visit(first))
        first.stop(signal.SIGTERM)
    with Server("gunicorn", tmp_path, "--workers", "1", **env) as third:
        assert visit(third) == acknowledged[-1] + 1, "every visit the first server acknowledged is in the bucket"


def test_a_paused_writer_cannot_overwrite_its_successor(tmp_path: Path, moto: MotoServer) -> None:
    env = bucket_env(
        moto,
        BUCKETHEAD_LEASE_SECONDS="2",
        BUCKETHEAD_LEASE_WAIT="20",
        BUCKETHEAD_FLUSH_INTERVAL="0.5",
        BUCKETHEAD_MIN_FLUSH_INTERVAL="0",
        BUCKETHEAD_HEALTH_DETAILS="public",  # the test reads pending_changes and the fence's reason, anonymously
    )
    manage(tmp_path, "migrate", **env)
    paused = Server("runserver", tmp_path, "--noreload", **env).wait_ready()
    try:
        before_pause = [visit(paused) for _ in range(3)][-1]
        deadline = time.monotonic() + 20
        while health(paused)[1].get("pending_changes") and time.monotonic() < deadline:
            time.sleep(0.1)
        paused.proc.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # past the lease's expiry
        with Server("runserver", tmp_path, "--noreload", **env) as successor:
            assert visit(successor) == before_pause + 1, "the successor starts from the paused writer's last flush"
            successor_visits = [visit(successor) for _ in range(3)][-1]

            paused.proc.send_signal(signal.SIGCONT)
            stale = [visit(paused) for _ in range(10)][-1]
            assert stale == before_pause + 10, "the resumed writer keeps serving from memory"
            deadline = time.monotonic() + 20
            while health(paused)[0] != 503 and time.monotonic() < deadline:
                time.sleep(0.1)
            status, body = health(paused)
            assert status == 503, body
            assert body["status"] == "failing"
            assert "taken over" in (body.get("last_error") or body.get("error") or ""), body
            successor_visits = visit(successor)
            assert health(successor)[1]["status"] == "ok"
            successor.stop(signal.SIGTERM)
        paused.stop(signal.SIGTERM)
    finally:
        if paused.proc.poll() is None:
            paused.proc.send_signal(signal.SIGCONT)
            paused.stop(signal.SIGKILL)
    assert "taken over" in paused.log(), "the fenced writer says so in its log"
    assert "is saved in" in paused.log(), "and keeps its unsaved database in a local file"
    with Server("runserver", tmp_path, "--noreload", **env) as after:
        assert visit(after) == successor_visits + 1, "the bucket holds the successor's data, not the stale writes"
