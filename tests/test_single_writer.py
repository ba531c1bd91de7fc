"""One writer host per bucket, with real server processes on a moto bucket over HTTP.

A second server on the same host (the same ``LOCAL_DIR``) joins the host's
database and serves; one on another host waits ``LEASE_WAIT`` for the lease,
then is refused (or serves read-only); a host that lost the lease while it
was paused is fenced, and its stale copy is set aside at its next start.
"""

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


def another_host(state: Path, name: str) -> dict[str, str]:
    """The environment of a process on another host: a ``LOCAL_DIR`` of its own."""
    return {"BUCKETHEAD_LOCAL_DIR": str(state / name)}


def test_a_second_gunicorn_master_on_the_host_serves_the_same_data(tmp_path: Path, moto: MotoServer) -> None:
    env = bucket_env(moto)
    manage(tmp_path, "migrate", **env)
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4", **env) as first:
        acknowledged = [visit(first) for _ in range(3)]
        with Server("gunicorn", tmp_path, "--workers", "2", **env) as second:
            acknowledged += [visit(second) for _ in range(4)]
            acknowledged += [visit(first) for _ in range(2)]
            assert acknowledged == list(range(acknowledged[0], acknowledged[0] + 9)), "one database, one counter"
            roles = [role for role, _ in second.wait_started(2)]
            assert roles == ["member", "member"], "the first master's worker stays the replicator"
            second.stop(signal.SIGTERM)
        assert sorted(second.left_pids()) == sorted(second.started_pids()), second.log()
        acknowledged.append(visit(first))
        assert acknowledged[-1] == acknowledged[-2] + 1, "the first master keeps serving"
        first.stop(signal.SIGTERM)
    assert first.stopped_pids() == first.started_pids("replicator"), first.log()
    with Server("gunicorn", tmp_path, "--workers", "1", **env, **another_host(tmp_path, "new-host")) as third:
        assert visit(third) == acknowledged[-1] + 1, "every visit either master acknowledged is in the bucket"


def test_a_gunicorn_master_on_another_host_is_refused_and_the_first_keeps_its_data(
    tmp_path: Path, moto: MotoServer
) -> None:
    env = bucket_env(moto, BUCKETHEAD_LEASE_WAIT="1")
    manage(tmp_path, "migrate", **env)
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4", **env) as first:
        (replicator,) = first.started_pids("replicator")
        acknowledged = [visit(first) for _ in range(5)]
        second = Server("gunicorn", tmp_path, "--workers", "1", **env, **another_host(tmp_path, "second-host"))
        code = second.proc.wait(timeout=90)
        second.stop()  # already exited: this only closes its log
        log = second.log()
        assert code != 0, "the second master gives up"
        assert "held by another writer" in log, log
        assert f":{replicator} " in log, "the refusal names the first host's replicator"
        assert "LEASE_WAIT" in log, "the refusal says what to do"
        assert "BucketHead started" not in log
        acknowledged.append(visit(first))
        first.stop(signal.SIGTERM)
    with Server("gunicorn", tmp_path, "--workers", "1", **env, **another_host(tmp_path, "third-host")) as third:
        assert visit(third) == acknowledged[-1] + 1, "every visit the first server acknowledged is in the bucket"


def test_a_gunicorn_master_on_another_host_can_serve_read_only(tmp_path: Path, moto: MotoServer) -> None:
    env = bucket_env(
        moto, BUCKETHEAD_LEASE_WAIT="1", BUCKETHEAD_HEALTH_DETAILS="public", BUCKETHEAD_FLUSH_INTERVAL="0.5"
    )
    manage(tmp_path, "migrate", **env)
    with Server("gunicorn", tmp_path, "--workers", "1", **env) as first:
        visit(first)
        deadline = time.monotonic() + 20
        while health(first)[1]["pending_changes"] and time.monotonic() < deadline:
            time.sleep(0.1)  # the periodic flush ships the visit
        status, body = health(first)
        assert (status, body["role"], body["pending_changes"]) == (200, "replicator", False), body
        shipped = body["current_snapshot"]
        reader_env = {**env, "BUCKETHEAD_LEASE_CONFLICT": "read-only", **another_host(tmp_path, "reader-host")}
        with Server("gunicorn", tmp_path, "--workers", "2", **reader_env) as reader:
            workers = reader.wait_started(2)  # they wait for the lease one after another
            assert [role for role, _ in workers] == ["read-only", "read-only"], reader.log()
            status, body = health(reader)
            assert (status, body["status"], body["role"], body["read_only"]) == (200, "ok", "read-only", True)
            assert "held by another writer" in body["read_only_reason"]
            assert body["current_snapshot"] == shipped, "it serves the latest snapshot of the bucket"
            with pytest.raises(urllib.error.HTTPError) as refused:
                reader.get("/")  # the visit counter is a write
            assert refused.value.code == 500
            assert "read-only on this host" in reader.log()
            reader.stop(signal.SIGTERM)
        assert visit(first) == 2, "the first host's data is its own: the read-only host wrote nothing"
        first.stop(signal.SIGTERM)


def test_a_paused_writer_host_cannot_overwrite_its_successor(tmp_path: Path, moto: MotoServer) -> None:
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
        elsewhere = another_host(tmp_path, "successor-host")
        with Server("runserver", tmp_path, "--noreload", **env, **elsewhere) as successor:
            assert visit(successor) == before_pause + 1, "the successor starts from the paused writer's last flush"
            successor_visits = [visit(successor) for _ in range(3)][-1]

            paused.proc.send_signal(signal.SIGCONT)
            stale = [visit(paused) for _ in range(10)][-1]
            assert stale == before_pause + 10, "the resumed writer keeps serving from its database"
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
    with Server("runserver", tmp_path, "--noreload", **env) as after:  # on the paused writer's host
        assert visit(after) == successor_visits + 1, "the bucket holds the successor's data, not the stale writes"
        status, body = health(after)
        assert (status, body["status"]) == (200, "degraded"), "the host's stale copy needs an operator's look"
        (copy,) = body["set_aside"]
        assert "holds changes never shipped" in copy["reason"]
        assert Path(copy["path"]).parent == tmp_path / "host" / "set-aside"
    assert "set this host's database aside" in after.log()
