"""Read replicas: a host with ``replica=True`` follows the bucket its writer flushes to, and never writes it.

Engine-level tests: a writer and a replica on hosts of their own (their own
``local_dir``), on a local directory and on a bucket on the moto server over
HTTP. The replica's polls are driven by hand (`Follower.poll`), so each test
says exactly when the replica looks.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import tempfile
from pathlib import Path

import pytest

from buckethead_django.engine import BucketSQLite, ReadOnlyError, SnapshotConfig
from buckethead_django.engine.database import SHM_ROOT
from buckethead_django.engine.follower import PROBE_LIMIT
from buckethead_django.engine.replica_database import ReplicaDatabase

from .conftest import EngineFactory
from .recording_store import RecordingStore


def write(bh: BucketSQLite, sql: str, *args: object) -> None:
    conn = bh.database.connect(autocommit=True)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def notes(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT body FROM notes ORDER BY id")]


def writer_with_notes(make_engine: EngineFactory, *bodies: str) -> BucketSQLite:
    writer = make_engine().start()
    write(writer, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    for body in bodies:
        write(writer, "INSERT INTO notes (body) VALUES (?)", body)
    writer.force_flush()
    return writer


def poll(replica: BucketSQLite) -> int:
    assert replica.follower is not None
    return replica.follower.poll()


def test_a_replica_starts_with_the_writers_newest_flush_and_follows_each_new_one(make_engine: EngineFactory) -> None:
    writer = writer_with_notes(make_engine, "first")
    write(writer, "INSERT INTO notes (body) VALUES ('second')")
    writer.force_flush()  # a delta on top of the base
    replica = make_engine(replica=True).start()
    assert (replica.role, replica.read_only) == ("replica", True)
    reader = replica.connect()  # opened before the writer moves on: it sees each new state all the same
    assert notes(reader) == ["first", "second"]

    write(writer, "INSERT INTO notes (body) VALUES ('third')")
    assert poll(replica) == 0, "nothing is flushed yet, so there is nothing to follow"
    writer.force_flush()
    assert poll(replica) == 1
    assert notes(reader) == ["first", "second", "third"]
    assert replica.kv.get("missing") is None
    info = replica.replicator_info()
    assert writer.last_upload is not None
    assert info is not None
    assert info.current_snapshot == writer.last_upload.point
    assert replica.replica_lag is not None
    assert replica.replica_lag < 60


def test_every_write_on_a_replica_is_refused_and_nothing_reaches_the_bucket(
    make_engine: EngineFactory, recording: RecordingStore
) -> None:
    writer_with_notes(make_engine, "first")
    replica = make_engine(replica=True, store=recording).start()
    with pytest.raises(ReadOnlyError, match="read replica"):
        replica.kv.set("k", "v")
    with pytest.raises(ReadOnlyError, match="read replica"):
        replica.force_flush()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        replica.connection.execute("INSERT INTO notes (body) VALUES ('no')")
    poll(replica)
    replica.stop()
    assert recording.puts == [], "a replica never writes the bucket"
    assert recording.copies == []


def test_idle_polls_cost_two_reads_and_no_listing(make_engine: EngineFactory, recording: RecordingStore) -> None:
    writer_with_notes(make_engine, "first")
    replica = make_engine(replica=True, store=recording).start()
    calls: list[str] = []
    for name in ("get", "head", "list_page"):
        inner = getattr(recording, name)

        def counted(*args: object, _name: str = name, _inner=inner, **kwargs: object) -> object:
            calls.append(_name)
            return _inner(*args, **kwargs)

        setattr(recording, name, counted)
    for _ in range(5):
        assert poll(replica) == 0
    assert calls == ["get", "head"] * 5, "each idle poll asks for the next delta and the current record's ETag"


def test_a_new_generation_is_written_into_the_file_readers_have_open(make_engine: EngineFactory) -> None:
    writer = writer_with_notes(make_engine, "first")
    replica = make_engine(replica=True).start()
    reader = replica.connect()
    assert notes(reader) == ["first"]
    # A restore makes a new generation (a new base): the replica loads it into the same file, pages that differ only.
    write(writer, "UPDATE notes SET body = 'changed'")
    writer.force_flush()
    writer.restore(writer.history.find("previous").name)
    assert poll(replica) >= 1
    assert notes(reader) == ["first"]
    assert replica.follower is not None
    assert replica.follower.following is not None
    assert replica.follower.following.generation == writer.history.current().record.name  # type: ignore[union-attr]


def test_a_replica_follows_a_database_that_shrinks_and_the_file_stays_whole(make_engine: EngineFactory) -> None:
    writer = writer_with_notes(make_engine, *(f"{i:04d}" + "x" * 2000 for i in range(400)))
    replica = make_engine(replica=True).start()
    before = replica.database.path.stat().st_size
    write(writer, "DELETE FROM notes WHERE id > 10")
    write(writer, "VACUUM")
    writer.force_flush()
    poll(replica)
    assert replica.database.path.stat().st_size < before / 10
    assert notes(replica.connect()) == [f"{i:04d}" + "x" * 2000 for i in range(10)]
    assert replica.database.quick_check() == []


def test_a_replica_that_was_stopped_catches_up_through_merged_deltas(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    writer = writer_with_notes(make_engine, "0")
    host = tmp_path / "replica-host"
    make_engine(replica=True, local_dir=host).start().stop()
    for i in range(1, 3 * PROBE_LIMIT):
        write(writer, "INSERT INTO notes (body) VALUES (?)", str(i))
        writer.force_flush()
    replica = make_engine(replica=True, local_dir=host).start()  # goes on from where the file stood
    assert notes(replica.connect()) == [str(i) for i in range(3 * PROBE_LIMIT)]
    assert replica.follower is not None
    assert replica.follower.following is not None
    assert replica.follower.following.seq == 3 * PROBE_LIMIT - 1


def test_a_replica_follows_the_writer_that_takes_the_bucket_over(make_engine: EngineFactory) -> None:
    first = writer_with_notes(make_engine, "first host")
    replica = make_engine(replica=True).start()
    first.stop()
    second = make_engine().start()  # another host: it claims the bucket, and flushes a generation of its own
    write(second, "INSERT INTO notes (body) VALUES ('second host')")
    second.force_flush()
    poll(replica)
    assert notes(replica.connect()) == ["first host", "second host"]


def test_a_follower_killed_while_it_writes_leaves_a_file_readers_refuse_and_the_next_one_mends_it(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    writer = writer_with_notes(make_engine, *(f"{i:04d}" + "x" * 500 for i in range(200)))
    host = tmp_path / "replica-host"
    replica = make_engine(replica=True, local_dir=host).start()
    reader = replica.connect()
    write(writer, "UPDATE notes SET body = 'new ' || body")
    writer.force_flush()
    pid = os.fork()
    if pid == 0:  # the follower's process, killed with SIGKILL half-way through writing the delta's pages
        database = ReplicaDatabase(host, busy_timeout=5)

        def pages_then_die():
            yield 2, b"\x00" * 4096
            os.kill(os.getpid(), signal.SIGKILL)

        database._write(pages_then_die(), page_size=4096, db_pages=3, shrink_to=0)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        reader.execute("SELECT count(*) FROM notes").fetchone()
    # The process that takes the role over (as `_take_over` does, with readers on the file) mends it in place.
    assert replica.follower is not None
    replica.follower.attach(alone=False)
    assert notes(reader) == ["new " + f"{i:04d}" + "x" * 500 for i in range(200)]
    assert replica.database.quick_check() == []


def test_a_replica_of_an_empty_bucket_serves_an_empty_database_until_the_first_flush(
    make_engine: EngineFactory,
) -> None:
    replica = make_engine(replica=True).start()
    reader = replica.connect()
    tables = {row[0] for row in reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "notes" not in tables, "nothing of the site's yet"
    assert "bh_kv" in tables, "the interfaces' tables, so the cache and storage answer"
    assert replica.kv.get("anything") is None
    writer_with_notes(make_engine, "first")
    poll(replica)
    assert notes(reader) == ["first"]


def test_a_write_that_failed_half_way_is_mended_at_the_next_poll(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = writer_with_notes(make_engine, "first")
    replica = make_engine(replica=True).start()
    reader = replica.connect()
    write(writer, "INSERT INTO notes (body) VALUES ('second')")
    writer.force_flush()
    real_pwrite = os.pwrite
    calls = 0

    def full_after_the_first_write(fd: int, data: bytes, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_after_the_first_write)
    with pytest.raises(OSError, match="No space"):
        poll(replica)
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        notes(reader)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    poll(replica)
    assert notes(reader) == ["first", "second"]


def test_a_replica_keeps_serving_while_a_long_read_runs(make_engine: EngineFactory) -> None:
    writer = writer_with_notes(make_engine, "first")
    replica = make_engine(replica=True, busy_timeout=0.2).start()
    reader = replica.connect(autocommit=True)
    reader.execute("BEGIN")
    assert notes(reader) == ["first"]
    write(writer, "INSERT INTO notes (body) VALUES ('second')")
    writer.force_flush()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        poll(replica)  # the follower waits for running reads, and tries again at the next poll
    assert notes(reader) == ["first"], "a read transaction sees one state throughout"
    reader.execute("COMMIT")
    assert poll(replica) == 1
    assert notes(reader) == ["first", "second"]


def test_replica_flush_interval_is_the_default_poll(make_engine: EngineFactory) -> None:
    replica = make_engine(snapshot=SnapshotConfig(interval_seconds=7, min_interval_seconds=0), replica=True)
    assert replica.poll_seconds == 7
    assert make_engine(replica=True, poll_seconds=0.5).poll_seconds == 0.5


def test_a_replica_whose_deltas_were_thinned_away_meanwhile_loads_the_newest_point(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    # Every plain delta a merged one stands for is deleted at once: a point inside a run of 16 has no way forward.
    snapshot = SnapshotConfig(min_interval_seconds=0, keep_every_flush_seconds=0.001)
    writer = make_engine(snapshot=snapshot).start()
    write(writer, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    writer.force_flush()
    for i in range(5):
        write(writer, "INSERT INTO notes (body) VALUES (?)", str(i))
        writer.force_flush()
    host = tmp_path / "replica-host"
    make_engine(replica=True, local_dir=host).start().stop()  # it stands at point 5, inside the first run
    for i in range(5, 40):
        write(writer, "INSERT INTO notes (body) VALUES (?)", str(i))
        writer.force_flush()
    assert writer.history.store.head(writer.history.delta_key(writer.history.current().record.name, 6)) is None  # type: ignore[union-attr]
    replica = make_engine(replica=True, local_dir=host).start()
    assert notes(replica.connect()) == [str(i) for i in range(40)]


@pytest.mark.skipif(not SHM_ROOT.is_dir(), reason="needs a RAM-backed /dev/shm beside the temporary directory")
def test_a_replica_in_dev_shm_starts_while_the_temporary_directory_is_on_another_filesystem(
    make_engine: EngineFactory,
) -> None:
    writer = writer_with_notes(make_engine, "first")
    host = Path(tempfile.mkdtemp(prefix="bh-test-replica-", dir=SHM_ROOT))  # the default LOCAL_DIR's filesystem
    try:
        replica = make_engine(replica=True, local_dir=host, startup_timeout=1).start()
        assert notes(replica.connect()) == ["first"]
        writer.restore(writer.history.find("latest").name)  # a new generation: loaded beside the file too
        poll(replica)
        assert notes(replica.connect()) == ["first"]
        replica.stop()
    finally:
        shutil.rmtree(host, ignore_errors=True)
