"""The process engine: when it attaches, replicator and member, the read-only view, the test engine,
fresh_buckethead()."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from buckethead_django import get_buckethead, runtime
from buckethead_django.conf import get_settings
from buckethead_django.engine import (
    BucketConfig,
    BucketSQLite,
    BucketUnavailable,
    CurrentSnapshotCorrupt,
    History,
    ReadOnlyError,
    WriterConflict,
    WriterFenced,
    WriterLease,
)
from buckethead_django.engine.objectstore import open_object_store
from buckethead_django.roles import Decision, Role
from buckethead_django.testing import fresh_buckethead

from .moto_server import free_port
from .servers import STOPPED_LINE
from .snapshots import KEY, current_record


@pytest.fixture
def as_role(monkeypatch: pytest.MonkeyPatch):
    """Pretend this process was given ``role``; the real runtime state comes back afterwards."""

    def set_role(role: Role, reason: str = "`manage.py migrate` attaches on first use") -> None:
        monkeypatch.setattr(runtime, "_decision", Decision(role, False, reason))
        monkeypatch.setattr(runtime, "_engine", None)

    yield set_role
    engine = runtime._engine
    if engine is not None:
        engine.stop()


def seed(path: Path, **values: str) -> None:
    """Write KV entries as this project's server would, on a host of its own: signed with the key derived from
    SECRET_KEY."""
    key = get_settings().signing_keys()[0]
    with BucketSQLite(BucketConfig.local(path), signing_key=key, local_dir=path.parent / "seeding-host") as writer:
        for name, value in values.items():
            writer.kv.set(name, value)


def in_the_bucket(path: Path) -> BucketSQLite:
    """A read-only view of what the bucket at ``path`` holds (as a new host would restore it); changes nothing."""
    return BucketSQLite(BucketConfig.local(path), read_only_reason="checking the bucket")


def host_settings(tmp_path: Path, **extra: object) -> dict[str, object]:
    """BUCKETHEAD settings for this test's bucket, with this process's host database in ``tmp_path / "host"``."""
    return {"LOCAL_PATH": str(tmp_path / "bucket"), "LOCAL_DIR": str(tmp_path / "host"), **extra}


def another_hosts_lease(path: Path) -> None:
    """Make the bucket at ``path`` held by a live writer on another machine, web-2."""
    now = time.time()
    elsewhere = WriterLease("web-2:77", "web-2", 77, started_at=now - 60, renewed_at=now, expires_at=now + 300)
    open_object_store(BucketConfig.local(path)).put(f"{KEY}.lease", elsewhere.to_json())


def test_under_pytest_the_engine_is_a_throwaway_one(settings) -> None:
    assert runtime.role() is Role.TEST
    engine = get_buckethead()
    assert engine.config.local_path is not None
    assert "buckethead-test-" in str(engine.config.local_path)
    assert not engine.read_only
    engine.kv.set("test", "value")
    assert get_buckethead() is engine, "one engine per process"


def test_fresh_buckethead_isolates_a_block() -> None:
    outer = get_buckethead()
    outer.kv.set("outer", "1")
    with fresh_buckethead() as inner:
        assert get_buckethead() is inner
        assert inner.kv.get("outer") is None
        inner.kv.set("inner", "1")
    assert get_buckethead() is outer
    assert outer.kv.get("inner") is None
    assert not inner.started


def test_a_test_process_whose_role_django_never_decided_still_gets_a_throwaway_engine(
    as_role, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without ``ready()`` (the app not in INSTALLED_APPS, or a call before setup), tests never read the bucket."""
    seed(tmp_path / "bucket", real="data")
    as_role(Role.IDLE)
    monkeypatch.setattr(runtime, "_decision", None)
    with override_settings(BUCKETHEAD={"LOCAL_PATH": str(tmp_path / "bucket"), "AUTOSTART": True}):
        engine = get_buckethead()
    assert runtime.role() is Role.TEST
    assert "buckethead-test-" in str(engine.config.local_path)
    assert engine.kv.get("real") is None, "the configured bucket was not even read"
    engine.kv.set("real", "overwritten by a test")
    engine.force_flush()
    with in_the_bucket(tmp_path / "bucket") as check:
        assert check.kv.get("real") == "data"


