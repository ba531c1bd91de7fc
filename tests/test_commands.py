"""``manage.py buckethead``: what the operator sees, and what changes in the bucket.

A command is a process of the site like any other: on the writer host it
attaches to the host's database (as its replicator when no server runs
there, else as a member) and reads and writes it; while a writer on another
host holds the bucket it reads a copy of the latest snapshot and refuses
every change. In-process tests run against a local directory and the moto
server, the process playing a command (`Role.PROCESS`, its host in a
directory of the test) or a server's process (the engine of the test run).
Engines of `make_engine` and `server_engine` are processes of other hosts,
unless given the command's host directory. Real processes check exit
statuses, one-line errors, and commands beside a real server on its host
and on another.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper

from buckethead_django import runtime
from buckethead_django.conf import get_settings
from buckethead_django.engine import BucketConfig, BucketSQLite, WriterFenced, WriterLease
from buckethead_django.engine.lease import lease_key
from buckethead_django.engine.objectstore import open_object_store
from buckethead_django.management import display
from buckethead_django.management.progress import MIN_BYTES, ProgressBar
from buckethead_django.roles import Decision, Role
from buckethead_django.testing import fresh_buckethead

from .commands_helpers import (
    SECRET,
    Terminal,
    bucket_state,
    call,
    call_json,
    damage_current,
    django_database,
    entries,
    env_for,
    error_lines,
    kv_in_bucket,
    lease_in,
    other_host_holds,
    query_bucket,
    run,
    seed,
    server_engine,
    settings_for,
    signing,
    sqlite_file,
)
from .conftest import EngineFactory, s3_config
from .moto_server import free_port
from .servers import EXAMPLE, Server, manage
from .snapshots import current_record, snapshot_bytes

WRITER_RUNNING = 3
HERE = socket.gethostname()


@pytest.fixture
def command_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """This process plays a ``manage.py buckethead`` process; its host's database is in the returned directory."""
    monkeypatch.setattr(
        runtime, "_decision", Decision(Role.PROCESS, False, "`manage.py buckethead` attaches on first use")
    )
    monkeypatch.setattr(runtime, "_engine", None)
    yield tmp_path / "command-host"
    runtime.stop()


@pytest.fixture
def command(command_host: Path, bucket_config: BucketConfig, settings) -> BucketConfig:
    """A command process whose BUCKETHEAD setting points at the test's bucket (local, or on moto), on its host."""
    settings.BUCKETHEAD = {**settings_for(bucket_config), "LOCAL_DIR": str(command_host)}
    return bucket_config


@pytest.fixture
def host_server(command: BucketConfig, command_host: Path, make_engine: EngineFactory) -> BucketSQLite:
    """A server's process on the command's host: the host's replicator, whose loop answers flush requests."""
    return make_engine(local_dir=command_host, background_flush=True, **signing()).start()


@pytest.fixture
def writer(bucket_config: BucketConfig, settings, tmp_path: Path) -> Iterator[BucketSQLite]:
    """This process is a server's, as with ``BUCKETHEAD['AUTOSTART'] = True``: the host's replicator."""
    settings.BUCKETHEAD = settings_for(bucket_config)
    with fresh_buckethead(bucket_config, local_dir=tmp_path / "server-host") as engine:
        yield engine


def refusal(*args: str, stdin: str | None = None) -> CommandError:
    with pytest.raises(CommandError) as info:
        call(*args, stdin=stdin)
    return info.value


# -- status ------------------------------------------------------------------------------------


def test_status_shows_where_state_lives_the_latest_snapshot_the_host_and_the_role_never_a_secret(
    command: BucketConfig, command_host: Path
) -> None:
    seed(command, greeting="hello")
    latest = current_record(open_object_store(command), command.key)
    assert latest is not None

    out = call("status").out
    assert (str(command.local_path) if command.is_local else f"bucket {command.bucket!r}") in out
    assert f"Snapshot key     {command.key}" in out
    assert re.search(
        rf"Latest snapshot  generation {latest.name} \(current\), \d+\.\d KB, written "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((just now|\d+ seconds? ago)\)",
        out,
    ), out
    assert f"                 signed, sha256 {latest.sha256}\n" in out
    assert (
        "Generations      1 in the bucket; retention keeps the newest 24, any younger than 1 day, the newest of each "
        "of 30 days (every flush of the last 1 hour a point, and every labelled snapshot)"
    ) in out
    # No server runs on the command's host: the command is the host's replicator while it runs.
    assert f"Writer           this process (the host's replicator): {HERE}:{os.getpid()}, running since " in out
    assert f"Replicator       {HERE}:{os.getpid()} (this process), running since " in out
    assert "Health           ok\n" in out
    assert (
        f"This process     pid {os.getpid()}, replicator (`manage.py buckethead` attaches on first use): no other "
        "process of the site runs on this host" in out
    )
    assert f"Host database    {command_host / 'buckethead.sqlite3'}\n" in out
    assert re.search(
        r"\n                 \S+, (in RAM|on disk, not in RAM .*); chosen: configured \(LOCAL_DIR\)\n", out
    )
    assert re.search(r"Database         [\d.]+ KB, 1 KV entries, 0 files", out)
    assert "SET ASIDE" not in out

    data = call_json("status")
    assert data["backend"] == ("local" if command.is_local else "s3")
    assert data["latest_snapshot"]["name"] == latest.name
    assert data["latest_snapshot"]["size"] == latest.size
    assert data["latest_snapshot"]["sha256"] == latest.sha256
    assert (data["latest_snapshot"]["current"], data["latest_snapshot"]["signed"]) == (True, True)
    assert data["generations"] == {
        "count": 1,
        "keep_snapshots": 24,
        "keep_snapshots_max_age": 86400.0,
        "keep_every_flush": 3600.0,
        "keep_daily": 30,
        "keep_previous": True,
    }, "a command that changed nothing shipped nothing"
    assert data["health"]["status"] == "ok"
    assert data["process"] == {
        "pid": os.getpid(),
        "role": "replicator",
        "reason": "`manage.py buckethead` attaches on first use",
        "not_attached": None,
        "writes": True,
    }
    replicator = data["replicator"]
    assert (replicator["host"], replicator["pid"], replicator["this_process"]) == (HERE, os.getpid(), True)
    assert (replicator["running"], replicator["ready"]) == (True, True)
    assert (data["writer"]["this_process"], data["writer"]["this_host"]) == (True, True)
    local = data["host_database"]
    assert (local["path"], local["directory"]) == (str(command_host / "buckethead.sqlite3"), str(command_host))
    assert local["reason"] == "configured (LOCAL_DIR)"
    assert local["filesystem"]
    assert local["ram_backed"] is (local["filesystem"] in ("tmpfs", "ramfs"))
    assert data["set_aside"] == []
    assert data["database"]["kv_entries"] == 1
    assert SECRET not in out + json.dumps(data)
    assert lease_in(command) is None, "the command released the bucket when it exited"


def test_status_names_a_writer_on_another_host_and_does_not_attach(
    command: BucketConfig, make_engine: EngineFactory
) -> None:
    server = make_engine().start()  # a process of another host: its own host directory
    holder = f"{HERE}:{os.getpid()}"
    out = call("status").out
    assert f"Writer           another host: {holder}, running since " in out
    assert re.search(
        r"This process     pid \d+, not attached to the host's database \(.*\): a live writer on "
        rf"another host holds the bucket \({holder}\)",
        out,
    ), out
    assert "Replicator       none yet: no process of the site has run on this host" in out
    assert "Health" not in out, "this host is not the writer host: it has no replication to report on"
    data = call_json("status")
    writer = data["writer"]
    assert (writer["holder"], writer["live"], writer["this_process"], writer["this_host"]) == (
        holder, True, False, False,
    )  # fmt: skip
    assert (data["process"]["role"], data["process"]["writes"], data["replicator"]) == (None, False, None)
    assert "another host holds the bucket" in data["process"]["not_attached"]
    assert data["database"] is None
    assert lease_in(command).same_holder(server.lease), "the command took nothing over"
    server.stop()
    assert call_json("status")["writer"]["this_process"], "once that host let go, the command's host writes"


