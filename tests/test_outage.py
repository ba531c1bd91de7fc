"""Bucket outages, with real processes over real HTTP: the S3 endpoint goes down and comes back.

The example project runs under gunicorn against the moto S3 server, reached
through a `TcpProxy` that can go down (refusing new connections and resetting
open ones) and come back on the same port. Reads of the bucket itself go to
moto directly, through a `manage.py shell` reader process.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .moto_server import MotoServer
from .servers import Server, manage, s3_env
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

HEALTH = "/buckethead/health/"
OUTAGE_SECONDS = 30
VISITS = re.compile(r'<strong id="visits">(\d+)</strong>')
# Fail fast against a dead endpoint: every flush attempt ends in about a second, not minutes.
QUICK_FAILURES = {
    "BUCKETHEAD_CONNECT_TIMEOUT": "1",
    "BUCKETHEAD_READ_TIMEOUT": "2",
    "BUCKETHEAD_MAX_ATTEMPTS": "2",
}


# -- helpers -----------------------------------------------------------------------------------


def new_bucket(moto: MotoServer) -> str:
    name = f"bh-outage-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(name)
    return name


def bucket_visits(state: Path, moto: MotoServer, bucket: str) -> int | None:
    """The visit counter in the bucket's latest snapshot, read by a reader process straight from moto."""
    script = "from django.core.cache import cache; print(repr(cache.get('visits')))"
    result = manage(state, "shell", "-c", script, **s3_env(bucket, moto.endpoint_url))
    last = result.stdout.strip().splitlines()[-1]
    return None if last == "None" else int(last)


def seed_visits(state: Path, moto: MotoServer, bucket: str, value: int) -> None:
    """Write a snapshot with ``visits == value`` into the bucket, as a one-off writer (no server running)."""
    script = f"from django.core.cache import cache; cache.set('visits', {value}, None); print('seeded')"
    result = manage(state, "shell", "-c", script, **s3_env(bucket, moto.endpoint_url, BUCKETHEAD_AUTOSTART="true"))
    assert "seeded" in result.stdout, result.stderr


def bucket_objects(moto: MotoServer, bucket: str) -> dict[str, tuple[str, int, Any]]:
    """Every object in the bucket: key -> (etag, size, last modified)."""
    listing = moto.client().list_objects_v2(Bucket=bucket)
    return {o["Key"]: (o["ETag"], o["Size"], o["LastModified"]) for o in listing.get("Contents", [])}


def health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + HEALTH, timeout=15) as response:
        assert response.status == 200
        return json.loads(response.read())


@dataclass
class Response:
    phase: str  # what the endpoint was doing when the response arrived: "up", "down" or "back"
    path: str
    status: int | None  # None: no HTTP response at all
    visits: int | None = None
    error: str | None = None