@fresh_buckethead()
def test_fresh_buckethead_as_a_decorator() -> None:
    assert len(get_buckethead().kv) == 0


def test_a_process_on_another_host_gets_the_latest_snapshot_read_only_with_lease_conflict_read_only(
    as_role, tmp_path: Path
) -> None:
    seed(tmp_path / "bucket", greeting="hello")
    another_hosts_lease(tmp_path / "bucket")
    as_role(Role.PROCESS)
    with override_settings(BUCKETHEAD=host_settings(tmp_path, LEASE_WAIT=0.2, LEASE_CONFLICT="read-only")):
        engine = get_buckethead()
    assert engine.read_only
    assert engine.role == "read-only"
    assert engine.kv.get("greeting") == "hello"
    with pytest.raises(ReadOnlyError, match=r"read-only on this host: .* held by another writer, web-2:77") as err:
        engine.kv.set("greeting", "changed")
    assert "its writes are refused" in str(err.value)
    runtime.stop()
    with in_the_bucket(tmp_path / "bucket") as check:
        assert check.kv.get("greeting") == "hello", "the read-only process changed nothing in the bucket"


def test_a_process_on_the_hosts_of_a_running_replicator_is_a_member_that_reads_and_writes(
    as_role, tmp_path: Path, caplog
) -> None:
    seed(tmp_path / "bucket", greeting="hello")
    with BucketSQLite(BucketConfig.local(tmp_path / "bucket"), local_dir=tmp_path / "host") as server:
        as_role(Role.PROCESS)
        with override_settings(BUCKETHEAD=host_settings(tmp_path, MIN_FLUSH_INTERVAL=0)):
            engine = get_buckethead()
        assert (engine.role, engine.read_only) == ("member", False)
        assert engine.kv.get("greeting") == "hello"
        engine.kv.set("greeting", "changed by a command")
        assert server.kv.get("greeting") == "changed by a command", "one database for every process of the host"
        assert engine.force_flush().uploaded, "the replicator shipped it when asked"
        with caplog.at_level(logging.INFO, logger="buckethead_django"):
            runtime.stop()
        (line,) = [r.getMessage() for r in caplog.records if r.name == "buckethead_django"]
        assert line.startswith("BucketHead left the host's database in pid ")
        assert "the host's replicator (pid " in line
        assert "ships what it changed" in line
        assert server.started, "the replicator goes on"
        with in_the_bucket(tmp_path / "bucket") as check:
            assert check.kv.get("greeting") == "changed by a command"


def test_a_member_of_a_fenced_host_says_its_changes_are_not_shipped(as_role, tmp_path: Path, caplog) -> None:
    seed(tmp_path / "bucket", who="first")
    config = BucketConfig.local(tmp_path / "bucket")
    with BucketSQLite(config, background_flush=False, local_dir=tmp_path / "host") as server:
        as_role(Role.PROCESS)
        with override_settings(BUCKETHEAD=host_settings(tmp_path)):
            engine = get_buckethead()
        assert engine.role == "member"
        with BucketSQLite(config, background_flush=False, local_dir=tmp_path / "another-host"):
            engine.kv.set("who", "stale")
            with pytest.raises(WriterFenced):
                server.force_flush()
            assert isinstance(engine.fenced, WriterFenced), "a member knows from what the replicator announced"
            with caplog.at_level(logging.INFO, logger="buckethead_django"):
                runtime.stop()
    (line,) = [r for r in caplog.records if r.name == "buckethead_django"]
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith("BucketHead left the host's database in pid ")
    assert "without shipping: another writer had taken the bucket over" in line.getMessage()
    for path in re.findall(r"is saved in (\S+\.db)", caplog.text):  # the fenced replicator's copy, made at its stop
        Path(path).unlink(missing_ok=True)
    with in_the_bucket(tmp_path / "bucket") as check:
        assert check.kv.get("who") == "first", "the stale write never reached the bucket"


def test_a_configured_server_attaches_at_configure(as_role, tmp_path: Path) -> None:
    seed(tmp_path / "bucket", k="v")
    as_role(Role.IDLE)
    with override_settings(BUCKETHEAD=host_settings(tmp_path)):
        runtime.configure(Decision(Role.SERVER, True, "test"))
    engine = runtime._engine
    assert engine is not None
    assert engine.started
    assert (engine.role, engine.read_only) == ("replicator", False), "the host's first process"
    assert engine.restored_from is not None, "a new host restores the bucket's current generation"
    engine.kv.set("k", "changed")
    runtime.stop()
    with in_the_bucket(tmp_path / "bucket") as check:
        assert check.kv.get("k") == "changed", "stop() made the replicator's final flush"


