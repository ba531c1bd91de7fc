"""Durability at shutdown, end to end: real processes, a real S3 API (moto over HTTP), real signals.

What a process acknowledged must be in the bucket afterwards:

- a writer killed with SIGKILL right after ``force_flush()`` returned loses none of what that flush covered,
  even when the kill lands in the middle of later writes and flushes;
- a server stopped with SIGTERM (gunicorn, uvicorn, runserver) or SIGINT (runserver) while requests are in
  flight has every answered write in its final snapshot. The periodic flush is an hour away, so only the
  final flush can have saved them.

Everything is checked from fresh processes through public interfaces only: ``manage.py buckethead kv ...``,
Django's cache API and ``get_buckethead()`` in a new process, HTTP responses of the example project. What the
bucket holds is read by processes on a new host (a ``LOCAL_DIR`` of their own), which restore it: a process on
the server's host would read the host's database, which has every write whether it was shipped or not.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from buckethead_django.engine import BucketConfig, WriterLease, open_object_store, read_lease

from .conftest import s3_config
from .moto_server import MotoServer
from .servers import EXAMPLE, Server, example_env, manage, s3_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

#: Seconds of write load before a server is signalled: enough for hundreds of writes, short enough for a test.
LOAD_SECONDS = 1.5
#: Seconds between the second halves of the slow requests, once the signal is sent (see VisitLoad).
SLOW_GAP = 0.02
#: The periodic flush never fires within a test: whatever reaches the bucket came from an explicit or final flush.
NO_PERIODIC_FLUSH = {"BUCKETHEAD_FLUSH_INTERVAL": "3600"}


def bucket_env(moto: MotoServer) -> dict[str, str]:
    """BUCKETHEAD_* variables for a new, empty bucket on the moto server."""
    return s3_env(s3_config(moto).bucket, moto.endpoint_url, **NO_PERIODIC_FLUSH)


def new_host(state: Path, name: str) -> dict[str, str]:
    """The environment of a process on a new host: a ``LOCAL_DIR`` of its own, so it restores from the bucket."""
    return {"BUCKETHEAD_LOCAL_DIR": str(state / name)}


def shell_output(state: Path, code: str, **env: str) -> dict:
    """Run ``code`` with ``manage.py shell -c`` in a new process; it prints one line ``RESULT <json>``."""
    result = manage(state, "shell", "-c", code, check=False, **env)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, f"{result.stdout}\n{result.stderr}"
    return json.loads(lines[0].removeprefix("RESULT "))


# -- 1. SIGKILL right after force_flush() -------------------------------------------------------------------

#: The writer: batches of KV values and cache entries, each followed by ``force_flush()`` and then an
#: ``ACKED <batch>`` line, printed only once the flush has returned. ``MODE`` decides what follows the first
#: acknowledgement: sleeping (nothing more happens), or writing and flushing on, so that the kill lands in
#: the middle of writes and uploads. A few MB of incompressible rows make every upload take a moment.
WRITER = """
import os, time
from django.core.cache import cache
from buckethead_django import get_buckethead

