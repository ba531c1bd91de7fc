"""A read replica host under real servers: gunicorn on a writer host and on a replica host, a moto bucket over HTTP.

The writer counts visits (a cache entry) on every page view; the replica
shows the count. Under load, every count the writer acknowledged must show
on the replica within two flush intervals; writes on the replica are
refused or sent to the writer; the follower killed with SIGKILL is replaced
by another worker, and the replica goes on following.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .moto_server import MotoServer
from .servers import Server, manage
from .test_single_writer import VISITS, another_host, bucket_env, health, visit

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FLUSH_INTERVAL = 1.0
POLL_INTERVAL = 0.1  # well inside the bound: a write shows within a flush interval plus a poll


def shown(server: Server) -> int:
    match = VISITS.search(server.get("/"))
    assert match
    return int(match.group(1))


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Load:
    """Visits to the writer as fast as they are answered, and looks at the replica, in two threads.

    ``acknowledged`` holds ``(count, when the writer answered)``; ``seen``
    holds ``(count shown, when the replica answered)``.
    """

    def __init__(self, writer: Server, replica: Server) -> None:
        self.writer, self.replica = writer, replica
        self.acknowledged: list[tuple[int, float]] = []
        self.seen: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write), threading.Thread(target=self._look)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _write(self) -> None:
        while not self._stop.is_set():
            count = visit(self.writer)
            self.acknowledged.append((count, time.monotonic()))
            time.sleep(0.02)

    def _look(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append((shown(self.replica), time.monotonic()))
            except (urllib.error.URLError, OSError) as exc:  # a worker killed on purpose: the next one answers
                self.errors.append(str(exc))
            time.sleep(0.02)

    def delays(self, until: float) -> list[float]:
        """For each count acknowledged before ``until``: seconds until the replica first showed it (or more)."""
        delays = []
        for count, at in self.acknowledged:
            if at > until:
                break
            first = next((when for number, when in self.seen if number >= count and when >= at), None)
            assert first is not None, f"visit {count}, acknowledged at {at:.2f}, never showed on the replica"
            delays.append(first - at)
        return delays


def test_a_replica_host_follows_the_writer_under_load_and_refuses_writes(tmp_path: Path, moto: MotoServer) -> None:
    env = bucket_env(
        moto,
        BUCKETHEAD_FLUSH_INTERVAL=str(FLUSH_INTERVAL),
        BUCKETHEAD_MIN_FLUSH_INTERVAL="0",
        BUCKETHEAD_HEALTH_DETAILS="public",
    )
    manage(tmp_path, "migrate", **env)
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4", **env) as writer:
        visit(writer)
        wait_for(lambda: not health(writer)[1]["pending_changes"])
        replica_env = {
            **env,
            **another_host(tmp_path, "replica-host"),
            "BUCKETHEAD_ROLE": "replica",
            "BUCKETHEAD_REPLICA_POLL_INTERVAL": str(POLL_INTERVAL),
            "BUCKETHEAD_WRITER_URL": writer.url,
        }
        with Server("gunicorn", tmp_path, "--workers", "3", **replica_env) as replica:
            roles = replica.wait_started(3)
            assert [role for role, _ in roles] == ["replica"] * 3, replica.log()
            status, body = health(replica)
            assert (status, body["status"], body["role"], body["read_only"]) == (200, "ok", "replica", True), body
            follower = body["replicator"]["pid"]
            assert follower in [pid for _, pid in roles]

            with Load(writer, replica) as load:
                time.sleep(6)
                until = time.monotonic() - 2 * FLUSH_INTERVAL
            delays = load.delays(until)
            assert len(delays) > 50, "the writer was under load"
            median = sorted(delays)[len(delays) // 2]
            assert max(delays) <= 2 * FLUSH_INTERVAL, f"slowest: {max(delays):.2f}s (median {median:.2f}s)"
            assert load.errors == []

            # A write on the replica goes to the writer: a 307 that keeps the method and the body.
            request = urllib.request.Request(replica.url + "/?from=replica", data=b"title=x", method="POST")
            opener = urllib.request.build_opener(NoRedirect())
            with pytest.raises(urllib.error.HTTPError) as redirected:
                opener.open(request, timeout=10)
            assert redirected.value.code == 307
            assert redirected.value.headers["Location"] == writer.url + "/?from=replica"
            # In a process of the replica host (a shell, a cron job), ORM writes raise ReadOnlyError.
            shell = manage(
                tmp_path,
                "shell",
                "-c",
                "from django.contrib.auth.models import User\n"
                "try:\n    User.objects.create(username='nope')\n"
                "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
                "print(User.objects.count())",
                **replica_env,
            )
            assert "ReadOnlyError BucketHead is a read replica" in shell.stdout, shell.stdout + shell.stderr
            assert shell.stdout.strip().endswith("0")

            # The follower dies; another worker of the replica host takes the role over and goes on following.
            os.kill(follower, signal.SIGKILL)
            with Load(writer, replica) as load:
                time.sleep(5)
                until = time.monotonic() - 2 * FLUSH_INTERVAL
            assert load.delays(until), "the replica followed on after its follower was killed"
            status, body = health(replica)
            assert status == 200, body
            assert body["replicator"]["pid"] != follower
            assert body["replica"]["lag_seconds"] < 5 * POLL_INTERVAL + 1, body
            replica.stop(signal.SIGTERM)
        final = visit(writer)
        writer.stop(signal.SIGTERM)
    assert final == max(count for count, _ in load.acknowledged) + 1, "the replica wrote nothing to the bucket"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
