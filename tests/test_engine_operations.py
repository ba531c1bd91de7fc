"""Engine features for operators: the writer lease, labelled snapshots, the catalogue, restore, stats."""

from __future__ import annotations

import dataclasses
import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from buckethead_django.engine import BucketSQLite, ReadOnlyError, SnapshotConfig, SnapshotCorrupt, read_lease
from buckethead_django.engine.history import point_name
from buckethead_django.engine.lease import WriterLease, lease_key
from buckethead_django.engine.objectstore import ObjectStore

from .conftest import EngineFactory
from .snapshots import KEY, snapshot_bytes


def value_in(image: bytes, key: str) -> bytes | None:
    conn = sqlite3.connect(":memory:")
    conn.deserialize(image)
    row = conn.execute("SELECT value FROM bh_kv WHERE key=?", (key,)).fetchone()
    return row[0] if row else None


# -- the writer lease --------------------------------------------------------------------


def test_a_writer_holds_the_lease_while_it_runs(make_engine: EngineFactory, store: ObjectStore) -> None:
    assert read_lease(store, KEY) is None
    bh = make_engine().start()
    lease = read_lease(store, KEY)
    assert lease is not None
    assert lease.live
    assert (lease.host, lease.pid) == (socket.gethostname(), os.getpid())
    assert lease.holder == f"{lease.host}:{lease.pid}"
    assert bh.lease == lease
    assert bh.writer_lease() == lease
    bh.stop()
    assert read_lease(store, KEY) is None, "released after the final flush"


def test_a_read_only_view_takes_no_lease(make_engine: EngineFactory, store: ObjectStore) -> None:
    make_engine(read_only_reason="reader").start()
    assert read_lease(store, KEY) is None


def test_the_lease_is_renewed_while_the_writer_runs(make_engine: EngineFactory, store: ObjectStore) -> None:
    bh = make_engine(
        snapshot=SnapshotConfig(interval_seconds=0.05, min_interval_seconds=0), background_flush=True, lease_seconds=0.4
    ).start()
    first = read_lease(store, KEY)
    assert first is not None
    time.sleep(1.0)
    renewed = read_lease(store, KEY)
    assert renewed is not None
    assert renewed.renewed_at > first.renewed_at
    assert renewed.started_at == first.started_at, "the holder's start time is kept"
    assert renewed.live
    bh.stop()


def test_an_expired_or_damaged_lease(store: ObjectStore) -> None:
    old = WriterLease("h:1", "h", 1, started_at=1.0, renewed_at=1.0, expires_at=2.0)
    store.put(lease_key(KEY), old.to_json())
    lease = read_lease(store, KEY)
    assert lease == old
    assert not lease.live
    store.put(lease_key(KEY), b"{not json")
    assert read_lease(store, KEY) is None


def test_stop_leaves_a_lease_taken_over_by_another_process(make_engine: EngineFactory, store: ObjectStore) -> None:
    bh = make_engine().start()
    other = WriterLease("elsewhere:42", "elsewhere", 42, time.time(), time.time(), time.time() + 300)
    store.put(lease_key(KEY), other.to_json())
    bh.stop()
    assert read_lease(store, KEY) == other


# -- labelled snapshots and the catalogue ---------------------------------------------


