"""Snapshots cost what changed: a flush ships the pages changed since the previous one, as one delta object.

Every test runs on a local directory and on a bucket on the moto server,
over HTTP; requests are counted by the project's recording store.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

from buckethead_django.engine import History, SnapshotConfig
from buckethead_django.engine.errors import SnapshotCorrupt, WriterFenced
from buckethead_django.engine.history import LATEST, point_name

from .conftest import EngineFactory
from .recording_store import RecordingStore
from .snapshots import KEY

ROWS = 3000  # about 3 MB: big enough that a whole image would dwarf a delta


def fill(bh, rows: int = ROWS) -> None:
    conn = bh.database.connect(autocommit=True)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"{i:06d}" + "x" * 1000,) for i in range(rows)])
    finally:
        conn.close()


def write(bh, sql: str, *args: object) -> None:
    conn = bh.database.connect(autocommit=True)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def restored(store, *, name: str = LATEST) -> sqlite3.Connection:
    """The bucket's point ``name`` restored (verified) into a new in-memory database."""
    history = History(store, KEY)
    entry = history.find(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "restored.db"
        history.fetch(entry.record, path, keys=(), deltas=entry.deltas)
        conn = sqlite3.connect(":memory:")
        source = sqlite3.connect(path)
        source.backup(conn)
        source.close()
    return conn


def bodies(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT body FROM notes ORDER BY id")]


def three_edits(bh, store) -> tuple[History, str]:
    """A base and three flushes of one edit each; the history and its generation's name."""
    fill(bh, 10)
    bh.force_flush()
    for i in range(3):
        write(bh, "UPDATE notes SET body = ? WHERE id = 1", f"edit {i}")
        bh.force_flush()
    history = History(store, KEY)
    return history, history.current().record.name


def test_a_one_row_change_uploads_one_small_delta_in_one_request(
    make_engine: EngineFactory, recording: RecordingStore
) -> None:
    bh = make_engine(store=recording).start()
    fill(bh)
    base = bh.force_flush()
    assert base.bytes > 3_000_000, "the first flush ships the whole database as a base"

    recording.puts.clear()
    write(bh, "UPDATE notes SET body = 'changed' WHERE id = 1500")
    result = bh.force_flush()

    assert result.uploaded
    assert len(recording.data_puts) == 1, f"one request per changed flush, not {recording.data_puts}"
    assert ".d" in recording.data_puts[0].rsplit("/", 1)[1], "the one object is a delta"
    assert result.bytes < 16 * 1024, f"a 1-row change ships a few pages, not {result.bytes} bytes"
    assert bodies(restored(recording))[1499] == "changed"


def test_an_idle_database_costs_nothing(make_engine: EngineFactory, recording: RecordingStore) -> None:
    bh = make_engine(store=recording).start()
    fill(bh, 10)
    bh.force_flush()
    recording.puts.clear()
    recording.gets.clear()
    for _ in range(5):
        assert bh.force_flush().reason == "unchanged"
    assert recording.data_puts == []
    assert recording.gets == []


def test_every_flush_is_a_point_that_restores_exactly(make_engine: EngineFactory, recording: RecordingStore) -> None:
    bh = make_engine(store=recording).start()
    fill(bh, 50)
    states = []
    for i in range(5):
        write(bh, "UPDATE notes SET body = ? WHERE id = ?", f"version {i}", i + 1)
        write(bh, "INSERT INTO notes (body) VALUES (?)", f"added {i}")
        bh.force_flush()
        states.append((bh.replicator.current_point, bodies(restored(recording))))

    history = History(recording, KEY)
    points = {point_name(p.generation.name, p.deltas) for p in history.points()}
    for point, expected in states:
        assert point in points
        assert bodies(restored(recording, name=point)) == expected, f"{point} restores the state of its flush"


def test_a_point_in_time_is_found_by_its_time(make_engine: EngineFactory, recording: RecordingStore) -> None:
    bh = make_engine(store=recording).start()
    fill(bh, 5)
    bh.force_flush()
    write(bh, "UPDATE notes SET body = 'first' WHERE id = 1")
    bh.force_flush()
    history = History(recording, KEY)
    first = history.find(LATEST)
    first_point = next(p for p in history.points() if p.current)
    time.sleep(1.1)  # a bucket dates its objects to the second: a point in time is told apart from the next
    write(bh, "UPDATE notes SET body = 'second' WHERE id = 1")
    bh.force_flush()

    entry = history.find_at(first_point.at)
    assert (entry.record.name, entry.deltas) == (first_point.generation.name, first_point.deltas)
    assert entry.name == point_name(first_point.generation.name, first_point.deltas), "no longer the newest"
    assert bodies(restored(recording, name=entry.name))[0] == "first"
    assert first.record.name == entry.record.name, "both points are in one generation"
    with pytest.raises(KeyError):
        history.find_at(first.record.created_at - 3600)


def test_deltas_survive_a_new_host(make_engine: EngineFactory) -> None:
    bh = make_engine().start()
    fill(bh, 20)
    bh.force_flush()
    for i in range(3):
        write(bh, "UPDATE notes SET body = ? WHERE id = 1", f"edit {i}")
        bh.force_flush()
    bh.stop()

    other = make_engine().start()  # a new host: restores base and deltas
    conn = other.database.connect()
    assert conn.execute("SELECT body FROM notes WHERE id = 1").fetchone()[0] == "edit 2"
    conn.close()
    write(other, "UPDATE notes SET body = 'from the new host' WHERE id = 2")
    assert other.force_flush().uploaded
    other.stop()
    third = make_engine().start()
    conn = third.database.connect()
    assert conn.execute("SELECT body FROM notes WHERE id IN (1, 2) ORDER BY id").fetchall() == [
        ("edit 2",),
        ("from the new host",),
    ]
    conn.close()


def test_compaction_writes_a_new_base_and_restores_exactly(
    make_engine: EngineFactory, recording: RecordingStore
) -> None:
    bh = make_engine(store=recording, snapshot=SnapshotConfig(min_interval_seconds=0, compact_deltas=3)).start()
    fill(bh, 30)
    bh.force_flush()
    first = History(recording, KEY).current().record.name
    for i in range(5):
        write(bh, "UPDATE notes SET body = ? WHERE id = ?", f"compacted {i}", i + 1)
        bh.force_flush()
    history = History(recording, KEY)
    current = history.current().record
    assert current.name != first, "past three deltas, a flush writes a new base"
    assert current.parent == first
    assert bodies(restored(recording))[:5] == [f"compacted {i}" for i in range(5)]


def test_a_big_change_is_shipped_as_a_new_base(make_engine: EngineFactory, recording: RecordingStore) -> None:
    bh = make_engine(store=recording).start()
    fill(bh, 100)
    bh.force_flush()
    first = History(recording, KEY).current().record.name
    fill(bh, 1000)  # ten times the database: more than half of it is new
    bh.force_flush()
    assert History(recording, KEY).current().record.name != first
    assert len(bodies(restored(recording))) == 1100


def test_a_corrupt_delta_is_refused_by_name_with_the_point_before_it(
    make_engine: EngineFactory, recording: RecordingStore
) -> None:
    history, generation = three_edits(make_engine(store=recording).start(), recording)
    chain = history.deltas(generation)
    bad = history.delta_key(generation, chain[-2][0])
    data = bytearray(recording.get(bad))
    data[-5] ^= 0xFF
    recording.inner.delete(bad)
    recording.inner.put(bad, bytes(data))

    with pytest.raises(SnapshotCorrupt) as caught:
        restored(recording)
    assert caught.value.key == bad
    assert point_name(generation, chain[-2][0] - 1) in str(caught.value)
    # The point before it still restores.
    assert bodies(restored(recording, name=point_name(generation, chain[-2][0] - 1)))


def test_a_missing_delta_ends_the_chain_and_is_named(make_engine: EngineFactory, recording: RecordingStore) -> None:
    history, generation = three_edits(make_engine(store=recording).start(), recording)
    last = history.deltas(generation)[-1][0]
    recording.inner.delete(history.delta_key(generation, last - 1))
    with pytest.raises(KeyError):
        history.find(point_name(generation, last))


def test_a_writer_that_was_taken_over_can_add_no_delta(
    make_engine: EngineFactory, recording: RecordingStore, tmp_path: Path
) -> None:
    old = make_engine(store=recording, lease_seconds=1).start()
    fill(old, 10)
    old.force_flush()
    # The old writer pauses past its lease; a writer on another host takes the bucket over.
    time.sleep(1.2)
    new = make_engine(store=recording, lease_wait=5).start()
    write(old, "UPDATE notes SET body = 'lost writer' WHERE id = 1")
    with pytest.raises(WriterFenced):
        old.force_flush()
    write(new, "UPDATE notes SET body = 'new writer' WHERE id = 2")
    new.force_flush()
    rows = bodies(restored(recording))
    assert "lost writer" not in rows
    assert "new writer" in rows


def test_a_delta_written_while_another_writer_claims_the_bucket_is_never_applied(
    make_engine: EngineFactory, recording: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = make_engine(store=recording).start()
    fill(paused, 10)
    paused.force_flush()  # its base
    write(paused, "UPDATE notes SET body = 'acknowledged' WHERE id = 1")
    paused.force_flush()  # a delta
    successors = []
    real_put = recording.put

    def put(key: str, *args: object, **kwargs: object) -> object:
        if ".d0" in key and not successors:
            # Paused as its next delta goes out: another host claims the bucket meanwhile.
            successors.append(make_engine(store=RecordingStore(recording.inner)).start())
        return real_put(key, *args, **kwargs)

    monkeypatch.setattr(recording, "put", put)
    write(paused, "UPDATE notes SET body = 'never acknowledged' WHERE id = 2")
    with pytest.raises(WriterFenced):
        paused.force_flush()
    (successor,) = successors

    history = History(recording.inner, KEY)
    generation = history.current().record.name
    assert len(history.deltas(generation)) == 2, "the late delta is in the bucket"
    rows = bodies(restored(recording.inner))
    assert rows[0] == "acknowledged", "what was acknowledged is there"
    assert "never acknowledged" not in rows, "the delta after the claim is not"
    assert max(p.deltas for p in history.points() if p.generation.name == generation) == 1
    write(successor, "UPDATE notes SET body = 'successor' WHERE id = 3")
    assert successor.force_flush().uploaded
    after = bodies(restored(recording.inner))
    assert (after[0], after[2]) == ("acknowledged", "successor")
    assert after[1] != "never acknowledged"
