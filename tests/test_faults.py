"""Faults that must never cost data: lost replies, a fenced writer's leftovers, a refusing writer, a missing bucket.

The engine talks to the moto S3 server over HTTP through a `TcpProxy`, which
can let a request reach the server and lose its reply, as a reset connection
or a timed-out large upload does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from buckethead_django.engine import (
    BucketConfig,
    BucketNotFound,
    BucketSQLite,
    CurrentSnapshotCorrupt,
    History,
    SnapshotConfig,
    WriterFenced,
    read_lease,
)
from buckethead_django.engine.chain import MERGE_FANOUT
from buckethead_django.engine.lease import WriterLease, lease_key
from buckethead_django.engine.lineage import generation_seq
from buckethead_django.engine.objectstore import ObjectStore, iter_objects, open_object_store
from buckethead_django.engine.record import GENERATION

from .conftest import EngineFactory, s3_config
from .moto_server import MotoServer
from .servers import Server, manage, s3_env
from .snapshots import KEY
from .tcp_proxy import TcpProxy

SIGNING_KEY = b"k" * 32
#: The request line of each write a flush (and the lease) makes.
WRITES = {
    "data": rb"PUT /[^ ]*\.chunk0000[ ?]",
    "record": rb"PUT /[^ ]*\.generations/[^ ]*\.json[ ?]",
    "current": rb"PUT /[^ ]*\.current[ ?]",
    "lease": rb"PUT /[^ ]*\.lease[ ?]",
    "delta": rb"PUT /[^ ]*\.d\d{8}[ ?]",
    "merged delta": rb"PUT /[^ ]*\.m\d{8}-\d{8}[ ?]",
}
#: Settings under which a server's flushes are, in turn, a base and two deltas: every kind of write happens.
EVERY_KIND_OF_FLUSH = {"BUCKETHEAD_COMPACT_DELTAS": "2"}
#: A compaction ratio under which every flush is a new base (a generation's own writes are under test).
EVERY_FLUSH_A_BASE = 1e-12


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", moto.port) as running:
        yield running


@pytest.fixture
def proxied_config(moto: MotoServer, proxy: TcpProxy) -> BucketConfig:
    """A new moto bucket, reached through the proxy."""
    return replace(s3_config(moto), endpoint_url=proxy.url)


def objects(store: ObjectStore) -> dict[str, str]:
    return {o.key: o.etag for o in iter_objects(store)}


def generation_objects(store: ObjectStore, name: str) -> list[str]:
    return [k for k in objects(store) if f".generations/{name}." in k]


# -- lost replies -------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket_config", ["s3"], indirect=True)
@pytest.mark.parametrize("write", list(WRITES))
def test_a_lost_reply_to_any_write_is_not_a_takeover(
    write: str, proxy: TcpProxy, proxied_config: BucketConfig, make_engine: EngineFactory
) -> None:
    ratio = SnapshotConfig().compact_ratio if "delta" in write else EVERY_FLUSH_A_BASE
    bh = make_engine(proxied_config, snapshot=SnapshotConfig(min_interval_seconds=0, compact_ratio=ratio)).start()
    bh.kv.set("before", "1")
    bh.force_flush()
    lost = proxy.lose_reply(WRITES[write])
    bh.kv.set("during", "2")
    if write == "lease":
        bh.replicator.renew_lease()  # type: ignore[union-attr]
    else:
        assert bh.force_flush().uploaded
    for n in range(MERGE_FANOUT if write == "merged delta" else 0):  # a merged delta comes with the 16th delta
        bh.kv.set(f"during-{n}", "3")
        assert bh.force_flush().uploaded
    assert lost.hits == 1, "the reply of that write was lost, and the client retried"
    assert bh.fenced is None, "its own landed write is not another writer"
    assert bh.last_error is None
    for i in range(20):
        bh.kv.set(f"after-{i}", str(i))
    assert bh.force_flush().uploaded, "later flushes go on"
    assert bh.lease is not None
    assert bh.lease.same_holder(read_lease(bh.store, KEY)), "and it still holds the lease"
    with make_engine(proxied_config, read_only_reason="checking what the bucket holds") as reader:
        assert reader.kv.get("during") == "2"
        assert [reader.kv.get(f"after-{i}") for i in range(20)] == [str(i) for i in range(20)]


# -- a fenced writer's flush ----------------------------------------------------------------------


def test_a_fenced_writers_flush_is_never_offered_and_the_next_writer_deletes_it(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    paused = make_engine(
        signing_key=SIGNING_KEY, snapshot=SnapshotConfig(min_interval_seconds=0, compact_ratio=EVERY_FLUSH_A_BASE)
    ).start()
    paused.kv.set("v", "first")
    first = paused.force_flush().generation
    store = paused.store
    successors: list[BucketSQLite] = []
    real_put = paused.store.put

    def put(key: str, *args: object, **kwargs: object) -> object:
        if key.endswith(".chunk0000") and not successors:
            # The writer is paused as it begins uploading a flush; another writer takes over meanwhile.
            successor = make_engine(signing_key=SIGNING_KEY).start()
            successor.kv.set("v", "successor")
            successor.force_flush()
            successors.append(successor)
        return real_put(key, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(paused.store, "put", put)
    paused.kv.set("v", "stale")
    with pytest.raises(WriterFenced):
        paused.force_flush()
    (successor,) = successors
    ours = {e.name for e in History(store, KEY).snapshots()}
    (leftover,) = {g.name for g in History(store, KEY).generations()} - ours
    assert len(generation_objects(store, leftover)) == 2, "its data and signed record are in the bucket"

    assert successor.last_upload is not None
    assert ours == {first, successor.last_upload.generation}, "history lists only committed generations"
    assert History(store, KEY).find("previous").name == first
    with pytest.raises(KeyError):
        History(store, KEY).find(leftover)
    seqs = [generation_seq(name) for name in (first, successor.last_upload.generation, leftover)]
    assert len(set(seqs)) == 3, f"no two writers share a sequence number: {seqs}"

    successor.stop()
    damaged = History(store, KEY).current()
    assert damaged is not None
    assert damaged.record is not None
    chunk = damaged.record.chunks[0].key
    store.put(chunk, b"not a database" * 100)
    with pytest.raises(CurrentSnapshotCorrupt) as err:
        make_engine(signing_key=SIGNING_KEY).start()
    assert err.value.restorable == first, "the newest good snapshot offered is a committed one"
    assert leftover not in str(err.value)

    make_engine(signing_key=SIGNING_KEY).recover(first)
    with make_engine(signing_key=SIGNING_KEY) as after:
        assert after.kv.get("v") == "first"
    assert generation_objects(store, leftover) == [], "the next writer proved it uncommitted and deleted it"
    paused.stop()  # fenced: it keeps its database in a local file, which the log names
    saved = re.search(r"is saved in (\S+\.db)", caplog.text)
    assert saved
    Path(saved.group(1)).unlink()


# -- a writer that refuses to start ---------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process of this host that has exited and been reaped."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def lease_of(pid: int, seconds: float = 300) -> WriterLease:
    now = time.time()
    host = os.uname().nodename
    return WriterLease(f"{host}:{pid}", host, pid, now, now, now + seconds, token="crashed")


def test_a_writer_that_refuses_to_start_changes_nothing_not_even_a_stale_lease(make_engine: EngineFactory) -> None:
    with make_engine(signing_key=SIGNING_KEY) as bh:
        bh.kv.set("v", "1")
    store = bh.store
    current = History(store, KEY).current()
    assert current is not None
    assert current.record is not None
    store.put(current.record.chunks[0].key, b"garbage" * 1000)
    store.put(lease_key(KEY), lease_of(dead_pid()).to_json())  # a crashed writer of this host left its lease
    before = objects(store)
    with pytest.raises(CurrentSnapshotCorrupt, match="Nothing in the bucket was changed"):
        make_engine(signing_key=SIGNING_KEY).start()
    assert objects(store) == before, "the refusing writer neither replaced nor deleted the stale lease"


def test_a_killed_writer_that_is_not_reaped_yet_holds_no_lease(make_engine: EngineFactory, store: ObjectStore) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        store.put(lease_key(KEY), lease_of(child.pid).to_json())
        os.kill(child.pid, signal.SIGKILL)
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rpartition(")")[2].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stat.exists(), "the killed process is a zombie: it exists until its parent reaps it"
        with make_engine(lease_wait=0) as bh:
            assert bh.lease is not None
            assert bh.lease.pid == os.getpid(), "the restart took over at once"
    finally:
        child.wait()


# -- a bucket that does not exist ------------------------------------------------------------------


def test_a_missing_bucket_is_named_with_what_to_do(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(s3_config(moto), bucket="bh-no-such-bucket")
    with pytest.raises(BucketNotFound) as err:
        BucketSQLite(config, startup_timeout=600, background_flush=False).start()
    message = str(err.value)
    assert "bucket 'bh-no-such-bucket' does not exist" in message
    assert moto.endpoint_url in message
    assert "Create the bucket" in message
    assert "retrying" not in caplog.text, "a missing bucket is not an outage to wait out"

    status = manage(tmp_path, "buckethead", "status", check=False, **s3_env("bh-no-such-bucket", moto.endpoint_url))
    output = status.stdout + status.stderr
    assert "bucket 'bh-no-such-bucket' does not exist" in output, output
    assert "object '" not in output, output


# -- with real server processes -------------------------------------------------------------------

VISITS = re.compile(r'id="visits">(\d+)<')


def visit(server: Server) -> int:
    """One visit to the example's index page: the counter it shows, acknowledged by a 200."""
    match = VISITS.search(server.get("/"))
    assert match
    return int(match.group(1))