def test_an_expired_lease_does_not_hold_the_bucket(command: BucketConfig) -> None:
    seed(command, k="v")
    now = time.time()
    crashed = WriterLease("gone:1", "gone", 1, started_at=now - 4000, renewed_at=now - 1200, expires_at=now - 900)
    open_object_store(command).put(lease_key(command.key), crashed.to_json())
    out = call("status").out
    assert re.search(
        r"Writer           this process \(the host's replicator\): .*; it took over the lease of gone:1, which had "
        r"expired 15 minutes ago without being released \(that process stopped abruptly\)",
        out,
    ), out
    call("kv", "set", "k", "after the crash")
    assert kv_in_bucket(command) == {"k": "after the crash"}


def test_status_says_when_a_lease_expired_and_nothing_could_take_it(command: BucketConfig) -> None:
    seed(command, k="v")
    damage_current(command)  # so no engine starts, and the expired lease stays as it was
    now = time.time()
    crashed = WriterLease("gone:1", "gone", 1, started_at=now - 4000, renewed_at=now - 1200, expires_at=now - 900)
    open_object_store(command).put(lease_key(command.key), crashed.to_json())
    out = call("status").out
    assert "Writer           none live: the lease of gone:1 expired 15 minutes ago without being released" in out
    assert re.search(
        r"This process     pid \d+, not attached to the host's database \(.*\): .*failed verification", out
    )
    data = call_json("status")
    assert (data["writer"]["live"], data["process"]["role"]) == (False, None)


def test_status_in_a_servers_process_shows_its_own_lease_and_database(writer: BucketSQLite) -> None:
    writer.kv.set("a", "1")
    out = call("status").out
    assert "Writer           this process (the host's replicator): " in out
    assert "Replicator       " in out
    assert " (this process), running since " in out
    assert "Health           ok\n" in out
    assert re.search(r"Database         [\d.]+ KB, 1 KV entries, 0 files", out)
    data = call_json("status")
    assert (data["process"]["writes"], data["process"]["role"]) == (True, "replicator")
    assert data["host_database"]["directory"] == str(writer.local.path)
    assert (data["health"]["status"], data["health"]["fenced"], data["health"]["last_error"]) == ("ok", None, None)


def test_status_beside_a_server_on_its_host_names_the_servers_replicator(
    host_server: BucketSQLite, command: BucketConfig
) -> None:
    out = call("status").out
    assert f"Writer           this host's replicator: {HERE}:{os.getpid()}, running since " in out
    assert re.search(rf"Replicator       {HERE}:{os.getpid()}, running since ", out), "not this process: the server"
    assert "This process     pid " in out
    assert ", member (`manage.py buckethead` attaches on first use): it shares the host's database" in out
    data = call_json("status")
    assert data["process"]["role"] == "member"
    assert (data["replicator"]["pid"], data["replicator"]["this_process"]) == (os.getpid(), False)
    assert (data["writer"]["this_process"], data["writer"]["this_host"]) == (False, True)
    assert lease_in(command).same_holder(host_server.lease), "the server keeps the bucket"


def test_status_shows_copies_set_aside_loudly(command: BucketConfig, command_host: Path) -> None:
    seed(command, k="in the bucket")
    command_host.mkdir(parents=True)
    sqlite_file(
        command_host / "buckethead.sqlite3", "CREATE TABLE brought_along (x); INSERT INTO brought_along VALUES (1);"
    )
    terminal = Terminal()
    out = call("status", stderr=terminal).out
    match = re.search(
        r"\nSET ASIDE        1 copy of the host's database, kept when the bucket's generation was "
        r"restored in their place:\n                 (/\S+): no replicator of this bucket recorded what "
        r"it holds\n",
        out,
    )
    assert match, out
    assert "restore it (`manage.py buckethead restore --file PATH`) if it holds what you need" in out
    copy = Path(match[1])
    assert copy.parent == command_host / "set-aside"
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT x FROM brought_along").fetchall() == [(1,)]
    data = call_json("status")
    assert data["set_aside"] == [{"path": str(copy), "why": "no replicator of this bucket recorded what it holds"}]
    assert call("kv", "get", "k").out == "in the bucket\n", "the bucket's generation was restored in its place"


def test_status_shows_the_retention_settings_and_a_legacy_snapshot(command: BucketConfig, settings) -> None:
    settings.BUCKETHEAD = {**settings.BUCKETHEAD, "KEEP_SNAPSHOTS": 3, "KEEP_SNAPSHOTS_MAX_AGE": 86400}
    database = sqlite3.connect(":memory:")
    database.execute("CREATE TABLE t (x)")
    open_object_store(command).put(command.key, database.serialize())  # what buckethead 0.4.x leaves in a bucket
    out = call("status").out
    assert "Latest snapshot  legacy: a buckethead 0.4.x snapshot, which the next writer adopts, " in out
    assert "                 unsigned\n" in out
    assert "Generations      0 in the bucket; retention keeps the newest 3, any younger than 1 day" in out
    data = call_json("status")
    assert (data["latest_snapshot"]["kind"], data["latest_snapshot"]["signed"]) == ("legacy", False)
    assert (data["generations"]["keep_snapshots"], data["generations"]["keep_snapshots_max_age"]) == (3, 86400.0)
    lines = call("history").out.splitlines()
    assert lines[1].split()[:2] == ["legacy", "legacy"]
    assert lines[1].split()[-2:] == ["-", "unsigned"], "0.4.x stored no checksum and no signature"