def test_labelled_snapshots_are_listed_and_survive_later_flushes(engine: BucketSQLite) -> None:
    engine.kv.set("v", "1")
    first = engine.snapshot()
    assert (first.kind, first.current) == ("generation", True)
    kept = engine.snapshot(label="before-migration")
    assert (kept.name, kept.kind, kept.key) == ("before-migration", "labelled", f"{KEY}.labels/before-migration.json")
    engine.kv.set("v", "2")
    engine.force_flush()
    engine.kv.set("v", "3")
    engine.force_flush()
    entries = engine.history.snapshots()
    assert [(e.kind, e.current) for e in entries] == [
        ("generation", True),
        ("generation", False),
        ("generation", False),
        ("labelled", False),
    ]
    assert [e.name for e in entries][2] == point_name(first.record.name, 0), "each flush is a point of one generation"
    assert value_in(snapshot_bytes(engine.store, "before-migration"), "v") == b"1"
    assert value_in(snapshot_bytes(engine.store, "previous"), "v") == b"2"
    assert value_in(snapshot_bytes(engine.store, point_name(first.record.name, 0)), "v") == b"1"
    assert value_in(snapshot_bytes(engine.store, first.record.name), "v") == b"3", "a generation: its newest point"
    with pytest.raises(FileExistsError, match="already exists"):
        engine.snapshot(label="before-migration")


def test_a_label_of_an_empty_never_flushed_database(engine: BucketSQLite) -> None:
    entry = engine.snapshot(label="empty")
    assert engine.history.find("empty") == entry
    assert snapshot_bytes(engine.store, "empty").startswith(b"SQLite format 3")


@pytest.mark.parametrize(
    "label", ["", "latest", "previous", "legacy", "../x", "a/b", "-dash", "0000000001-abcdef12", "x" * 101, "sp ace"]
)
def test_invalid_labels_are_refused(engine: BucketSQLite, label: str) -> None:
    with pytest.raises(ValueError, match="label"):
        engine.snapshot(label=label)


def test_find_snapshot_of_an_unknown_name(engine: BucketSQLite) -> None:
    with pytest.raises(KeyError):
        engine.history.find("latest")
    with pytest.raises(KeyError):
        engine.history.find("no-such-label")
    with pytest.raises(KeyError):
        engine.history.find("../../etc")


def test_fetch_verifies_and_leaves_nothing_when_invalid(engine: BucketSQLite, tmp_path: Path) -> None:
    engine.kv.set("k", "v")
    engine.force_flush()
    moved: list[int] = []
    dest = tmp_path / "out" / "copy.db"
    latest = engine.history.find("latest").record
    engine.history.fetch(latest, dest, keys=(), progress=moved.append)
    assert sqlite3.connect(dest).execute("SELECT count(*) FROM bh_kv").fetchone() == (1,)
    assert sum(moved) == dest.stat().st_size
    engine.store.put(latest.chunks[0].key + ".x", b"garbage" * 100)
    broken = dataclasses.replace(
        latest, chunks=(dataclasses.replace(latest.chunks[0], key=latest.chunks[0].key + ".x"),)
    )
    with pytest.raises(SnapshotCorrupt, match="does not match its record"):
        engine.history.fetch(broken, tmp_path / "bad.db", keys=())
    assert list(tmp_path.glob("bad*")) == []
    assert list(tmp_path.glob(".bad*")) == []


# -- restore ----------------------------------------------------------------------------


def test_restore_a_named_snapshot_keeps_the_current_state_first(engine: BucketSQLite) -> None:
    engine.kv.set("v", "good")
    engine.snapshot(label="good")
    engine.kv.set("v", "mistake")
    engine.kv.set("extra", "x")
    kept = engine.restore("good")
    assert engine.kv.get("v") == "good"
    assert engine.kv.get("extra") is None
    assert kept.name.startswith("pre-restore-")
    assert value_in(snapshot_bytes(engine.store, kept.name), "v") == b"mistake", "the restore can be undone"
    assert value_in(snapshot_bytes(engine.store), "v") == b"good", "and it is durable"


def test_restore_a_local_file_and_upgrade_its_schema(engine: BucketSQLite, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE bh_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, created_at REAL NOT NULL, "
        "updated_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO bh_kv VALUES ('from-file', CAST('yes' AS BLOB), 1, 1)")
    old.commit()
    old.close()
    engine.kv.set("before", "x")
    engine.restore(path)
    assert engine.kv.get("from-file") == "yes"
    assert engine.kv.get("before") is None
    engine.kv.set("ttl", "works", ttl=60)  # needs the expiry column the old file lacked
    assert engine.kv.ttl("ttl") is not None
    assert engine.files.list_names() == [], "the names table exists again"


