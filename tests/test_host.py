"""Several processes of one host on one database: one replicator, takeover, the last one out, a new host.

Each `BucketSQLite` here plays one process: engines given the same
``local_dir`` are processes of one host (their locks are taken on separate
file descriptions, so they exclude each other as processes do), and an
engine with a directory of its own is a process on another host.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from buckethead_django.engine import (
    BucketConfig,
    BucketSQLite,
    LocalDirError,
    ReadOnlyError,
    SnapshotConfig,
    WriterConflict,
    read_lease,
)
from buckethead_django.engine.lease import WriterLease, lease_key
from buckethead_django.engine.objectstore import iter_objects, open_object_store

from .conftest import EngineFactory
from .recording_store import RecordingStore
from .snapshots import KEY, snapshot_bytes

QUICK = SnapshotConfig(interval_seconds=3600, min_interval_seconds=0)


def host_engine(make_engine: EngineFactory, host: Path, **kwargs: object) -> BucketSQLite:
    """A process of the host whose database is in ``host``, with its background threads (requests, takeover)."""
    kwargs.setdefault("snapshot", QUICK)
    return make_engine(local_dir=host, background_flush=True, **kwargs)


def wait_for(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert condition(), "timed out"  # type: ignore[operator]


def test_one_process_replicates_and_every_process_reads_and_writes(make_engine: EngineFactory, tmp_path: Path) -> None:
    first = host_engine(make_engine, tmp_path / "host").start()
    second = host_engine(make_engine, tmp_path / "host").start()
    assert (first.role, second.role) == ("replicator", "member")
    info = second.replicator_info()
    assert info is not None
    assert info.ready
    second.kv.set("from", "the member")
    assert first.kv.get("from") == "the member", "one database for the whole host"
    assert second.dirty
    result = second.force_flush()
    assert result.uploaded, "a member's flush is made by the replicator, and waited for"
    assert not first.dirty
    assert not second.dirty
    with make_engine() as elsewhere:  # a new host restores what was shipped
        assert elsewhere.kv.get("from") == "the member"


def test_when_the_replicator_leaves_a_member_takes_over_with_nothing_lost(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    replicator = host_engine(make_engine, tmp_path / "host").start()
    member = host_engine(make_engine, tmp_path / "host").start()
    replicator.kv.set("k", "0")
    lease = read_lease(replicator.store, KEY)
    replicator.stop()  # another process of the host is still there: the role is handed over
    assert read_lease(member.store, KEY) == lease, "the lease stays the host's while one of its processes runs"
    wait_for(lambda: member.role == "replicator")
    for i in range(1, 6):
        member.kv.set("k", str(i))
    member.stop()  # the last process of the host
    assert read_lease(member.store, KEY) is None, "the last process out releases the lease"
    with make_engine() as new_host:
        assert new_host.kv.get("k") == "5"


def test_the_last_process_out_ships_what_another_wrote_after_the_replicators_flush(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    replicator = host_engine(make_engine, tmp_path / "host").start()
    member = host_engine(make_engine, tmp_path / "host").start()
    member.kv.set("late", "write")
    stopper = threading.Thread(target=replicator.stop)
    stopper.start()  # it flushes, then waits a little for the other process to leave too
    time.sleep(0.2)
    member.kv.set("later", "write")
    member.stop()
    stopper.join()
    with make_engine() as new_host:
        assert (new_host.kv.get("late"), new_host.kv.get("later")) == ("write", "write")


def test_a_new_host_restores_once_whatever_its_number_of_processes(
    make_engine: EngineFactory, bucket_config: BucketConfig, tmp_path: Path
) -> None:
    with make_engine() as seed:
        seed.connection.execute("CREATE TABLE big (x BLOB)")
        seed.connection.executemany("INSERT INTO big VALUES (randomblob(10000))", [()] * 300)
    store = RecordingStore(open_object_store(bucket_config))
    engines = [host_engine(make_engine, tmp_path / "new-host", store=store) for _ in range(4)]
    threads = [threading.Thread(target=engine.start) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(engine.role for engine in engines) == ["member", "member", "member", "replicator"]
    downloads = [key for key in store.gets if ".chunk" in key]
    assert len(downloads) == 1, f"one download for the host, not one per process: {downloads}"
    assert all(engine.connection.execute("SELECT count(*) FROM big").fetchone() == (300,) for engine in engines)
    for engine in sorted(engines, key=lambda e: e.role == "replicator"):
        engine.stop()  # the members first: the replicator then leaves last, without waiting for them


def test_unshipped_changes_of_a_host_the_bucket_moved_past_are_set_aside(
    make_engine: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with make_engine(local_dir=tmp_path / "a") as host_a:
        host_a.kv.set("who", "a")
    stale = host_a.database.path
    with sqlite3.connect(stale) as conn:  # a change host A made but never shipped (it died before its flush)
        conn.execute("INSERT INTO bh_kv (key, value, created_at, updated_at) VALUES ('unshipped', x'01', 0, 0)")
    conn.close()
    with make_engine(local_dir=tmp_path / "b") as host_b:
        host_b.kv.set("who", "b")  # another host moved the bucket on
    with make_engine(local_dir=tmp_path / "a") as again:
        assert again.kv.get("who") == "b", "the bucket's state is restored"
        assert again.kv.get_bytes("unshipped") is None
        ((path, why),) = again.set_aside
    assert "never shipped" in why
    assert "set this host's database aside" in caplog.text
    kept = sqlite3.connect(path)
    assert kept.execute("SELECT value FROM bh_kv WHERE key = 'unshipped'").fetchone() == (b"\x01",), "nothing lost"


def test_a_damaged_host_database_is_set_aside_and_restored_from_the_bucket(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    with make_engine(local_dir=tmp_path / "host") as first:
        first.connection.execute("CREATE TABLE t (x BLOB)")
        first.connection.executemany("INSERT INTO t VALUES (randomblob(1000))", [()] * 200)
        first.kv.set("k", "v")
        first.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(first.database.path.read_bytes())
    data[4096 * 5 : 4096 * 5 + 100] = b"\xff" * 100
    first.database.path.write_bytes(bytes(data))
    with make_engine(local_dir=tmp_path / "host") as again:
        assert again.kv.get("k") == "v"
        assert again.connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ((_, why),) = again.set_aside
    assert "integrity check" in why


def test_a_database_file_of_unknown_origin_is_adopted_over_an_empty_bucket(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    host.mkdir(mode=0o700)
    with sqlite3.connect(host / "buckethead.sqlite3") as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('brought along')")
    conn.close()
    with make_engine(local_dir=host) as adopting:
        assert adopting.dirty, "it is shipped as the first generation"
    with make_engine() as new_host:
        assert new_host.connection.execute("SELECT body FROM notes").fetchall() == [("brought along",)]


def test_a_second_host_can_serve_a_read_only_copy_while_another_holds_the_lease(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    with make_engine(local_dir=tmp_path / "a") as writer:
        writer.kv.set("k", "shipped")
    now = time.time()
    elsewhere = WriterLease("other-host:7", "other-host", 7, now, now, now + 300, token="t", host_token="h")
    writer.store.put(lease_key(KEY), elsewhere.to_json())  # another host's live writer holds the bucket
    reader = make_engine(local_dir=tmp_path / "b", lease_wait=0, lease_conflict="read-only").start()
    assert reader.role == "read-only"
    assert reader.kv.get("k") == "shipped"
    with pytest.raises(ReadOnlyError, match="read-only on this host"):
        reader.kv.set("k", "mine")
    assert read_lease(writer.store, KEY) == elsewhere, "it never touched the bucket's lease"
    with pytest.raises(WriterConflict, match="other-host"):
        make_engine(local_dir=tmp_path / "c", lease_wait=0).start()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, like a container's /dev/shm that is too small (mounting needs root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    command = ["/bin/mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["/bin/umount", "--lazy", str(mount)], check=False)


def test_a_local_dir_too_small_for_the_database_is_refused_with_the_fix_and_nothing_changes(
    tiny_tmpfs: Path, make_engine: EngineFactory
) -> None:
    with make_engine() as seed:
        seed.connection.execute("CREATE TABLE big (x BLOB)")
        seed.connection.executemany("INSERT INTO big VALUES (randomblob(10000))", [()] * 500)
    before = {o.key: o.etag for o in iter_objects(seed.store)}
    with pytest.raises(LocalDirError, match="--shm-size") as err:
        make_engine(local_dir=tiny_tmpfs / "host").start()
    assert "Nothing was changed" in str(err.value)
    assert {o.key: o.etag for o in iter_objects(seed.store)} == before


def test_a_full_local_dir_refuses_new_writes_and_keeps_the_acknowledged_ones(
    tiny_tmpfs: Path, make_engine: EngineFactory
) -> None:
    bh = make_engine(local_dir=tiny_tmpfs / "host").start()
    bh.kv.set("first", "kept")
    bh.connection.execute("CREATE TABLE big (x BLOB)")

    def fill() -> None:
        for _ in range(1000):
            bh.connection.execute("INSERT INTO big VALUES (randomblob(10000))")

    with pytest.raises(sqlite3.OperationalError, match="full"):
        fill()
    assert bh.kv.get("first") == "kept", "what was acknowledged is still there, and readable"


def test_a_members_flush_is_not_answered_by_a_flush_that_copied_the_database_before_it_asked(
    make_engine: EngineFactory, tmp_path: Path, bucket_config: BucketConfig
) -> None:
    slow = RecordingStore(open_object_store(bucket_config))
    real_put = slow.put

    def put(key: str, *args: object, **kwargs: object) -> object:
        if ".chunk" in key:
            time.sleep(0.5)  # a large upload: the member asks while it runs
        return real_put(key, *args, **kwargs)  # type: ignore[arg-type]

    slow.put = put  # type: ignore[method-assign]
    replicator = host_engine(make_engine, tmp_path / "host", store=slow).start()
    member = host_engine(make_engine, tmp_path / "host").start()
    replicator.kv.set("a", "1")
    running = threading.Thread(target=replicator.force_flush)
    running.start()
    time.sleep(0.2)  # the copy is taken; the upload goes on
    member.kv.set("member", "write")
    result = member.force_flush()
    running.join()
    assert result.uploaded
    shipped = snapshot_bytes(member.store, str(result.generation))
    assert b"member" in shipped, "the generation it was told about holds its write"


def test_a_replicator_that_dies_right_after_its_commit_leaves_its_successor_in_step(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    dying = host_engine(make_engine, tmp_path / "host").start()
    member = make_engine(local_dir=tmp_path / "host").start()  # no takeover thread: it takes over when told
    dying.kv.set("k", "committed")
    real_record = dying.host.record
    dying.host.record = lambda state: real_record(state) if state.shipping else None  # type: ignore[method-assign]
    committed = dying.force_flush().generation  # committed, but the record after the commit is never written
    dying.replicator.close()  # type: ignore[union-attr]
    dying.host.leave()  # the process is gone: the kernel drops its locks
    assert member._take_over(start_loop=False)
    assert member.role == "replicator"
    assert member.fenced is None, "its own host's last commit is not another host's"
    assert not member.dirty, "and nothing is shipped twice"
    assert member.last_upload is not None
    assert member.last_upload.generation == committed


def test_the_processes_of_a_second_host_wait_for_the_lease_once_not_one_after_another(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    with make_engine(local_dir=tmp_path / "a") as writer:
        writer.kv.set("k", "shipped")
    now = time.time()
    elsewhere = WriterLease("other-host:7", "other-host", 7, now, now, now + 300, token="t", host_token="h")
    writer.store.put(lease_key(KEY), elsewhere.to_json())
    first = make_engine(local_dir=tmp_path / "b", lease_wait=0.5, lease_conflict="read-only").start()
    second = make_engine(local_dir=tmp_path / "b", lease_wait=0.5, lease_conflict="read-only").start()
    assert "after waiting 0.5s" in str(first.read_only_reason)
    assert "gave up at once" in str(second.read_only_reason), "the host's first process already waited"
    assert (first.kv.get("k"), second.kv.get("k")) == ("shipped", "shipped")