def health(server: Server) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(server.url + "/buckethead/health/", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until_flushed(server: Server, timeout: float = 30) -> dict[str, Any]:
    """Wait until the server's health says every acknowledged write is in the bucket; its health then."""
    deadline = time.monotonic() + timeout
    while True:
        _status, body = health(server)
        if not body.get("pending_changes") or time.monotonic() > deadline:
            assert not body.get("pending_changes"), body
            return body
        time.sleep(0.1)


def test_lost_replies_at_every_write_then_kill_9_lose_no_acknowledged_write(
    tmp_path: Path, moto: MotoServer, proxy: TcpProxy
) -> None:
    bucket = s3_config(moto).bucket
    settings = {
        "BUCKETHEAD_FLUSH_INTERVAL": "0.5",
        "BUCKETHEAD_MIN_FLUSH_INTERVAL": "0",
        "BUCKETHEAD_LEASE_SECONDS": "3",  # renewed every 1.5 s, so the lease's reply is lost too
        "BUCKETHEAD_HEALTH_DETAILS": "public",
        **EVERY_KIND_OF_FLUSH,
    }
    through_proxy = s3_env(bucket, proxy.url, **settings)
    manage(tmp_path, "migrate", **through_proxy)
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4", **through_proxy) as server:
        visit(server)
        # Two deltas to a base: no chain grows long enough for a merged delta (the test above loses its reply).
        for write, pattern in ((w, p) for w, p in WRITES.items() if w != "merged delta"):
            lost = proxy.lose_reply(pattern)
            deadline = time.monotonic() + 30
            while not lost.hits and time.monotonic() < deadline:
                visit(server)
                time.sleep(0.2)
            assert lost.hits, f"the reply to a {write} write was lost"
            status, body = health(server)
            assert status == 200, body
        acknowledged = [visit(server) for _ in range(20)][-1]
        assert wait_until_flushed(server)["status"] == "ok", "no lost reply fenced the writer"
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    new_host = tmp_path / "new-host"  # restores from the bucket: what the killed host shipped is all there is
    with Server("gunicorn", new_host, "--workers", "1", **s3_env(bucket, moto.endpoint_url, **settings)) as after:
        assert visit(after) == acknowledged + 1, "every acknowledged visit survived the kill"


def test_a_writer_paused_mid_flush_leaves_nothing_restore_would_offer(
    tmp_path: Path, moto: MotoServer, proxy: TcpProxy
) -> None:
    config = s3_config(moto)
    bucket = config.bucket
    settings = {
        "BUCKETHEAD_LEASE_SECONDS": "2",
        "BUCKETHEAD_LEASE_WAIT": "20",
        "BUCKETHEAD_FLUSH_INTERVAL": "0.5",
        "BUCKETHEAD_MIN_FLUSH_INTERVAL": "0",
        "BUCKETHEAD_HEALTH_DETAILS": "public",
        "BUCKETHEAD_COMPACT_RATIO": str(EVERY_FLUSH_A_BASE),  # the pause falls in a base's upload
    }
    direct = s3_env(bucket, moto.endpoint_url, **settings)
    manage(tmp_path, "migrate", **direct)
    # Three hosts: the one that is paused, its successor, and one that starts on the damaged bucket at the end.
    paused_host, successor_host, last_host = tmp_path / "paused", tmp_path / "successor", tmp_path / "last"
    paused = Server("runserver", paused_host, "--noreload", **s3_env(bucket, proxy.url, **settings)).wait_ready()
    try:
        [visit(paused) for _ in range(3)]
        wait_until_flushed(paused)
        # The next flush stops its writer with SIGSTOP as its data upload passes: paused in the middle of it.
        stopped = proxy.on_request(WRITES["data"], lambda: os.kill(paused.proc.pid, signal.SIGSTOP))
        visit(paused)
        deadline = time.monotonic() + 20
        while not stopped.hits and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stopped.hits
        time.sleep(2.5)  # past its lease
        with Server("runserver", successor_host, "--noreload", **direct) as successor:
            [visit(successor) for _ in range(3)]
            wait_until_flushed(successor)
            paused.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 20
            while health(paused)[0] != 503 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert health(paused)[1]["status"] == "failing", "the resumed writer's commit was refused"
            successor.stop(signal.SIGTERM)
        paused.stop(signal.SIGTERM)
    finally:
        if paused.proc.poll() is None:
            paused.proc.send_signal(signal.SIGCONT)
            paused.stop(signal.SIGKILL)

    store = open_object_store(config)
    by_paused = [r for r in History(store, KEY).records(GENERATION) if f":{paused.proc.pid}/" in r.writer]
    leftover = max(by_paused, key=lambda r: r.seq).name  # the flush it finished after resuming
    # Its signed record is in the bucket (its data too, unless the successor's start found it without a record
    # yet, and deleted it as a crashed flush's).
    assert store.head(f"{KEY}.generations/{leftover}.json") is not None, "its flush left its signed record"

    history = json.loads(manage(last_host, "buckethead", "history", "--json", **direct).stdout)
    listed = [entry["name"] for entry in history]
    assert leftover not in listed, "history never lists a generation that was not committed"
    previous = manage(last_host, "buckethead", "restore", "previous", "--to-file", str(tmp_path / "p.db"), **direct)
    assert leftover not in previous.stdout + previous.stderr

    current = History(store, KEY).current()
    assert current is not None
    assert current.record is not None
    store.put(current.record.chunks[0].key, b"damaged" * 1000)
    refused = Server("runserver", tmp_path / "new-host", "--noreload", **direct)
    try:
        refused.proc.wait(timeout=120)
    finally:
        refused.stop(signal.SIGKILL)  # it has exited already; else it must not outlive the test
    assert "buckethead restore" in refused.log(), refused.log()
    assert leftover not in refused.log(), "the refusal never recommends it"