def test_status_says_when_the_writer_is_degraded_and_how_old_the_bucket_copy_is(
    writer: BucketSQLite, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.kv.set("k", "1")
    writer.force_flush()
    writer.kv.set("k", "2")

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise OSError("the bucket is unreachable")

    monkeypatch.setattr(writer.store, "put", unreachable)
    with pytest.raises(OSError, match="unreachable"):
        writer.force_flush()
    out = call("status").out
    assert re.search(
        r"Health           degraded: the last flush failed \(the bucket is unreachable\); the bucket's copy is "
        r"from (just now|\d+ seconds? ago)\n",
        out,
    ), out
    health = call_json("status")["health"]
    assert (health["status"], health["last_error"], health["fenced"]) == ("degraded", "the bucket is unreachable", None)
    assert 0 <= health["last_good_snapshot_age_seconds"] < 30
    monkeypatch.undo()
    writer.force_flush()
    assert "Health           ok\n" in call("status").out, "the next flush that succeeds clears it"


def test_status_says_when_another_writer_has_fenced_this_one_off(
    writer: BucketSQLite, bucket_config: BucketConfig, tmp_path: Path
) -> None:
    writer.kv.set("k", "mine")
    writer.force_flush()
    with BucketSQLite(bucket_config, background_flush=False, local_dir=tmp_path / "other-host") as other:
        writer.kv.set("k", "lost")
        with pytest.raises(WriterFenced):
            writer.force_flush()
        out = call("status").out
        assert re.search(r"Health           FENCED: .* has taken over .* as its writer, so this host", out), out
        assert "Writer           another host: " in out
        health = call_json("status")["health"]
        assert health["status"] == "failing"
        assert "stopped shipping" in health["fenced"]
        other.kv.set("k", "theirs")
    assert kv_in_bucket(bucket_config) == {"k": "theirs"}, "the fenced writer never rolled the bucket back"


# -- snapshot and history -------------------------------------------------------------------------


def test_snapshot_in_a_servers_process_flushes_its_database(writer: BucketSQLite, bucket_config: BucketConfig) -> None:
    writer.kv.set("k", "not flushed yet")
    out = call("snapshot").out
    assert "Flushed the host's database to " in out
    assert kv_in_bucket(bucket_config) == {"k": "not flushed yet"}
    label = re.search(r"kept it as snapshot '(manual-[^']+)'", out)
    assert label, out
    assert kv_in_bucket(bucket_config, label[1]) == {"k": "not flushed yet"}

    writer.kv.set("k", "labelled")
    assert "snapshot 'before-upgrade'" in call("snapshot", "--label", "before-upgrade").out
    assert kv_in_bucket(bucket_config, "before-upgrade") == {"k": "labelled"}


def test_snapshot_beside_a_server_on_its_host_flushes_the_shared_database(
    host_server: BucketSQLite, command: BucketConfig
) -> None:
    host_server.kv.set("k", "written by the server, not flushed yet")
    data = call_json("snapshot", "--label", "with-the-server")
    assert data["flushed"] is True
    assert kv_in_bucket(command, "with-the-server") == {"k": "written by the server, not flushed yet"}
    assert data["source"]["name"] == current_record(open_object_store(command), command.key).name


def test_snapshot_beside_a_writer_on_another_host_copies_the_latest_durable_one(
    command: BucketConfig, make_engine: EngineFactory
) -> None:
    seed(command, k="durable")
    server = make_engine(**signing()).start()
    server.kv.set("k", "only in the other host's database")
    before = bucket_state(command)

    out = call("snapshot", "--label", "nightly").out
    assert re.search(r"A live writer on another host holds the bucket \(.+\).*written (just now|\d+ seconds? ago)", out)
    assert "not flushed since then are not in it" in out
    assert kv_in_bucket(command, "nightly") == {"k": "durable"}
    assert {k: v for k, v in bucket_state(command).items() if "nightly" not in k} == before, "only a copy was added"
    data = call_json("snapshot", "--label", "nightly-2")
    assert (data["flushed"], data["writer"]["this_host"]) == (False, False)

    server.stop()
    assert kv_in_bucket(command) == {"k": "only in the other host's database"}, "its data was not overwritten"


def test_labelled_snapshots_outlive_later_flushes(command: BucketConfig, settings) -> None:
    settings.BUCKETHEAD = {**settings.BUCKETHEAD, "KEEP_SNAPSHOTS": 2, "KEEP_SNAPSHOTS_MAX_AGE": None, "KEEP_DAILY": 0}
    seed(command, k="v1")
    first = current_record(open_object_store(command), command.key)
    data = call_json("snapshot")
    label = data["snapshot"]["name"]
    assert re.fullmatch(r"manual-\d{8}T\d{6}Z-[0-9a-f]{4}", label)
    assert (data["flushed"], data["source"]["name"], data["source"]["current"]) == (True, first.name, True)
    assert (data["snapshot"]["kind"], data["snapshot"]["signed"]) == ("labelled", True)
    for value in ("v2", "v3", "v4"):
        with server_engine(command, snapshot_config=get_settings().snapshot_config()) as server:
            server.kv.set("k", value)
    history = call_json("history")
    assert [e["kind"] for e in history] == ["generation", "generation", "labelled"], "retention kept the newest two"
    assert first.name not in [e["name"] for e in history]
    assert history[-1]["name"] == label
    assert kv_in_bucket(command, label) == {"k": "v1"}


def test_snapshot_refuses_a_bad_or_taken_label_and_an_empty_bucket(command: BucketConfig) -> None:
    assert "there is nothing to snapshot" in str(refusal("snapshot"))
    assert entries(command) == []
    seed(command, k="v")
    call("snapshot", "--label", "keep")
    before = bucket_state(command)
    assert "already exists" in str(refusal("snapshot", "--label", "keep"))
    assert "is not valid" in str(refusal("snapshot", "--label", "../etc"))
    assert "is not valid" in str(refusal("snapshot", "--label", "latest"))
    assert bucket_state(command) == before


def test_history_lists_every_restorable_snapshot(command: BucketConfig) -> None:
    assert "No snapshots yet in " in call("history").out
    seed(command, k="1")
    seed(command, k="2")
    call("snapshot", "--label", "release-1.2")
    newest, older = (e for e in entries(command) if e.kind == "generation")
    result = call("history")
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SIZE", "WRITTEN", "SHA256", "SIGNATURE"]
    rows = [line.split() for line in lines[1:]]
    assert [(row[0], row[1], row[-2], row[-1]) for row in rows] == [
        (newest.name, "current", newest.sha256[:12], "signed"),
        (older.name, "generation", older.sha256[:12], "signed"),
        ("release-1.2", "labelled", newest.sha256[:12], "signed"),
    ]
    assert "`latest` names the current generation and `previous` the one before it" in result.err
    data = call_json("history")
    assert [e["name"] for e in data] == [newest.name, older.name, "release-1.2"]
    assert [e["current"] for e in data] == [True, False, False]
    assert data[0]["key"] == f"{command.key}.generations/{newest.name}.json"
    assert data[2]["key"] == f"{command.key}.labels/release-1.2.json"
    assert all(e["size"] > 0 and e["last_modified"] and e["signed"] and len(e["sha256"]) == 64 for e in data)


# -- restore -----------------------------------------------------------------------------------


def test_restore_a_snapshot_keeps_the_state_it_replaces(command: BucketConfig) -> None:
    seed(command, k="old")
    seed(command, k="new")
    out = call("restore", "previous", "--yes").out
    assert "Restored snapshot 'previous'" in out
    assert kv_in_bucket(command) == {"k": "old"}
    kept = re.search(r"kept as snapshot '(pre-restore-[^']+)'; to undo: manage.py buckethead restore \1", out)
    assert kept, out
    assert kv_in_bucket(command, kept[1]) == {"k": "new"}

    call("restore", kept[1], "--yes")
    assert kv_in_bucket(command) == {"k": "new"}, "the restore was undone"
    assert call("kv", "get", "k").out == "new\n"
    assert lease_in(command) is None, "the command released the bucket when it exited"


def test_restore_from_a_local_sqlite_file(command: BucketConfig, tmp_path: Path) -> None:
    elsewhere = BucketConfig.local(tmp_path / "elsewhere")
    seed(elsewhere, k="from the file")
    copy = tmp_path / "copy.db"
    copy.write_bytes(snapshot_bytes(open_object_store(elsewhere)))
    seed(command, k="live")
    data = call_json("restore", "--file", str(copy), "--yes")
    assert data["from"] == "file"
    assert data["current"]["signed"], "the restored file is signed as it becomes a generation"
    assert data["kept"]["name"].startswith("pre-restore-")
    assert kv_in_bucket(command) == {"k": "from the file"}
    assert kv_in_bucket(command, data["kept"]["name"]) == {"k": "live"}


def test_restore_validates_first_and_changes_nothing_on_bad_input(command: BucketConfig, tmp_path: Path) -> None:
    seed(command, k="v")
    seed(command, k="w")
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello")
    truncated = tmp_path / "truncated.db"
    good = snapshot_bytes(open_object_store(command))
    truncated.write_bytes(good[: len(good) // 2])
    call("snapshot", "--label", "broken")
    open_object_store(command).put(f"{command.key}.labels/broken.chunk0000", b"SQLite format 3\x00" + b"\x00" * 4000)
    project_keys = get_settings().signing_keys()
    with server_engine(command, signing_key=b"another project's key", verify_keys=project_keys) as stranger:
        stranger.snapshot("forged")  # a snapshot this project's key did not sign
    names = ", ".join(e.name for e in entries(command))
    before = bucket_state(command)

    cases = [
        (["--file", str(not_sqlite)], "notes.txt is not a valid SQLite database (it does not start with the SQLite"),
        (["--file", str(truncated)], "truncated.db is not a valid SQLite database"),
        (["--file", str(tmp_path / "missing.db")], "cannot read"),
        (["broken"], "cannot be restored: it failed verification (its content does not match its record: 4016 bytes"),
        (["forged"], "cannot be restored: it failed verification (its HMAC does not match"),
        (["nope"], f"; restorable snapshots: {names}"),
        ([], "give either the name of a snapshot"),
        (["latest", "--file", str(not_sqlite)], "give either the name of a snapshot"),
    ]
    for args, message in cases:
        error = refusal("restore", *args, "--yes")
        assert message in str(error), (args, str(error))
        assert "\n" not in str(error)
    assert "Nothing was changed" in str(refusal("restore", "broken", "--yes"))
    assert bucket_state(command) == before
    assert kv_in_bucket(command) == {"k": "w"}


def test_restore_asks_for_confirmation(command: BucketConfig) -> None:
    seed(command, k="old")
    seed(command, k="new")
    before = bucket_state(command)
    assert "cancelled: nothing was changed" in str(refusal("restore", "previous", stdin="no\n"))
    assert "standard input is closed" in str(refusal("restore", "previous", stdin=""))
    assert bucket_state(command) == before

    result = call("restore", "previous", stdin="yes\n")
    assert "Restore snapshot 'previous' (" in result.err
    assert "Every process of this host sees it from its next transaction." in result.err
    assert "Type 'yes' to continue" in result.err
    assert kv_in_bucket(command) == {"k": "old"}


def test_restore_is_refused_while_a_writer_on_another_host_holds_the_bucket(
    command: BucketConfig, make_engine: EngineFactory
) -> None:
    seed(command, k="old")
    seed(command, k="new")
    server = make_engine(**signing()).start()
    before = bucket_state(command)

    error = refusal("restore", "previous", "--yes")
    assert error.returncode == WRITER_RUNNING
    message = str(error)
    assert message.startswith("refusing to restore snapshot 'previous'")
    assert "a live writer on another host holds the bucket" in message
    assert "That host's database does not have the change, so its next flush would silently overwrite it." in message
    assert "Run this command on that host" in message
    assert "Django admin" in message
    assert message.endswith("Nothing was changed.")
    assert bucket_state(command) == before

    server.kv.set("k", "the server's")
    server.stop()
    assert kv_in_bucket(command) == {"k": "the server's"}


def test_restore_recovers_from_a_damaged_current_snapshot(command: BucketConfig) -> None:
    seed(command, k="good")
    good = current_record(open_object_store(command), command.key)
    seed(command, k="newer")
    damaged = damage_current(command)
    before = bucket_state(command)

    error = str(refusal("kv", "get", "k"))
    assert f"snapshot object '{command.key}.generations/{damaged}.chunk0000' failed verification" in error
    assert "this process did not start" in error
    assert f"`python manage.py buckethead restore {good.name}`" in error, "the error says how to recover"
    assert "\n" not in error
    refused = str(refusal("restore", "latest", "--yes"))
    assert f"snapshot 'latest' ({damaged}, " in refused
    assert "cannot be restored either: it failed verification (its content does not match its record" in refused
    assert bucket_state(command) == before, "nothing was changed"

    data = call_json("restore", good.name, "--yes")
    assert (data["latest_was_damaged"], data["kept"]) == (True, None)
    assert data["damaged"]["name"] == damaged
    assert data["damaged"]["key"] == f"{command.key}.generations/{damaged}.chunk0000"
    assert data["current"]["current"]
    assert data["current"]["signed"]
    assert data["current"]["name"] not in (good.name, damaged), "the restored data is a new generation"
    assert kv_in_bucket(command) == {"k": "good"}
    assert call("kv", "get", "k").out == "good\n"
    history = {e.name: e for e in entries(command)}
    assert damaged in history, "the damaged generation stays until retention prunes it"
    assert good.name in history, "the source is left as it was"

    with server_engine(command) as server:  # a writer starts again, from the restored data
        assert server.kv.get("k") == "good"
        server.kv.set("k", "serving again")
    assert kv_in_bucket(command) == {"k": "serving again"}


def test_restore_of_a_file_over_a_damaged_current_snapshot_says_what_happened(
    command: BucketConfig, tmp_path: Path
) -> None:
    seed(command, k="in the bucket")
    copy = tmp_path / "repaired.db"
    copy.write_bytes(snapshot_bytes(open_object_store(command)))
    seed(command, k="newer")
    damaged = damage_current(command)
    out = call("restore", "--file", str(copy), "--yes").out
    assert f"Restored the file {copy} (" in out
    assert f"The current snapshot ({damaged}) could not be loaded (its content does not match its record" in out
    assert "so it could not be kept first; it stays in the bucket until retention prunes it." in out
    current = current_record(open_object_store(command), command.key)
    assert (
        f"The current generation is now {current.name}: the next process of the site to start on this host "
        "restores it." in out
    )
    assert call("kv", "get", "k").out == "in the bucket\n"


def test_an_unreadable_current_record_is_reported_and_restore_gets_out_of_it(command: BucketConfig) -> None:
    seed(command, k="good")
    good = current_record(open_object_store(command), command.key)
    open_object_store(command).put(f"{command.key}.current", b"{ not json")

    status = call("status").out
    assert f"cannot be read: snapshot object '{command.key}.current' failed verification" in status
    assert good.name in [e["name"] for e in call_json("history")], "history still lists every generation"
    refused = str(refusal("kv", "get", "k"))
    assert f"`python manage.py buckethead restore {good.name}`" in refused, "the error names the way out"

    call("restore", good.name, "--yes")
    assert call("kv", "get", "k").out == "good\n"


def test_restore_in_a_servers_process_replaces_its_database(writer: BucketSQLite, bucket_config: BucketConfig) -> None:
    writer.kv.set("k", "old")
    writer.force_flush()
    writer.kv.set("k", "new")
    writer.force_flush()
    call("restore", "previous", "--yes")
    assert writer.kv.get("k") == "old"
    assert kv_in_bucket(bucket_config) == {"k": "old"}


def test_restore_to_file_downloads_a_plain_sqlite_file(command: BucketConfig, tmp_path: Path) -> None:
    seed(command, k="old")
    seed(command, k="new")
    latest = tmp_path / "inspect" / "latest.db"
    out = call("restore", "--to-file", str(latest)).out
    assert "Downloaded snapshot 'latest' (" in out
    assert f"Inspect it with: sqlite3 {latest}" in out
    with sqlite3.connect(latest) as db:
        assert db.execute("SELECT key, value FROM bh_kv").fetchall() == [("k", b"new")]
    previous = tmp_path / "previous.db"
    call("restore", "previous", "--to-file", str(previous))
    with sqlite3.connect(previous) as db:
        assert db.execute("SELECT value FROM bh_kv").fetchall() == [(b"old",)]

    damage_current(command)
    damaged = str(refusal("restore", "--to-file", str(tmp_path / "damaged.db")))
    assert "snapshot 'latest' failed verification (its content does not match its record" in damaged
    assert not (tmp_path / "damaged.db").exists(), "nothing that failed verification is left behind"

    before = bucket_state(command)
    assert "already exists" in str(refusal("restore", "--to-file", str(latest)))
    assert "no snapshot named 'nope'" in str(refusal("restore", "nope", "--to-file", str(tmp_path / "x.db")))
    assert "cannot be used with --file" in str(refusal("restore", "--file", str(latest), "--to-file", "y.db"))
    assert not (tmp_path / "x.db").exists()
    assert bucket_state(command) == before


def test_a_big_download_shows_a_progress_bar_only_on_a_terminal(command: BucketConfig, tmp_path: Path) -> None:
    with server_engine(command) as writer:
        for i in range(6):
            writer.kv.set_bytes(f"big/{i}", os.urandom(1_000_000))
    terminal = Terminal()
    call("restore", "--to-file", str(tmp_path / "a.db"), stderr=terminal)
    assert re.search(r"\rDownloading latest \[#{30}\] 100%  [\d.]+ MB of [\d.]+ MB\n", terminal.getvalue())

    piped = call("restore", "--to-file", str(tmp_path / "b.db"))
    assert "\r" not in piped.err
    assert "%" not in piped.err


@pytest.mark.parametrize(
    ("offset", "wording"),
    [(0.2, "just now"), (1, "1 second ago"), (45, "45 seconds ago"), (200, "3 minutes ago"), (-250, "in 4 minutes")],
)
def test_times_are_said_relative_to_now(offset: float, wording: str) -> None:
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    assert display.relative(now - dt.timedelta(seconds=offset), now) == wording
    assert display.when(now.timestamp() - offset, now).endswith(f"UTC ({wording})")


def test_progress_bar_counts_callbacks_and_stays_silent_when_it_should() -> None:
    terminal = Terminal()
    with ProgressBar(OutputWrapper(terminal), "Uploading", 10 * MIN_BYTES) as bar:
        for _ in range(20):
            bar(MIN_BYTES // 2)
    text = terminal.getvalue()
    assert text.count("\r") == 20, "one redraw per percent reached"
    assert text.endswith("100%  40.0 MB of 40.0 MB\n")

    for stream, total in ((io.StringIO(), 10 * MIN_BYTES), (Terminal(), MIN_BYTES - 1)):
        with ProgressBar(OutputWrapper(stream), "Quiet", total) as bar:
            bar(total)
        assert stream.getvalue() == ""
        assert bar.done == total


# -- kv ------------------------------------------------------------------------------------------


def test_kv_reads_show_the_hosts_database(command: BucketConfig) -> None:
    seed(command, **{"user/1": "alice", "user/2": "bob", "other": "x"})
    result = call("kv", "get", "user/1")
    assert (result.out, result.err) == ("alice\n", ""), "the host's database is the live state: no 'as of' note"

    lines = call("kv", "list", "--prefix", "user/").out.splitlines()
    assert lines[0].split() == ["KEY", "SIZE", "EXPIRES"]
    assert [line.split() for line in lines[1:]] == [
        ["user/1", "5", "bytes", "never"],
        ["user/2", "3", "bytes", "never"],
        ["2", "of", "2", "keys"],
    ]
    assert call("kv", "list", "--limit", "1").out.splitlines()[-1] == "1 of 3 keys (use --limit to see more)"
    data = call_json("kv", "list")
    assert data["as_of"] is None
    assert data["total"] == 3
    assert [k["key"] for k in data["keys"]] == ["other", "user/1", "user/2"]


def test_kv_reads_beside_a_writer_on_another_host_come_from_the_latest_snapshot_and_say_as_of_when(
    command: BucketConfig,
) -> None:
    seed(command, **{"user/1": "alice", "other": "x"})
    lease = other_host_holds(command)
    result = call("kv", "get", "user/1")
    assert result.out == "alice\n"
    assert re.search(
        r"As of the latest snapshot, written \d{4}-.* UTC \((just now|\d+ seconds? ago)\): a writer on another host "
        r"holds the bucket, and changes it has not flushed yet are not shown",
        result.err,
    ), result.err
    data = call_json("kv", "list")
    assert data["as_of"]
    assert [k["key"] for k in data["keys"]] == ["other", "user/1"]
    assert re.search(r"no KV key 'missing' as of the snapshot written \d{4}-", str(refusal("kv", "get", "missing")))
    assert lease_in(command) == lease, "reading took nothing over"


def test_kv_get_shows_any_value_in_the_encoding_asked_for(command: BucketConfig) -> None:
    with server_engine(command) as writer:
        writer.kv.set_bytes("bin", b"\x00\xffok")
        writer.kv.set("text", "héllo", ttl=600)
    assert call("kv", "get", "bin", "--hex").out == "00ff6f6b\n"
    assert call("kv", "get", "bin", "--base64").out == "AP9vaw==\n"
    assert "not UTF-8 text (4 bytes); show it with --hex, --base64 or --bytes" in str(refusal("kv", "get", "bin"))

    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8")
    call_command("buckethead", "kv", "get", "bin", "--bytes", stdout=stdout, stderr=io.StringIO())
    runtime.stop()
    assert raw.getvalue() == b"\x00\xffok"

    data = call_json("kv", "get", "text")
    assert (data["value"], data["encoding"], data["size"]) == ("héllo", "text", 6)
    assert data["expires_at"]
    assert data["as_of"] is None
    assert "cannot be combined with --json" in str(refusal("kv", "get", "bin", "--bytes", "--json"))
    assert str(refusal("kv", "get", "missing")) == "there is no KV key 'missing'"


def test_kv_set_and_delete_with_no_server_running_flush_to_the_bucket(command: BucketConfig) -> None:
    seed(command, keep="1")
    out = call("kv", "set", "feature", "on", "--ttl", "3600").out
    assert out.startswith("Set 'feature' (2 bytes, expires in 59 minutes) and flushed it to ")
    assert kv_in_bucket(command) == {"keep": "1", "feature": "on"}
    call("kv", "delete", "keep")
    assert kv_in_bucket(command) == {"feature": "on"}

    before = bucket_state(command)
    assert "there is no KV key 'nope'" in str(refusal("kv", "delete", "nope"))
    assert bucket_state(command) == before
    assert lease_in(command) is None, "each command released the bucket when it exited"


def test_commands_beside_a_server_on_their_host_change_the_shared_database(
    host_server: BucketSQLite, command: BucketConfig, tmp_path: Path
) -> None:
    host_server.kv.set("k", "from the server")
    host_server.force_flush()
    host_server.kv.set("k", "from the server, not flushed yet")
    assert call("kv", "get", "k").out == "from the server, not flushed yet\n", "one database for the whole host"

    call("kv", "set", "k", "from a command")
    assert host_server.kv.get("k") == "from a command", "the server reads what the command wrote"
    assert kv_in_bucket(command) == {"k": "from a command"}, "the server's replicator shipped it when asked"

    out = call("restore", "previous", "--yes").out
    assert "every process of this host reads it from its next transaction" in out
    assert host_server.kv.get("k") == "from the server", "the generation before the command's, in the server too"
    assert kv_in_bucket(command) == {"k": "from the server"}

    notes = sqlite_file(tmp_path / "notes.db", "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
    call("import-database", str(notes), "--yes")
    assert host_server.connection.execute("SELECT body FROM notes").fetchall() == [("hi",)]
    assert query_bucket(command, "SELECT body FROM notes") == [("hi",)]
    assert lease_in(command).same_holder(host_server.lease), "the server kept the bucket all along"


def test_changes_are_refused_while_a_writer_on_another_host_holds_the_bucket(
    command: BucketConfig, make_engine: EngineFactory, tmp_path: Path
) -> None:
    seed(command, k="v")
    make_engine(**signing()).start()
    notes = sqlite_file(tmp_path / "notes.db", "CREATE TABLE notes (body TEXT);")
    before = bucket_state(command)
    changes = (
        ["kv", "set", "k", "changed"],
        ["kv", "delete", "k"],
        ["files", "gc"],
        ["restore", "latest", "--yes"],
        ["import-database", str(notes), "--yes"],
    )
    for args in changes:
        error = refusal(*args)
        assert error.returncode == WRITER_RUNNING
        assert f"a live writer on another host holds the bucket ({HERE}:{os.getpid()}, running since" in str(error)
        assert str(error).endswith("Nothing was changed.")
    assert "files gc --dry-run" in str(refusal("files", "gc"))
    assert bucket_state(command) == before
    result = call("kv", "get", "k")
    assert result.out == "v\n", "reads still work, from the latest snapshot"
    assert "As of the latest snapshot" in result.err


def test_kv_in_a_servers_process_changes_its_database(writer: BucketSQLite, bucket_config: BucketConfig) -> None:
    call("kv", "set", "k", "v")
    assert writer.kv.get("k") == "v"
    assert kv_in_bucket(bucket_config) == {"k": "v"}
    result = call("kv", "get", "k")
    assert (result.out, result.err) == ("v\n", ""), "the host's database is live: no 'as of' note"


# -- files ---------------------------------------------------------------------------------------


def test_files_list_and_get(command: BucketConfig, tmp_path: Path) -> None:
    with server_engine(command) as writer:
        report = writer.files.save_name("docs/report.txt", b"quarterly numbers")
        raw = writer.files.put(b"\x00raw", filename="raw.bin")
    out = call("files", "list").out
    assert out.splitlines()[0].split() == ["BH_KEY", "SIZE", "TYPE", "CREATED", "NAMES"]
    assert re.search(rf"{report.bh_key}  17 bytes  text/plain\s+\d{{4}}-.*docs/report.txt", out)
    assert re.search(rf"{raw}  4 bytes\s+application/octet-stream .*raw.bin", out)
    assert out.splitlines()[-1] == "2 of 2 files"
    assert call_json("files", "list")["total"] == 2

    call("files", "get", report.bh_key, str(tmp_path / "by-key.txt"))
    assert (tmp_path / "by-key.txt").read_bytes() == b"quarterly numbers"
    assert "Wrote " in call("files", "get", "docs/report.txt", str(tmp_path)).out
    assert (tmp_path / "report.txt").read_bytes() == b"quarterly numbers"

    assert "already exists" in str(refusal("files", "get", raw, str(tmp_path / "report.txt")))
    assert "no stored file with bh-key or name 'f00'" in str(refusal("files", "get", "f00", str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()


def test_files_gc_reports_and_deletes_old_unreferenced_blobs(command: BucketConfig) -> None:
    with server_engine(command) as writer:
        kept = writer.files.put(b"referenced")
    store = open_object_store(command)
    orphan = hashlib.sha256(b"orphan").hexdigest()
    store.put(f"files/{orphan}", b"orphan")

    dry = call("files", "gc", "--dry-run", "--grace-seconds", "0").out
    assert dry.splitlines()[:2] == ["Would delete 1 unreferenced blobs.", f"  files/{orphan}"]
    assert store.head(f"files/{orphan}") is not None

    assert "Kept 1 unreferenced blobs younger than 3600 seconds." in call("files", "gc").out
    assert call("files", "gc", "--grace-seconds", "0").out.startswith("Deleted 1 unreferenced blobs.")
    assert store.head(f"files/{orphan}") is None
    assert store.head(f"files/{kept}") is not None


# -- import-database -------------------------------------------------------------------------------


def django_sqlite3_site(path: Path, django_db_blocker) -> None:
    """What a site that used Django's sqlite3 backend leaves behind: a migrated db.sqlite3 with users in it."""
    with django_db_blocker.unblock(), django_database("legacy", ENGINE="django.db.backends.sqlite3", NAME=str(path)):
        call_command("migrate", database="legacy", verbosity=0, interactive=False)
        User.objects.db_manager("legacy").create_user("alice", password="alice's password", email="a@example.com")
        User.objects.db_manager("legacy").create_superuser("admin", password="admin's password")
        User.objects.db_manager("legacy").create_user("gone", password="x").delete()  # its id is never reused
    sqlite_file(
        path,
        """
        CREATE VIEW active_users AS SELECT username FROM auth_user WHERE is_active;
        CREATE TABLE audit (username TEXT);
        CREATE TRIGGER user_audit AFTER INSERT ON auth_user BEGIN INSERT INTO audit VALUES (new.username); END;
        """,
    )


def test_import_database_moves_a_django_sqlite3_database_in_readable_through_the_orm(
    command: BucketConfig, tmp_path: Path, django_db_blocker
) -> None:
    legacy = tmp_path / "db.sqlite3"
    django_sqlite3_site(legacy, django_db_blocker)
    with sqlite3.connect(legacy) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} - {"sqlite_sequence"}
        permissions = db.execute("SELECT count(*) FROM auth_permission").fetchone()[0]
    seed(command, kept="the host's KV entries are kept")

    data = call_json("import-database", str(legacy), "--yes")
    assert {t["name"] for t in data["tables"]} == tables
    assert {"auth_user", "django_migrations", "django_content_type", "django_session", "audit"} <= tables
    assert next(t for t in data["tables"] if t["name"] == "auth_user")["rows"] == 2
    assert data["views"] == ["active_users"]
    assert data["triggers"] == ["user_audit"]
    assert "auth_user_groups_user_id_group_id_94350c0c_uniq" in data["indexes"]
    assert (data["overwritten"], data["left_out"], data["foreign_key_problems"]) == ([], [], [])
    assert data["snapshot"]["current"]
    assert query_bucket(command, "SELECT username FROM auth_user ORDER BY id") == [("alice",), ("admin",)]
    assert kv_in_bucket(command) == {"kept": "the host's KV entries are kept"}

    with django_db_blocker.unblock(), django_database("bh", ENGINE="buckethead_django.db"):
        users = User.objects.using("bh")
        alice = users.get(username="alice")
        assert alice.check_password("alice's password")
        assert users.get(username="admin").is_superuser
        assert Permission.objects.using("bh").count() == permissions
        assert ContentType.objects.using("bh").get(app_label="auth", model="user").name == "user"
        newcomer = User.objects.db_manager("bh").create_user("bob")
        assert newcomer.id == 4, "AUTOINCREMENT's counter came along: the deleted user's id is not reused"
        assert list(users.order_by("id").values_list("username", flat=True)) == ["alice", "admin", "bob"]
    engine = runtime.get_buckethead()
    assert engine.connection.execute("SELECT username FROM active_users ORDER BY 1").fetchall() == [
        ("admin",), ("alice",), ("bob",),
    ]  # fmt: skip
    assert engine.connection.execute("SELECT username FROM audit").fetchall() == [("bob",)], "the trigger came too"


def test_import_database_says_what_it_did(command: BucketConfig, tmp_path: Path) -> None:
    notes = sqlite_file(
        tmp_path / "notes.db",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE INDEX notes_body ON notes (body);"
        "INSERT INTO notes (body) VALUES ('a'), ('b');",
    )
    result = call("import-database", str(notes), "--noinput")
    assert re.search(
        rf"Imported 1 table \(2 rows\), 1 index, 0 triggers and 0 views of {re.escape(str(notes))} into the host's "
        r"database, and flushed it to .*: snapshot '0000000001-\w+', [\d.]+ KB, written ",
        result.out,
    ), result.out
    assert 'Next: set DATABASES = {"default": {"ENGINE": "buckethead_django.db"}}' in result.out
    assert query_bucket(command, "SELECT body FROM notes ORDER BY id") == [("a",), ("b",)]


def test_import_database_refuses_to_overwrite_rows_unless_told_and_changes_nothing(
    command: BucketConfig, tmp_path: Path
) -> None:
    first = sqlite_file(
        tmp_path / "first.db",
        "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('first'); CREATE TABLE empty_here (x);",
    )
    call("import-database", str(first), "--yes")
    second = sqlite_file(
        tmp_path / "second.db",
        "CREATE TABLE notes (body TEXT, author TEXT); INSERT INTO notes VALUES ('second', 'me'), ('third', 'you');"
        "CREATE TABLE empty_here (x, y); INSERT INTO empty_here VALUES (1, 2); CREATE TABLE more (z);",
    )
    before = bucket_state(command)
    error = str(refusal("import-database", str(second), "--yes"))
    assert error == (
        f"refusing to import {second}: these already exist in the host's database and hold what the import would "
        "overwrite: notes (1 row). Pass --replace to overwrite them with the file's (the host's other tables are "
        "kept). Nothing was changed."
    ), "an empty table of the same name is no obstacle"
    assert "cancelled: nothing was changed" in str(refusal("import-database", str(second), "--replace", stdin="no\n"))
    assert bucket_state(command) == before

    result = call("import-database", str(second), "--replace", stdin="yes\n")
    assert "These are overwritten with the file's: notes (1 row)." in result.err
    assert "Overwritten with the file's: notes (1 row) (as they were)." in result.out
    assert query_bucket(command, "SELECT body, author FROM notes ORDER BY 1") == [("second", "me"), ("third", "you")]
    assert query_bucket(command, "SELECT x, y FROM empty_here") == [(1, 2)]
    assert query_bucket(command, "SELECT count(*) FROM more") == [(0,)]


def test_import_database_refuses_what_is_not_a_sqlite_database(command: BucketConfig, tmp_path: Path) -> None:
    seed(command, k="v")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    good = sqlite_file(tmp_path / "good.db", "CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(good.read_bytes()[:1000])
    only_ours = tmp_path / "only-buckethead.db"
    only_ours.write_bytes(snapshot_bytes(open_object_store(command), key=command.key))
    before = bucket_state(command)
    cases = [
        (notes, f"{notes} is not a valid SQLite database (it does not start with the SQLite file header). Nothing"),
        (truncated, f"{truncated} is not a valid SQLite database (its size (1000 bytes) is not a whole number"),
        (tmp_path / "missing.db", "cannot read"),
        (only_ours, f"{only_ours} holds no tables to import (BucketHead's own tables are left out unless "),
    ]
    for path, message in cases:
        error = str(refusal("import-database", str(path), "--yes"))
        assert message in error, error
        assert "\n" not in error
    assert bucket_state(command) == before


def test_import_database_leaves_buckethead_tables_out_unless_told(command: BucketConfig, tmp_path: Path) -> None:
    elsewhere = BucketConfig.local(tmp_path / "elsewhere")
    seed(elsewhere, k="theirs")
    theirs = tmp_path / "theirs.db"
    theirs.write_bytes(snapshot_bytes(open_object_store(elsewhere)))
    sqlite_file(theirs, "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
    seed(command, k="ours")

    data = call_json("import-database", str(theirs), "--yes")
    assert [t["name"] for t in data["tables"]] == ["notes"]
    assert set(data["left_out"]) == {"bh_kv", "filestore", "bh_file_names"}
    assert data["indexes"] == [], "the indexes of the tables left out are left out too"
    assert kv_in_bucket(command) == {"k": "ours"}
    out = call("import-database", str(theirs), "--yes", "--replace").out
    assert "Left out BucketHead's own tables of " in out
    assert "--include-buckethead-tables" in out

    error = str(refusal("import-database", str(theirs), "--yes", "--include-buckethead-tables"))
    assert "bh_kv (1 row)" in error
    call("import-database", str(theirs), "--yes", "--include-buckethead-tables", "--replace")
    assert kv_in_bucket(command) == {"k": "theirs"}


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kv", "get"], "the following arguments are required: KEY"),
        (["kv", "list", "--limit", "0"], "'0' is not a positive whole number"),
        (["kv", "set", "k", "v", "--ttl", "-1"], "'-1' is not a number of seconds"),
        (["kv", "get", "k", "--hex", "--base64"], "not allowed with argument"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["import-database"], "the following arguments are required: PATH"),
        (["nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: SUBCOMMAND"),
    ],
)
def test_wrong_flags_are_command_errors(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call(*args)


def test_an_unreachable_bucket_or_bad_settings_is_one_clear_error(command_host: Path, settings) -> None:
    settings.BUCKETHEAD = {
        "BACKEND": "s3",
        "BUCKET": "nowhere",
        "ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": "id",
        "SECRET_ACCESS_KEY": SECRET,
        "MAX_ATTEMPTS": 1,
        "CONNECT_TIMEOUT": 1,
        "STARTUP_TIMEOUT": 0,  # a process does not wait for the bucket to come up
        "LOCAL_DIR": str(command_host),
    }
    for args in (["status"], ["history"], ["kv", "list"], ["kv", "set", "k", "v"]):
        error = str(refusal(*args))
        assert re.match(r"(cannot|could not) reach bucket 'nowhere'", error), error
        assert SECRET not in error
    settings.BUCKETHEAD = {"BACKEND": "s4"}
    assert "BucketHead is not configured correctly: BUCKETHEAD 'BACKEND' is 's4'" in str(refusal("status"))


# -- real processes -----------------------------------------------------------------------------

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")


@posix_only
def test_exit_statuses_and_one_line_errors(tmp_path: Path) -> None:
    assert run(tmp_path, "status").returncode == 0
    assert run(tmp_path, "kv", "set", "k", "v").returncode == 0

    usage = run(tmp_path, "kv", "get")
    assert usage.returncode == 2
    assert error_lines(usage) == [
        "manage.py buckethead kv get: error: the following arguments are required: KEY. "
        "Run `manage.py buckethead kv get --help` for usage."
    ]
    unknown = run(tmp_path, "restore", "nope", "--yes")
    assert unknown.returncode == 1
    assert len(error_lines(unknown)) == 1
    assert error_lines(unknown)[0].startswith("CommandError: there is no snapshot named 'nope'")
    unreachable = run(
        tmp_path,
        "status",
        BUCKETHEAD_BACKEND="s3",
        BUCKETHEAD_BUCKET="nowhere",
        BUCKETHEAD_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        BUCKETHEAD_MAX_ATTEMPTS="1",
    )
    assert unreachable.returncode == 1
    assert len(error_lines(unreachable)) == 1
    assert error_lines(unreachable)[0].startswith("CommandError: cannot reach bucket 'nowhere'")
    for result in (usage, unknown, unreachable):
        assert "Traceback" not in result.stderr
    assert "usage: manage.py buckethead kv get" in run(tmp_path, "kv", "get", "--help").stdout


@posix_only
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_commands_beside_a_running_server_on_its_host_share_its_database(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {} if backend == "local" else env_for(s3_config(request.getfixturevalue("moto")))
    assert run(tmp_path, "kv", "set", "k", "v1", **env).returncode == 0
    assert run(tmp_path, "snapshot", "--label", "first", **env).returncode == 0
    assert run(tmp_path, "kv", "set", "k", "v2", **env).returncode == 0

    with Server("runserver", tmp_path, "--noreload", **env) as server:
        status = json.loads(run(tmp_path, "status", "--json", **env).stdout)
        assert (status["writer"]["pid"], status["writer"]["live"], status["writer"]["this_host"]) == (
            server.proc.pid, True, True,
        )  # fmt: skip
        assert (status["replicator"]["pid"], status["replicator"]["running"]) == (server.proc.pid, True)
        assert (status["process"]["role"], status["process"]["writes"]) == ("member", True)

        changed = run(tmp_path, "kv", "set", "k", "x", **env)
        assert changed.returncode == 0, changed.stderr
        read = run(tmp_path, "kv", "get", "k", **env)
        assert (read.returncode, read.stdout) == (0, "x\n")
        assert "As of" not in read.stderr, "the host's database is the live state"
        restored = run(tmp_path, "restore", "first", "--yes", **env)
        assert restored.returncode == 0, restored.stderr
        assert run(tmp_path, "kv", "get", "k", **env).stdout == "v1\n"
        copy = run(tmp_path, "snapshot", "--label", "while-serving", **env)
        assert copy.returncode == 0, copy.stderr
        assert "Flushed the host's database" in copy.stdout
        server.stop(signal.SIGTERM)

    assert server.stopped_pids() == [server.proc.pid], "the server was the host's last process: it flushed last"
    assert run(tmp_path, "kv", "get", "k", **env).stdout == "v1\n"
    names = [e["name"] for e in json.loads(run(tmp_path, "history", "--json", **env).stdout)]
    assert {"first", "while-serving"} <= set(names)
    assert any(name.startswith("pre-restore-") for name in names)


@posix_only
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_server_on_another_host_keeps_the_bucket_and_commands_say_what_to_do(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {} if backend == "local" else env_for(s3_config(request.getfixturevalue("moto")))
    elsewhere = {**env, "BUCKETHEAD_LOCAL_DIR": str(tmp_path / "another-host")}
    assert run(tmp_path, "kv", "set", "k", "v1", **env).returncode == 0
    assert run(tmp_path, "snapshot", "--label", "first", **env).returncode == 0
    assert run(tmp_path, "kv", "set", "k", "v2", **env).returncode == 0

    with Server("runserver", tmp_path, "--noreload", **env) as server:
        for args in (["restore", "first", "--yes"], ["kv", "set", "k", "x"], ["kv", "delete", "k"], ["files", "gc"]):
            refused = run(tmp_path, *args, **elsewhere)
            assert refused.returncode == WRITER_RUNNING, refused.stderr
            [line] = error_lines(refused)
            assert line.startswith("CommandError: refusing to ")
            assert f"a live writer on another host holds the bucket ({HERE}:{server.proc.pid}, running since" in line
        restore = error_lines(run(tmp_path, "restore", "first", "--yes", **elsewhere))[0]
        assert "Run this command on that host" in restore
        assert "restore from the Django admin that host serves" in restore

        copy = run(tmp_path, "snapshot", "--label", "while-serving", **elsewhere)
        assert copy.returncode == 0, copy.stderr
        assert "A live writer on another host holds the bucket" in copy.stdout
        read = run(tmp_path, "kv", "get", "k", **elsewhere)
        assert (read.returncode, read.stdout) == (0, "v2\n")
        assert "As of the latest snapshot" in read.stderr
        status = json.loads(run(tmp_path, "status", "--json", **elsewhere).stdout)
        assert (status["process"]["role"], status["writer"]["this_host"]) == (None, False)
        server.stop(signal.SIGTERM)

    restored = run(tmp_path, "restore", "first", "--yes", **elsewhere)
    assert restored.returncode == 0, restored.stderr
    with Server("runserver", tmp_path, "--noreload", **env):
        pass  # the first host starts from the restored state, and its final flush keeps it
    assert run(tmp_path, "kv", "get", "k", **env).stdout == "v1\n"
    names = [e["name"] for e in json.loads(run(tmp_path, "history", "--json", **env).stdout)]
    assert {"first", "while-serving"} <= set(names)
    assert any(name.startswith("pre-restore-") for name in names)


@posix_only
def test_restore_asks_on_stdin_in_a_real_process(tmp_path: Path) -> None:
    run(tmp_path, "kv", "set", "k", "v1")
    run(tmp_path, "kv", "set", "k", "v2")
    declined = run(tmp_path, "restore", "previous", stdin="no\n")
    assert declined.returncode == 1
    assert "Type 'yes' to continue" in declined.stderr
    assert error_lines(declined)[-1] == "CommandError: cancelled: nothing was changed."
    assert run(tmp_path, "kv", "get", "k").stdout == "v2\n"

    accepted = run(tmp_path, "restore", "previous", stdin="yes\n")
    assert accepted.returncode == 0
    assert run(tmp_path, "kv", "get", "k").stdout == "v1\n"


@posix_only
def test_a_site_on_djangos_sqlite3_backend_moves_in_with_import_database(tmp_path: Path) -> None:
    legacy = tmp_path / "db.sqlite3"
    (tmp_path / "legacy_settings.py").write_text(
        "from example_site.settings import *  # noqa: F403\n\n"
        f'DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {str(legacy)!r}}}}}\n'
    )
    before = {"DJANGO_SETTINGS_MODULE": "legacy_settings", "PYTHONPATH": f"{EXAMPLE}{os.pathsep}{tmp_path}"}
    manage(tmp_path, "migrate", "--verbosity", "0", **before)
    manage(
        tmp_path,
        "shell",
        "-c",
        "from demo.models import Document; Document.objects.create(title='Quarterly report', file='documents/q.txt'); "
        "from django.contrib.auth.models import User; User.objects.create_superuser('alice', password='pw')",
        **before,
    )

    imported = run(tmp_path, "import-database", str(legacy), "--noinput")
    assert imported.returncode == 0, imported.stderr
    assert "Imported " in imported.stdout
    assert "Next:" not in imported.stdout, "the example project uses the host's database already"

    after = manage(
        tmp_path,
        "shell",
        "-c",
        "from demo.models import Document; print(Document.objects.get().title); "
        "from django.contrib.auth import authenticate; print(authenticate(username='alice', password='pw'))",
    )
    assert after.stdout.splitlines()[-2:] == ["Quarterly report", "alice"]
    assert manage(tmp_path, "migrate", "--check", check=False).returncode == 0, "every migration came along"


# -- points in time ------------------------------------------------------------------------------


def test_history_points_and_restore_at_a_time(command: BucketConfig) -> None:
    with server_engine(command) as writer:
        writer.kv.set("k", "first")
        writer.force_flush()
        writer.kv.set("k", "second")
        writer.force_flush()
        time.sleep(1.1)  # the bucket dates objects to the second
        between = time.time()
        time.sleep(1.1)
        writer.kv.set("k", "third")
        writer.force_flush()
    points = call_json("history", "--points")
    assert [p["deltas"] for p in points][:3] == [2, 1, 0], "a base, then a delta per flush, newest first"
    assert points[0]["current"] is True
    assert "restore --at TIME" in call("history", "--points").err

    out = call("restore", "--at", dt.datetime.fromtimestamp(between, tz=dt.UTC).isoformat(), "--yes").out
    assert f"{points[1]['name']}" in out, "the newest point flushed at or before the time"
    with server_engine(command) as after:
        assert after.kv.get("k") == "second"

    assert "no restorable point" in str(refusal("restore", "--at", "2000-01-01T00:00:00Z", "--yes"))
    assert "is not a time" in str(refusal("restore", "--at", "yesterday-ish", "--yes"))
    assert "not several" in str(refusal("restore", "latest", "--at=-1m", "--yes"))


# -- flush, Django's common options, -v 0 ----------------------------------------------------------


def test_flush_ships_the_servers_changes_now_and_says_what_it_did(
    host_server: BucketSQLite, command: BucketConfig
) -> None:
    host_server.kv.set("k", "written by the server")
    host_server.force_flush()
    host_server.kv.set("k", "not flushed yet")
    assert kv_in_bucket(command) == {"k": "written by the server"}

    out = call("flush").out
    assert re.match(r"Flushed the host's changes to .*: its newest point is now \S+\+1\.\n", out), out
    assert kv_in_bucket(command) == {"k": "not flushed yet"}, "the server's replicator shipped it when asked"
    assert lease_in(command).same_holder(host_server.lease), "and keeps the bucket"

    again = call_json("flush")
    assert (again["uploaded"], again["reason"]) == (False, "unchanged")
    assert "Nothing to flush" in call("flush").out


def test_flush_with_no_server_running_ships_the_hosts_database_itself(command: BucketConfig) -> None:
    seed(command, k="1")
    assert call_json("flush")["reason"] == "unchanged", "the host's database is the bucket's"
    assert lease_in(command) is None, "it released the bucket when it exited"


def test_flush_is_refused_while_a_writer_on_another_host_holds_the_bucket(
    command: BucketConfig, make_engine: EngineFactory
) -> None:
    seed(command, k="v")
    make_engine(**signing()).start()
    assert "refusing to flush this host's database" in str(refusal("flush"))


def test_djangos_common_options_work_after_the_subcommand_and_v0_keeps_only_the_data(tmp_path: Path) -> None:
    quiet = manage(tmp_path, "buckethead", "kv", "set", "greeting", "hello", "-v", "0", "--no-color", "--traceback")
    assert (quiet.stdout, quiet.stderr) == ("", ""), "-v 0 leaves out the report of a change"
    moved = manage(tmp_path, "buckethead", "kv", "get", "greeting", "--settings", "example_site.settings", "-v", "0")
    assert moved.stdout == "hello\n", "the data asked for is printed at every verbosity"
    loud = manage(tmp_path, "buckethead", "kv", "set", "greeting", "hi", "--verbosity", "1")
    assert loud.stdout.startswith("Set 'greeting' (2 bytes) and flushed it to ")
    wrong = manage(tmp_path, "buckethead", "kv", "get", "greeting", "-v", "7", check=False)
    assert wrong.returncode == 2
    assert "argument -v/--verbosity: invalid choice: 7" in wrong.stderr


def test_kv_get_json_gives_a_binary_value_base64_encoded(command: BucketConfig) -> None:
    seed(command)
    with server_engine(command) as writer:
        writer.kv.set_bytes("blob", b"\x00\xff binary")
    data = call_json("kv", "get", "blob")
    assert (data["encoding"], base64.b64decode(data["value"])) == ("base64", b"\x00\xff binary")
    assert "with --json it comes base64-encoded" in str(refusal("kv", "get", "blob"))


def test_files_get_into_a_missing_directory_is_refused(command: BucketConfig, tmp_path: Path) -> None:
    with server_engine(command) as writer:
        stored = writer.files.put(b"contents", filename="notes.txt")
    missing = tmp_path / "no-such-dir" / "notes.txt"
    refused = str(refusal("files", "get", stored, str(missing)))
    assert f"the directory {missing.parent} does not exist; create it first" in refused
    assert not missing.parent.exists(), "nothing was created"