MODE, PER_BATCH = {mode!r}, {per_batch}
bh = get_buckethead()
assert bh.role == "replicator", "this process must be the host's replicator"
con = bh.connect()
con.execute("CREATE TABLE ballast (b BLOB)")
con.executemany("INSERT INTO ballast VALUES (?)", [(os.urandom(1 << 20),) for _ in range(4)])
con.commit()
batch = 0
while True:
    for i in range(PER_BATCH):
        bh.kv.set(f"acked/{{batch:04d}}/{{i:03d}}", f"value {{batch}}.{{i}} " + "x" * (i % 50))
    cache.set_many({{f"acked-{{batch}}-{{i}}": (batch, i) for i in range(PER_BATCH // 4)}}, timeout=None)
    con.execute("UPDATE ballast SET b = ? WHERE rowid = 1", (os.urandom(1 << 20),))
    con.commit()
    bh.force_flush()
    print(f"ACKED {{batch}}", flush=True)
    batch += 1
    if MODE == "sleeps":
        time.sleep(3600)
"""

READ_ACKED = """
import json
from django.core.cache import cache
from buckethead_django import get_buckethead
bh = get_buckethead()
keys = bh.kv.keys("acked/")
values = {k: bh.kv.get(k) for k in keys}
names = [f"acked-{b}-{i}" for b in range(1000) for i in range(50)]
entries = {k: list(v) for k, v in cache.get_many(names).items()}
restored = bh.restored_from.name if bh.restored_from is not None else None
print("RESULT " + json.dumps({"role": bh.role, "restored": restored, "kv": values, "cache": entries}))
"""


class ScriptProcess:
    """A ``manage.py shell -c`` process whose stdout lines are collected as they come."""

    def __init__(self, state: Path, code: str, **env: str) -> None:
        self.stderr_path = state / "writer.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "manage.py"), "shell", "-c", code],
            env=example_env(state, **env),
            cwd=EXAMPLE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float = 60) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"no output within {timeout}s:\n{self.stderr()}") from None
        if line is None:
            raise AssertionError(f"exited with {self.proc.wait()} before its acknowledgement:\n{self.stderr()}")
        return line

    def __enter__(self) -> ScriptProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a lost machine would; safe to call again."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        self._stderr.close()

    def remaining_lines(self) -> list[str]:
        """What it printed before it died: after kill() the queue ends with None."""
        lines = []
        while (line := self.lines.get(timeout=10)) is not None:
            lines.append(line)
        return lines

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")


def acked_batches(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.fullmatch(r"ACKED (\d+)", line))]


@pytest.mark.parametrize("then", ["sleeps", "keeps-writing"])
def test_what_force_flush_acknowledged_survives_kill_9(tmp_path: Path, moto: MotoServer, then: str) -> None:
    env = bucket_env(moto)
    per_batch = 200
    with ScriptProcess(
        tmp_path, WRITER.format(mode=then, per_batch=per_batch), BUCKETHEAD_AUTOSTART="true", **env
    ) as writer:
        seen: list[str] = []
        while len(acked_batches(seen)) < (1 if then == "sleeps" else 3):
            seen.append(writer.next_line())
        writer.kill()  # at once: in "keeps-writing" mode, in the middle of the next batch or its upload
    assert writer.proc.returncode == -signal.SIGKILL
    acked = acked_batches(seen + writer.remaining_lines())  # every ACKED line was printed after its flush returned
    assert acked == list(range(len(acked))), seen
    assert acked, f"{seen}\n{writer.stderr()}"
    if then == "sleeps":
        assert acked == [0]
    expected_kv = {
        f"acked/{batch:04d}/{i:03d}": f"value {batch}.{i} " + "x" * (i % 50)
        for batch in acked
        for i in range(per_batch)
    }
    expected_cache = {f"acked-{batch}-{i}": [batch, i] for batch in acked for i in range(per_batch // 4)}

    # A process on a new host, through the management command: every acknowledged key is in the bucket. The dead
    # writer's lease holds nothing (its process is gone), so it is taken at once.
    kv_list = ["buckethead", "kv", "list", "--prefix", "acked/", "--limit", "100000", "--json"]
    listed = manage(tmp_path, *kv_list, **env, **new_host(tmp_path, "list-host"))
    keys = {entry["key"] for entry in json.loads(listed.stdout)["keys"]}
    assert set(expected_kv) <= keys, f"{len(set(expected_kv) - keys)} acknowledged keys lost"
    last = f"acked/{acked[-1]:04d}/{per_batch - 1:03d}"
    got = manage(tmp_path, "buckethead", "kv", "get", last, "--json", **env, **new_host(tmp_path, "get-host"))
    assert json.loads(got.stdout)["value"] == expected_kv[last]

    # A process on a new host, through get_buckethead() and Django's cache: the values themselves.
    read = shell_output(tmp_path, READ_ACKED, **env, **new_host(tmp_path, "read-host"))
    assert read["restored"] is not None, "it restored the bucket's current generation"
    assert expected_kv.items() <= read["kv"].items()
    assert expected_cache.items() <= read["cache"].items()

    # The next process on the dead writer's host takes its role over and keeps the host's database: no download.
    takeover = shell_output(tmp_path, READ_ACKED, BUCKETHEAD_AUTOSTART="true", **env)
    assert (takeover["role"], takeover["restored"]) == ("replicator", None)
    assert expected_kv.items() <= takeover["kv"].items()
    assert expected_cache.items() <= takeover["cache"].items()


# -- 2. and 3. A server stopped by a signal while it serves writes ------------------------------------------


class VisitLoad:
    """Clients requesting the index page; each answer is a new value of the cached visit counter.

    An answer is an acknowledged write: the counter was incremented before the page was rendered. Every
    answer is a different value of one counter, and the bucket must hold at least the highest once the
    server has stopped. Errors are counted, not acknowledged: a server may refuse writes while it stops.

    ``clients`` threads keep requesting. Besides them, ``slow`` clients send the first half of a request just
    before the signal, so that the server has requests in flight whatever its timing, and the second half one
    after another, ``SLOW_GAP`` seconds apart, once the signal has been sent: requests a server had accepted
    when it was told to stop, finishing while it shuts down.
    """

    def __init__(self, server: Server, clients: int, slow: int) -> None:
        self.server = server
        self.values: list[int] = []
        self.answers_after_signal = 0
        self.failures = 0
        self.server_errors: list[str] = []
        self.signalled = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = [threading.Thread(target=self._keep_requesting, daemon=True) for _ in range(clients)]
        self._slow = [threading.Thread(target=self._slow_request, args=(i,), daemon=True) for i in range(slow)]
        self._half_sent = threading.Semaphore(0)

    def __enter__(self) -> VisitLoad:
        for thread in self._clients:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.signalled.set()
        for thread in self._clients + self._slow:
            if thread.ident is not None:  # started
                thread.join(timeout=30)

    @property
    def highest(self) -> int:
        return max(self.values, default=0)

    def wait_for_answers(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.values) < count:
            assert time.monotonic() < deadline, f"only {len(self.values)} answers in {timeout}s"
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> int:
        """Start the slow requests, send ``sig`` while they are in flight, and wait for the server to exit."""
        for thread in self._slow:
            thread.start()
        for _ in self._slow:
            self._half_sent.acquire(timeout=30)
        time.sleep(0.2)  # let the server accept them and start reading
        self.signalled.set()
        return self.server.stop(sig)

    def _keep_requesting(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.server.url + "/", timeout=30) as response:
                    self._answered(200, response.read())
            except urllib.error.HTTPError as exc:
                self._answered(exc.code, b"")
            except OSError:  # refused, reset or cut short while the server stops: not acknowledged
                self._failed()
                time.sleep(0.01)

    def _slow_request(self, index: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                self._half_sent.release()
                self.signalled.wait()
                time.sleep(index * SLOW_GAP)
                sock.sendall(b"Connection: close\r\n\r\n")
                received = b""
                while chunk := sock.recv(1 << 16):
                    received += chunk
        except OSError:
            self._half_sent.release()
            self._failed()
            return
        status = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
        if status is None:
            self._failed()  # closed without an answer
        else:
            self._answered(int(status.group(1)), received)

    def _answered(self, status: int, page: bytes) -> None:
        match = re.search(rb'<strong id="visits">(\d+)</strong>', page)
        with self._lock:
            if status != 200:
                self.server_errors.append(f"HTTP {status}")
            elif match is None:
                self.failures += 1  # cut short: not acknowledged
            else:
                self.values.append(int(match.group(1)))
                if self.signalled.is_set():
                    self.answers_after_signal += 1

    def _failed(self) -> None:
        with self._lock:
            self.failures += 1


#: A few MB of incompressible rows, so that each snapshot upload takes a moment: long enough for whatever a
#: server still does during its final flush to show in the result.
BALLAST = """
import os
from buckethead_django import get_buckethead
con = get_buckethead().connect()
con.execute("CREATE TABLE ballast (b BLOB)")
con.executemany("INSERT INTO ballast VALUES (?)", [(os.urandom(1 << 20),) for _ in range(8)])
con.commit()
con.close()
print("RESULT {}")
"""

READ_VISITS = """
import json
from django.core.cache import cache
print("RESULT " + json.dumps({"visits": cache.get("visits")}))
"""

SERVERS = [
    pytest.param("gunicorn", ("--workers", "1"), signal.SIGTERM, id="gunicorn-sync-sigterm"),
    pytest.param("gunicorn", ("--workers", "1", "--threads", "8"), signal.SIGTERM, id="gunicorn-gthread-sigterm"),
    pytest.param("uvicorn", (), signal.SIGTERM, id="uvicorn-sigterm"),
    pytest.param("runserver", ("--noreload",), signal.SIGINT, id="runserver-noreload-sigint"),
    pytest.param("runserver", ("--noreload",), signal.SIGTERM, id="runserver-noreload-sigterm"),
]


@pytest.mark.parametrize(("kind", "args", "sig"), SERVERS)
def test_every_answered_write_survives_a_graceful_stop_under_load(
    tmp_path: Path, moto: MotoServer, kind: str, args: tuple[str, ...], sig: signal.Signals
) -> None:
    env = bucket_env(moto)
    manage(tmp_path, "migrate", "--noinput", **env)  # the demo's Document table, in the host's database
    shell_output(tmp_path, BALLAST, **env)  # shipped at its exit: the host's last process
    server = Server(kind, tmp_path, *args, **env).wait_ready()
    try:
        with VisitLoad(server, clients=8, slow=16) as load:
            load.wait_for_answers(20)
            time.sleep(LOAD_SECONDS)  # keep writing for a while, then stop the server in the middle of it
            code = load.signal(sig)
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)
    answers = len(load.values)
    events = "\n".join(line for line in server.log().splitlines() if '"GET / HTTP' not in line)  # no access log
    report = (
        f"{kind} exited with {code}; {answers} answers ({load.answers_after_signal} after the signal), highest "
        f"{load.highest}; {len(load.server_errors)} errors; {load.failures} failed connections\n{events[-8000:]}"
    )
    assert answers >= 20, report
    assert code != -signal.SIGKILL, report

    problems = []
    if (lease := lease_left(env)) is not None:  # before anything else takes the lease
        problems.append(f"the writer lease was not released: {lease}")
    stored = shell_output(tmp_path, READ_VISITS, **env, **new_host(tmp_path, "check-host"))["visits"]
    if stored is None or stored < load.highest:
        problems.append(f"answered up to {load.highest}, the bucket has {stored}")
    if duplicates := sorted(v for v, n in Counter(load.values).items() if n > 1):
        problems.append(f"the counter answered {duplicates[:10]} more than once")
    if [role for role, _ in server.started()] != ["replicator"]:
        problems.append(f"the serving process started {server.started()}, not one replicator")
    if server.stopped_pids() != server.started_pids():
        problems.append(f"the final flush was made by {server.stopped_pids()}, not by the replicator")
    assert not problems, "; ".join(problems) + "\n" + report


def lease_left(env: dict[str, str]) -> WriterLease | None:
    """The writer lease in the bucket ``env`` names, if a writer left one behind."""
    config = BucketConfig(
        bucket=env["BUCKETHEAD_BUCKET"],
        endpoint_url=env["BUCKETHEAD_ENDPOINT_URL"],
        region=env["BUCKETHEAD_REGION"],
        access_key_id=env["BUCKETHEAD_ACCESS_KEY_ID"],
        secret_access_key=env["BUCKETHEAD_SECRET_ACCESS_KEY"],
    )
    return read_lease(open_object_store(config), config.key)