def test_restore_of_an_invalid_file_changes_nothing(engine: BucketSQLite, tmp_path: Path) -> None:
    engine.kv.set("k", "v")
    engine.force_flush()
    before = engine.history.snapshots()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    with pytest.raises(SnapshotCorrupt):
        engine.restore(bad)
    with pytest.raises(KeyError):
        engine.restore("no-such-snapshot")
    assert engine.kv.get("k") == "v"
    assert engine.history.snapshots() == before, "no pre-restore snapshot was made either"


def test_a_read_only_view_cannot_restore(make_engine: EngineFactory, tmp_path: Path) -> None:
    with make_engine() as bh:
        bh.kv.set("k", "v")
    view = make_engine(read_only_reason="a reader").start()
    with pytest.raises(ReadOnlyError, match="a reader"):
        view.restore("latest")


def test_stats(engine: BucketSQLite) -> None:
    engine.kv.set("a", "1")
    engine.kv.set("b", "2")
    engine.files.put(b"blob")
    stats = engine.stats()
    assert stats["kv_entries"] == 2
    assert stats["files"] == 1
    assert stats["database_bytes"] >= 4096


# -- a second writer is refused ------------------------------------------------------------


def test_a_second_writer_is_refused_while_another_process_holds_the_lease(
    make_engine: EngineFactory, store: ObjectStore
) -> None:
    from buckethead_django.engine import WriterConflict

    with make_engine() as first:
        first.kv.set("k", "first")
    other = WriterLease("web-2:4242", "web-2", 4242, time.time() - 60, time.time(), time.time() + 300)
    store.put(lease_key(KEY), other.to_json())
    second = make_engine(lease_wait=0)
    with pytest.raises(WriterConflict, match=r"held by another writer, web-2:4242") as err:
        second.start()
    assert "LEASE_CONFLICT" in str(err.value), "the message says what to do"
    assert not second.started
    assert read_lease(store, KEY) == other, "the holder's lease is untouched"
    with make_engine(read_only_reason="reader") as reader:
        assert reader.kv.get("k") == "first", "a reader is still welcome"


def test_an_expired_lease_or_one_left_by_a_dead_process_is_taken_over(
    make_engine: EngineFactory, store: ObjectStore
) -> None:
    expired = WriterLease("web-2:1", "web-2", 1, 1.0, 1.0, 2.0)
    store.put(lease_key(KEY), expired.to_json())
    make_engine().start().stop()
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    pid = int(dead.stdout)
    crashed = WriterLease(f"{socket.gethostname()}:{pid}", socket.gethostname(), pid, time.time(), time.time(),
                          time.time() + 300)  # fmt: skip
    store.put(lease_key(KEY), crashed.to_json())
    bh = make_engine().start()
    assert bh.lease is not None
    assert bh.lease.pid == os.getpid()


def test_a_restore_keeps_only_the_newest_pre_restore_labels_and_every_label_given_by_hand(
    make_engine: EngineFactory,
) -> None:
    bh = make_engine(snapshot=SnapshotConfig(min_interval_seconds=0, keep_pre_restore=2)).start()
    bh.kv.set("v", "1")
    bh.snapshot(label="by-hand")
    made = []
    for i in range(4):
        bh.kv.set("v", str(i + 2))
        made.append(bh.restore("by-hand").name)
        time.sleep(1.01)  # labels are named to the second
    labels = [e.name for e in bh.history.snapshots() if e.kind == "labelled"]
    assert "by-hand" in labels, "a label given by hand is never pruned"
    assert sorted(n for n in labels if n.startswith("pre-restore-")) == sorted(made[-2:]), "the newest two are kept"
    assert value_in(snapshot_bytes(bh.store, made[-1]), "v") == b"5", "and they still restore"