@dataclass
class Traffic:
    """Clients that request the counting index page in a loop, and remember every answer."""

    url: str
    clients: int = 2
    phase: str = "up"
    responses: list[Response] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)

    def __enter__(self) -> Traffic:
        for n in range(self.clients):
            thread = threading.Thread(target=self._run, name=f"traffic-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.responses.append(fetch(self.url, "/", lambda: self.phase))
            time.sleep(0.02)

    def acknowledged(self, phase: str) -> list[int]:
        return [r.visits for r in self.responses if r.phase == phase and r.visits is not None]

    @property
    def failures(self) -> list[Response]:
        return [r for r in self.responses if r.status != 200 or r.visits is None]


def fetch(base_url: str, path: str, phase: Callable[[], str]) -> Response:
    """GET ``path``; the phase is read when the answer (or the failure) arrives."""
    try:
        with urllib.request.urlopen(base_url + path, timeout=15) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        return Response(phase(), path, exc.code, error=exc.read().decode(errors="replace")[:500])
    except OSError as exc:
        return Response(phase(), path, None, error=repr(exc))
    match = VISITS.search(body)
    return Response(phase(), path, status, visits=int(match.group(1)) if match else None)


def drain(sock: socket.socket) -> None:
    """Read until the peer closes (returns) or resets the connection (raises)."""
    while sock.recv(65536):
        pass


def poll_health(
    server: Server, until: Callable[[dict[str, Any]], bool], timeout: float, every: float = 0.5
) -> Iterator[dict[str, Any]]:
    """Yield health bodies until ``until(body)`` holds (the last one yielded) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        body = health(server)
        yield body
        if until(body) or time.monotonic() >= deadline:
            return
        time.sleep(every)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the moto server, listening."""
    with TcpProxy("127.0.0.1", moto.port) as running:
        yield running


# -- the proxy itself --------------------------------------------------------------------------


def test_the_proxy_refuses_and_resets_while_down_and_comes_back_on_its_port(proxy: TcpProxy) -> None:
    with urllib.request.urlopen(proxy.url + "/moto-api/", timeout=5) as response:
        assert response.status == 200
    port = proxy.port
    accepted = proxy.accepted
    with socket.create_connection(("127.0.0.1", port), timeout=5) as held:  # open when the endpoint goes down
        held.sendall(b"GET /moto-api/ HTTP/1.1\r\nHost: moto\r\n\r\n")
        assert held.recv(12) == b"HTTP/1.1 200", "a keep-alive connection, answered and still open"
        assert proxy.accepted == accepted + 1
        with proxy.down():
            assert not proxy.running
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            with pytest.raises(ConnectionResetError):
                drain(held)
    assert proxy.running
    assert proxy.port == port
    with urllib.request.urlopen(proxy.url + "/moto-api/", timeout=5) as response:
        assert response.status == 200


# -- the endpoint goes down while the site writes ---------------------------------------------------


@pytest.mark.slow
def test_site_keeps_serving_through_a_30_second_bucket_outage_and_catches_up_by_itself(
    tmp_path: Path, moto: MotoServer, proxy: TcpProxy
) -> None:
    """A 30-second outage of the S3 endpoint under continuous writes (about 40 s in all).

    Every request succeeds from memory; health says ``degraded`` with the
    bucket copy's age while the endpoint is down; once it is back, the
    server's own retries (not its final flush) bring the bucket up to date.
    """
    bucket = new_bucket(moto)
    manage(tmp_path, "migrate", "--noinput")  # the index page lists Documents from the Django database
    env = s3_env(
        bucket,
        proxy.url,
        BUCKETHEAD_FLUSH_INTERVAL="1",
        BUCKETHEAD_MIN_FLUSH_INTERVAL="0.1",
        BUCKETHEAD_HEALTH_DETAILS="public",  # the test reads last_error and pending_changes, anonymously
        **QUICK_FAILURES,
    )
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4", **env) as server:
        with Traffic(server.url) as traffic:
            # Up: the writes reach the bucket, through the proxy.
            bodies = list(poll_health(server, lambda b: b["last_upload_age_seconds"] is not None, timeout=30))
            assert bodies[-1]["status"] == "ok", bodies
            assert bodies[-1]["last_upload_age_seconds"] is not None, f"nothing uploaded: {bodies}\n{server.log()}"
            assert proxy.accepted > 0, "the server reaches the bucket through the proxy"

            # Down for 30 seconds: the site keeps answering from memory, health says why it is degraded.
            proxy.stop()
            traffic.phase = "down"
            down_started = time.monotonic()
            during: list[dict[str, Any]] = []
            while time.monotonic() - down_started < OUTAGE_SECONDS:
                during.append(health(server))
                time.sleep(1)
            in_bucket_while_down = bucket_visits(tmp_path, moto, bucket)
            traffic.phase = "back"
            proxy.start()

            # Back: the server's own retries upload what was acknowledged while it was down.
            after = list(poll_health(server, lambda b: b["status"] == "ok", timeout=45))
            in_bucket_after = bucket_visits(tmp_path, moto, bucket)  # the server is still running
        code = server.stop(signal.SIGTERM)  # after the last acknowledged write
    log = server.log()
    acked_down = traffic.acknowledged("down")
    assert traffic.failures == [], f"requests failed during the outage: {traffic.failures[:5]}\n{log[-4000:]}"
    assert acked_down, "writes were acknowledged while the endpoint was down"

    degraded = [b for b in during if b["status"] == "degraded"]
    assert degraded, f"health never said degraded while the bucket was unreachable: {during}"
    first_degraded = during.index(degraded[0])
    assert all(b["status"] == "degraded" for b in during[first_degraded:]), (
        f"health went back to ok while the endpoint was still down: {during}"
    )
    for body in degraded:
        assert body["last_error"], body
        assert body["pending_changes"] is True, body
        assert body["last_upload_age_seconds"] is not None, "the age of the last good snapshot is reported"
    assert degraded[-1]["last_upload_age_seconds"] > degraded[0]["last_upload_age_seconds"], (
        "the bucket's copy grows older while nothing can be uploaded"
    )
    assert in_bucket_while_down is not None
    assert in_bucket_while_down < max(acked_down), "the writes acknowledged during the outage were only in memory"

    assert after[-1]["status"] == "ok", f"health did not recover once the endpoint was back: {after}\n{log[-4000:]}"
    assert after[-1]["last_error"] is None
    assert in_bucket_after is not None
    assert in_bucket_after >= max(acked_down), "the server's retries brought the bucket up to date while it ran"

    assert code == 0, log[-4000:]
    assert bucket_visits(tmp_path, moto, bucket) == max(traffic.acknowledged("back") + acked_down), (
        "the final flush at SIGTERM wrote the last acknowledged count"
    )


# -- the endpoint is down when a writer starts -----------------------------------------------------

STARTUP_TIMEOUT = 5
COULD_NOT_REACH = re.compile(r"could not (?:be )?(?:reach|connect)|unreachable|cannot reach|can't reach", re.IGNORECASE)


def test_a_writer_that_cannot_reach_the_bucket_fails_clearly_and_changes_nothing(
    tmp_path: Path, moto: MotoServer, proxy: TcpProxy
) -> None:
    bucket = new_bucket(moto)
    seed_visits(tmp_path, moto, bucket, 41)
    before = bucket_objects(moto, bucket)
    env = s3_env(bucket, proxy.url, BUCKETHEAD_STARTUP_TIMEOUT=str(STARTUP_TIMEOUT), **QUICK_FAILURES)

    with proxy.down():
        server = Server("runserver", tmp_path, "--noreload", **env)
        answer: Response | None = None
        try:
            code: int | None = server.proc.wait(timeout=STARTUP_TIMEOUT + 60)
        except subprocess.TimeoutExpired:  # still running: then it must at least refuse to serve
            code = None
            answer = fetch(server.url, "/", lambda: "down")
            server.stop(signal.SIGKILL)
        else:
            server.stop()  # already exited: this only closes its log
    log = server.log()
    if answer is not None:
        assert answer.status != 200, f"the writer serves without the bucket's data: {answer}\n{log}"
    else:
        assert code != 0, log
    assert "BucketHead started as" not in log, log
    assert bucket in log, f"the error names the bucket:\n{log}"
    assert f"127.0.0.1:{proxy.port}" in log, f"the error names the endpoint:\n{log}"
    assert COULD_NOT_REACH.search(log), f"the error says the bucket could not be reached:\n{log}"
    assert bucket_objects(moto, bucket) == before, "nothing in the bucket was changed"
    assert bucket_visits(tmp_path, moto, bucket) == 41


def test_a_writer_waits_for_the_bucket_at_startup_and_restores_it_once_reachable(
    tmp_path: Path, moto: MotoServer, proxy: TcpProxy
) -> None:
    """Within STARTUP_TIMEOUT, a writer keeps trying, and starts from the bucket's data, not empty."""
    bucket = new_bucket(moto)
    manage(tmp_path, "migrate", "--noinput")
    seed_visits(tmp_path, moto, bucket, 41)
    env = s3_env(bucket, proxy.url, BUCKETHEAD_STARTUP_TIMEOUT="30", **QUICK_FAILURES)

    proxy.stop()
    server = Server("gunicorn", tmp_path, "--workers", "1", "--threads", "2", **env)
    try:
        time.sleep(3)  # the worker boots and finds the endpoint down
        proxy.start()
        with server:
            assert fetch(server.url, "/", lambda: "back").visits == 42, "the count carried on from the bucket"
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert bucket_visits(tmp_path, moto, bucket) == 42