def test_configuration_errors_surface_when_the_engine_is_used(as_role) -> None:
    as_role(Role.PROCESS)
    with override_settings(BUCKETHEAD={"BACKEND": "s3"}), pytest.raises(ImproperlyConfigured, match="BUCKET"):
        get_buckethead()


def test_a_server_is_not_started_over_configuration_errors(as_role, caplog) -> None:
    as_role(Role.IDLE)
    with override_settings(BUCKETHEAD={"BACKEND": "nope"}):
        runtime.configure(Decision(Role.SERVER, True, "test"))
    assert runtime._engine is None
    assert "manage.py check" in caplog.text


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_use_the_parents_engine(tmp_path: Path) -> None:
    import os

    parent_engine = get_buckethead()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            child_engine = get_buckethead()
            os.write(write, b"fresh" if child_engine is not parent_engine else b"inherited")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"fresh"


# -- a writer that cannot start fails loudly, and never serves an empty database ------------------------


def start_server(bucket_settings: dict) -> None:
    with override_settings(BUCKETHEAD=bucket_settings):
        runtime.configure(Decision(Role.SERVER, True, "`runserver` serves requests"))


def test_a_server_over_a_damaged_current_snapshot_does_not_start(as_role, tmp_path: Path, caplog) -> None:
    seed(tmp_path / "bucket", k="good")
    seed(tmp_path / "bucket", k="newer")
    store = open_object_store(BucketConfig.local(tmp_path / "bucket"))
    good, damaged = [r.name for r in History(store, KEY).records("generation")][::-1]
    store.put(f"{KEY}.generations/{damaged}.chunk0000", b"SQLite format 3\x00 but not really")
    as_role(Role.IDLE)
    with caplog.at_level(logging.ERROR, logger="buckethead_django"), pytest.raises(CurrentSnapshotCorrupt) as error:
        start_server(host_settings(tmp_path))
    assert error.value.restorable == good
    assert runtime._engine is None, "nothing was started, so nothing empty can be served or flushed"
    (record,) = [r for r in caplog.records if r.name == "buckethead_django"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("BucketHead could not start in pid ")
    assert "so this process does not serve" in record.getMessage()
    assert f"`python manage.py buckethead restore {good}`" in record.getMessage()
    assert current_record(store, KEY).name == damaged, "nothing in the bucket was changed"


def test_a_server_does_not_start_while_another_host_holds_the_bucket(as_role, tmp_path: Path, caplog) -> None:
    seed(tmp_path / "bucket", k="v")
    another_hosts_lease(tmp_path / "bucket")
    as_role(Role.IDLE)
    with caplog.at_level(logging.ERROR, logger="buckethead_django"), pytest.raises(WriterConflict):
        start_server(host_settings(tmp_path, LEASE_WAIT=0.5))
    assert runtime._engine is None
    assert "held by another writer, web-2:77" in caplog.text
    assert "this process gave up after waiting 0.5s" in caplog.text


def test_a_server_does_not_start_without_its_bucket(as_role, caplog, tmp_path: Path) -> None:
    as_role(Role.IDLE)
    unreachable = {
        "BACKEND": "s3",
        "BUCKET": "nowhere",
        "ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": "id",
        "SECRET_ACCESS_KEY": "secret",
        "MAX_ATTEMPTS": 1,
        "CONNECT_TIMEOUT": 1,
        "STARTUP_TIMEOUT": 1,
        "LOCAL_DIR": str(tmp_path / "host"),
    }
    with caplog.at_level(logging.ERROR, logger="buckethead_django"), pytest.raises(BucketUnavailable):
        start_server(unreachable)
    assert runtime._engine is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "buckethead_django"]
    assert len(errors) == 1
    assert "could not reach bucket 'nowhere'" in errors[0]
    assert "STARTUP_TIMEOUT" in errors[0]


# -- the last log line of a process says what its stop did to the bucket --------------------------------


