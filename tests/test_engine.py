"""BucketSQLite: restart round-trips, flushing, concurrency and snapshot safety."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from buckethead_django.engine import (
    BucketConfig,
    BucketSQLite,
    NotStarted,
    ReadOnlyError,
    SnapshotConfig,
    SnapshotCorrupt,
)
from buckethead_django.engine import snapshot as snapshot_module
from buckethead_django.engine.objectstore import ObjectStore

from .concurrency import run_in_threads
from .conftest import EngineFactory
from .recording_store import RecordingStore
from .snapshots import KEY, current_record, snapshot_bytes


def open_snapshot(data: bytes) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.deserialize(data)
    return conn


# -- durability across restarts ------------------------------------------------------


def test_kv_files_and_tables_survive_a_restart(make_engine: EngineFactory, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * 3_000_000)
    with make_engine() as bh:
        bh.kv.set("user/123", "alice")
        bh.kv.set_bytes("raw", b"\x00\xff")
        bh_key = bh.files.put(big)
        small = bh.files.put(b"small", filename="s.txt")
        bh.connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        bh.connection.execute("INSERT INTO notes (body) VALUES ('kept')")

    with make_engine() as again:
        assert again.restored_from is not None
        assert again.kv.get("user/123") == "alice"
        assert again.kv.get_bytes("raw") == b"\x00\xff"
        assert again.files.get(small) == b"small"
        out = tmp_path / "out.bin"
        again.files.get(bh_key, dest=out)
        assert out.read_bytes() == big.read_bytes()
        assert again.connection.execute("SELECT body FROM notes").fetchall() == [("kept",)]


def test_start_without_a_snapshot_starts_empty(engine: BucketSQLite) -> None:
    assert engine.restored_from is None
    assert len(engine.kv) == 0
    assert engine.store.head(KEY) is None


def test_use_before_start_and_after_stop_is_a_clear_error(make_engine: EngineFactory) -> None:
    bh = make_engine()
    with pytest.raises(NotStarted, match="call start"):
        bh.kv  # noqa: B018
    bh.start()
    bh.stop()
    with pytest.raises(NotStarted):
        bh.connection  # noqa: B018
    bh.stop()  # stopping twice is harmless


def test_a_stopped_engine_starts_again_from_the_hosts_database_without_a_download(
    make_engine: EngineFactory, bucket_config: BucketConfig
) -> None:
    from buckethead_django.engine.objectstore import open_object_store

    store = RecordingStore(open_object_store(bucket_config))
    bh = make_engine(store=store).start()
    bh.kv.set("k", "v")
    bh.stop()
    assert bh.database.exists(), "the host's database outlives its processes"
    store.gets.clear()
    bh.start()
    assert bh.kv.get("k") == "v"
    assert not [key for key in store.gets if ".chunk" in key], "the host's copy is the bucket's current one"


def test_start_is_idempotent(engine: BucketSQLite) -> None:
    engine.kv.set("k", "v")
    assert engine.start() is engine
    assert engine.kv.get("k") == "v"


def test_ttl_survives_a_restart(make_engine: EngineFactory) -> None:
    with make_engine() as bh:
        bh.kv.set("short", "v", ttl=3600)
        bh.kv.set("gone", "v", ttl=0.01)
    time.sleep(0.05)
    with make_engine() as bh:
        assert 3500 < (bh.kv.ttl("short") or 0) <= 3600
        assert bh.kv.get("gone") is None


# -- flushing -----------------------------------------------------------------------------


def test_idle_flushes_upload_nothing_and_do_not_read_the_database(
    make_engine: EngineFactory, bucket_config: BucketConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buckethead_django.engine.objectstore import open_object_store

    store = RecordingStore(open_object_store(bucket_config))
    bh = make_engine(store=store).start()
    captures: list[int] = []
    real_capture = bh.database.capture
    monkeypatch.setattr(bh.database, "capture", lambda *args: captures.append(1) or real_capture(*args))

    store.puts.clear()  # starting claims the current record once
    for _ in range(5):
        assert bh.force_flush().reason == "unchanged"
    assert store.data_puts == []
    assert captures == []

    bh.kv.set("k", "v")
    assert bh.force_flush().uploaded
    one_generation = list(store.data_puts)
    assert one_generation[-1] == KEY + ".current", "a generation is committed by replacing the current record"
    assert len(one_generation) == 3, "one chunk, its record, the current record"
    for _ in range(5):
        assert not bh.flush().uploaded
    assert store.data_puts == one_generation, "nothing changed after the flush, so nothing more is uploaded"
    assert captures == [1]


def test_reads_do_not_make_the_database_dirty(engine: BucketSQLite) -> None:
    engine.kv.set("k", "v")
    engine.force_flush()
    engine.kv.get("k")
    engine.kv.keys()
    engine.connection.execute("SELECT * FROM bh_kv").fetchall()
    assert engine.dirty is False
    engine.kv.set("k", "v2")
    assert engine.dirty is True


def test_a_restored_database_that_nobody_writes_is_never_uploaded(
    make_engine: EngineFactory, bucket_config: BucketConfig
) -> None:
    from buckethead_django.engine.objectstore import open_object_store

    with make_engine() as bh:
        bh.kv.set("k", "v")
    store = RecordingStore(open_object_store(bucket_config))
    reader = make_engine(store=store).start()
    assert reader.kv.get("k") == "v"
    store.puts.clear()  # starting claims the current record once
    reader.flush()
    reader.stop()
    assert store.data_puts == [], "an idle process must never roll back a newer snapshot written elsewhere"


def test_flush_is_debounced(make_engine: EngineFactory) -> None:
    bh = make_engine(snapshot=SnapshotConfig(min_interval_seconds=60)).start()
    bh.kv.set("a", "1")
    assert bh.flush().uploaded
    bh.kv.set("b", "2")
    assert bh.flush().reason == "debounced"
    assert bh.force_flush().uploaded, "force_flush ignores the debounce"


def test_background_loop_flushes_changes_on_its_interval(make_engine: EngineFactory) -> None:
    bh = make_engine(snapshot=SnapshotConfig(interval_seconds=0.1, min_interval_seconds=0), background_flush=True)
    bh.start()
    bh.kv.set("k", "from the loop")
    deadline = time.monotonic() + 10
    while current_record(bh.store) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    data = snapshot_bytes(bh.store)
    conn = open_snapshot(data)
    assert conn.execute("SELECT value FROM bh_kv WHERE key='k'").fetchone() == (b"from the loop",)


def test_stop_makes_a_final_flush(make_engine: EngineFactory) -> None:
    bh = make_engine(snapshot=SnapshotConfig(interval_seconds=3600)).start()
    bh.kv.set("last", "words")
    bh.stop()
    conn = open_snapshot(snapshot_bytes(bh.store))
    assert conn.execute("SELECT value FROM bh_kv WHERE key='last'").fetchone() == (b"words",)


def test_no_write_is_acknowledged_after_the_final_snapshot(make_engine: EngineFactory) -> None:
    bh = make_engine().start()
    acknowledged: list[int] = []
    refusals: list[Exception] = []

    def keep_writing() -> None:
        i = 0
        while True:
            try:
                bh.kv.set(f"k{i}", "v")
            except (ReadOnlyError, NotStarted) as exc:
                refusals.append(exc)
                return
            acknowledged.append(i)
            i += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    while len(acknowledged) < 200:
        time.sleep(0.01)
    bh.stop()
    writer.join()
    assert refusals, "the writer was stopped by a refusal, never silently"
    with make_engine() as again:
        assert again.kv.count() == len(acknowledged), "every acknowledged write is in the final snapshot"


def test_callbacks_report_start_completion_and_errors(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[object, ...]] = []
    bh = make_engine(
        on_flush_start=lambda: events.append(("start",)),
        on_flush_complete=lambda duration, nbytes: events.append(("complete", duration, nbytes)),
        on_flush_error=lambda exc: events.append(("error", exc)),
    ).start()
    bh.kv.set("k", "v")
    result = bh.force_flush()
    assert events[0] == ("start",)
    assert events[1][0] == "complete"
    assert events[1][1] == result.duration_seconds > 0
    assert events[1][2] == result.bytes == len(snapshot_bytes(bh.store))

    class Broken(RuntimeError):
        pass

    def fail(*_args: object, **_kwargs: object) -> None:
        raise Broken("bucket said no")

    monkeypatch.setattr(bh.store, "put", fail)
    bh.kv.set("k", "v2")
    with pytest.raises(Broken):
        bh.force_flush()
    assert events[-1][0] == "error"
    assert isinstance(events[-1][1], Broken)
    assert bh.last_error is events[-1][1]
    assert bh.dirty, "a failed flush leaves the change pending for the next one"
    monkeypatch.undo()
    assert bh.force_flush().uploaded


def test_a_failing_callback_does_not_break_the_flush(engine: BucketSQLite) -> None:
    def bad(*_args: object) -> None:
        raise ValueError("callback bug")

    engine._on_flush_complete = bad  # type: ignore[assignment]
    engine.kv.set("k", "v")
    assert engine.force_flush().uploaded


def test_keep_previous_keeps_the_replaced_snapshot(engine: BucketSQLite) -> None:
    engine.kv.set("v", "1")
    engine.force_flush()
    first = snapshot_bytes(engine.store)
    engine.kv.set("v", "2")
    engine.force_flush()
    assert snapshot_bytes(engine.store, "previous") == first
    assert open_snapshot(snapshot_bytes(engine.store)).execute("SELECT value FROM bh_kv").fetchone() == (b"2",)


def test_a_failed_final_flush_keeps_the_data_and_can_be_retried(make_engine: EngineFactory) -> None:
    bh = make_engine().start()
    bh.kv.set("precious", "data")
    real_put = bh.store.put

    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError("network down")

    bh.store.put = fail  # type: ignore[method-assign]
    with pytest.raises(OSError, match="network down"):
        bh.stop()
    assert bh.kv.get("precious") == "data", "the database stays open after a failed final flush"
    bh.store.put = real_put  # type: ignore[method-assign]
    bh.stop()
    conn = open_snapshot(snapshot_bytes(bh.store))
    assert conn.execute("SELECT value FROM bh_kv WHERE key='precious'").fetchone() == (b"data",)


def test_a_flush_during_an_open_write_transaction_ships_what_is_committed_without_waiting(
    make_engine: EngineFactory,
) -> None:
    bh = make_engine(busy_timeout=30).start()
    bh.kv.set("committed", "yes")
    writer = bh.connect()
    writer.execute("INSERT INTO bh_kv VALUES ('uncommitted', x'00', 0, 0, NULL)")  # opens a transaction
    assert bh.force_flush().uploaded, "the copy is a read: it does not wait for the writer's lock"
    image = open_snapshot(snapshot_bytes(bh.store))
    assert image.execute("SELECT key FROM bh_kv").fetchall() == [("committed",)]
    writer.commit()
    assert bh.dirty
    assert bh.force_flush().uploaded


# -- concurrency ----------------------------------------------------------------------


def test_eight_threads_read_and_write_with_their_own_connections(engine: BucketSQLite) -> None:
    engine.connection.execute("CREATE TABLE events (thread INTEGER, n INTEGER)")

    def work(thread: int) -> None:
        conn = engine.connect()
        try:
            for n in range(300):
                with conn:
                    conn.execute("INSERT INTO events VALUES (?, ?)", (thread, n))
                count = conn.execute("SELECT count(*) FROM events WHERE thread = ?", (thread,)).fetchone()[0]
                assert count == n + 1
        finally:
            conn.close()

    errors = run_in_threads(work)
    assert errors == [], errors[:3]
    assert engine.connection.execute("SELECT count(*) FROM events").fetchone()[0] == 8 * 300


def test_snapshots_taken_during_writes_are_consistent(engine: BucketSQLite) -> None:
    """Every snapshot shows whole transactions: the two tables always hold the same rows."""
    engine.connection.execute("CREATE TABLE debit (id INTEGER PRIMARY KEY)")
    engine.connection.execute("CREATE TABLE credit (id INTEGER PRIMARY KEY)")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        conn = engine.connect()
        try:
            i = 0
            while not stop.is_set():
                with conn:
                    conn.execute("INSERT INTO debit VALUES (?)", (i,))
                    conn.execute("INSERT INTO credit VALUES (?)", (i,))
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer) for _ in range(1)]
    for t in threads:
        t.start()
    images = []
    try:
        for _ in range(10):
            time.sleep(0.02)
            engine.force_flush()
            images.append(snapshot_bytes(engine.store))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    counts = []
    for data in images:
        conn = open_snapshot(data)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        debit = conn.execute("SELECT count(*), coalesce(max(id), -1) FROM debit").fetchone()
        credit = conn.execute("SELECT count(*), coalesce(max(id), -1) FROM credit").fetchone()
        assert debit == credit
        counts.append(debit[0])
    assert counts[-1] > counts[0] > 0, "the writer kept writing while snapshots were taken"


# -- refusing bad snapshots --------------------------------------------------------


def valid_snapshot() -> bytes:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i}" * 50,) for i in range(500)])
    conn.commit()
    return conn.serialize()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda good: b"", "empty"),
        (lambda good: b"this is not a database at all" * 40, "SQLite file header"),
        (lambda good: good[: len(good) // 2], "truncated"),
        (lambda good: good[:4096] + b"\x00" * (len(good) - 4096), "integrity_check|cannot read"),
        (lambda good: good[:-100], "whole number"),
    ],
    ids=["zero-bytes", "not-sqlite", "truncated", "zeroed-pages", "ragged-end"],
)
def test_a_damaged_snapshot_is_refused_and_left_in_place(
    make_engine: EngineFactory, store: ObjectStore, damage, reason: str
) -> None:
    good = valid_snapshot()
    store.put(KEY + ".prev", good)
    bad = damage(good)
    store.put(KEY, bad)
    bh = make_engine()
    with pytest.raises(SnapshotCorrupt, match=reason) as err:
        bh.start()
    assert KEY in str(err.value), "the error names the object"
    assert "Nothing was loaded" in str(err.value)
    assert not bh.started
    bh.stop()  # after a failed start, stop() must not upload anything
    assert store.get(KEY) == bad
    assert store.get(KEY + ".prev") == good, "the good previous copy is untouched"


def test_a_valid_snapshot_restores_exactly(make_engine: EngineFactory, store: ObjectStore) -> None:
    good = valid_snapshot()
    store.put(KEY, good)
    with make_engine() as bh:
        assert bh.connection.execute("SELECT count(*) FROM t").fetchone() == (500,)


def test_an_old_snapshot_is_upgraded_in_place(make_engine: EngineFactory, store: ObjectStore) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE bh_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL)"
    )
    conn.execute("INSERT INTO bh_kv VALUES ('k', CAST('v' AS BLOB), 1, 1)")
    conn.commit()
    store.put(KEY, conn.serialize())
    with make_engine() as bh:
        assert bh.kv.get("k") == "v"
        bh.kv.set("ttl", "x", ttl=60)
    with make_engine() as bh:
        assert bh.kv.ttl("ttl") is not None
        cols = [r[1] for r in bh.connection.execute("PRAGMA table_info(bh_kv)")]
        assert cols[-1] == "expires_at"


def test_capture_is_a_plain_sqlite_file(engine: BucketSQLite) -> None:
    engine.kv.set("k", "v")
    engine.force_flush()
    data = snapshot_bytes(engine.store)
    assert data.startswith(b"SQLite format 3\x00")
    record = current_record(engine.store)
    assert record is not None
    head = engine.store.head(record.chunks[0].key)
    assert head is not None
    assert head.content_type == "application/vnd.sqlite3"
    assert head.metadata.get("sha256") == snapshot_module.Capture(data, 0).sha256
    assert io.BytesIO(data).getbuffer().nbytes == engine.last_flush.bytes  # type: ignore[union-attr]


# -- read-only views ------------------------------------------------------------------


def test_a_read_only_view_reads_the_snapshot_and_refuses_every_write(
    make_engine: EngineFactory, bucket_config: BucketConfig
) -> None:
    from buckethead_django.engine import ReadOnlyError
    from buckethead_django.engine.objectstore import open_object_store

    with make_engine() as bh:
        bh.kv.set("k", "v")
        bh.connection.execute("CREATE TABLE t (x)")
    store = RecordingStore(open_object_store(bucket_config))
    reason = "this process is a reader; write in the server"
    view = make_engine(store=store, read_only_reason=reason).start()
    assert view.read_only
    assert view.kv.get("k") == "v"
    with pytest.raises(ReadOnlyError, match="this process is a reader"):
        view.kv.set("k", "changed")
    with pytest.raises(ReadOnlyError):
        view.kv.delete("k")
    with pytest.raises(ReadOnlyError):
        view.files.put(b"blob")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        view.connection.execute("INSERT INTO t VALUES (1)")
    conn = view.connect()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    with pytest.raises(ReadOnlyError):
        view.force_flush()
    view.stop()
    assert store.puts == [], "a read-only view never uploads anything, not even a lease or a blob"