def stop_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "buckethead_django" and "BucketHead stopped" in r.getMessage()]


def saved_copies(caplog: pytest.LogCaptureFixture) -> list[Path]:
    """The local database files the log says were written (removed by the caller)."""
    return [Path(p) for p in re.findall(r"saved in (\S+\.db)", caplog.text)]


def test_a_replicator_logs_what_its_final_flush_uploaded(as_role, tmp_path: Path, caplog) -> None:
    as_role(Role.IDLE)
    with override_settings(BUCKETHEAD=host_settings(tmp_path)):
        runtime.configure(Decision(Role.SERVER, True, "test"))
        runtime._engine.kv.set("k", "v")
        with caplog.at_level(logging.INFO, logger="buckethead_django"):
            runtime.stop()
        (line,) = stop_lines(caplog)
        assert STOPPED_LINE.search(line.getMessage())
        written = current_record(open_object_store(BucketConfig.local(tmp_path / "bucket")), KEY)
        assert f"bytes as snapshot {written.name})" in line.getMessage()

        caplog.clear()
        runtime.configure(Decision(Role.SERVER, True, "test"))
        with caplog.at_level(logging.INFO, logger="buckethead_django"):
            runtime.stop()
        (line,) = stop_lines(caplog)
        assert STOPPED_LINE.search(line.getMessage())
        assert "nothing had changed since the last snapshot" in line.getMessage()


def fenced_writer(tmp_path: Path) -> tuple[BucketSQLite, BucketSQLite]:
    """This process's engine, its host's replicator, and one on another host that has taken the bucket over since
    its last flush."""
    with override_settings(BUCKETHEAD=host_settings(tmp_path)):
        runtime.configure(Decision(Role.SERVER, True, "test"))
    engine = runtime._engine
    assert engine is not None
    engine.kv.set("who", "first")
    engine.force_flush()
    successor = BucketSQLite(
        BucketConfig.local(tmp_path / "bucket"), background_flush=False, local_dir=tmp_path / "another-host"
    ).start()
    engine.kv.set("who", "stale")
    return engine, successor


def test_a_fenced_writer_does_not_claim_a_final_flush_at_stop(as_role, tmp_path: Path, caplog) -> None:
    as_role(Role.IDLE)
    engine, successor = fenced_writer(tmp_path)
    with pytest.raises(WriterFenced):
        engine.force_flush()
    try:
        with caplog.at_level(logging.INFO, logger="buckethead_django"):
            runtime.stop()
        (line,) = stop_lines(caplog)
        assert not STOPPED_LINE.search(line.getMessage()), line.getMessage()
        assert line.levelno == logging.WARNING
        assert line.getMessage().startswith("BucketHead stopped in pid ")
        assert "without a final flush: another writer had taken the bucket over" in line.getMessage()
        assert "sets its copy aside" in line.getMessage(), "it says what the host's next start does"
        (saved,) = saved_copies(caplog)
        with contextlib.closing(sqlite3.connect(saved)) as copy:
            (value,) = copy.execute("SELECT value FROM bh_kv WHERE key = 'who'").fetchone()
        assert value == b"stale", "the local file it points to holds what the bucket does not"
    finally:
        successor.stop()
        for path in saved_copies(caplog):
            path.unlink()


def test_a_writer_fenced_during_its_final_flush_says_the_bucket_was_taken_over(as_role, tmp_path: Path, caplog) -> None:
    as_role(Role.IDLE)
    engine, successor = fenced_writer(tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="buckethead_django"), pytest.raises(WriterFenced):
            runtime.stop()
        errors = [r.getMessage() for r in caplog.records if r.name == "buckethead_django"]
        assert stop_lines(caplog) == []
        (refused,) = [m for m in errors if m.startswith("BucketHead's final flush in pid")]
        assert "was refused: another writer has taken the bucket over" in refused
        assert "Once the bucket is back" not in refused, "the bucket is not down: someone else writes it"
        (saved,) = saved_copies(caplog)
        assert f"buckethead restore --file {saved}" in refused
        engine.stop()  # fenced now: it keeps its database in a second local file
    finally:
        successor.stop()
        for path in saved_copies(caplog):
            path.unlink()
    with in_the_bucket(tmp_path / "bucket") as check:
        assert check.kv.get("who") == "first", "the stale write never reached the bucket"
