"""``manage.py buckethead``: what the operator sees, and what changes in the bucket.

In-process tests (``call_command``) run against a local directory and the
moto server; the process plays the role a management command has (a
reader) or the writer's. Real processes check exit statuses, one-line
errors, and the refusals while a real server holds the bucket.
"""

from __future__ import annotations

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
    entries,
    env_for,
    error_lines,
    kv_in_bucket,
    run,
    seed,
    server_engine,
    settings_for,
    signing,
)
from .conftest import EngineFactory, s3_config
from .moto_server import free_port
from .servers import Server
from .snapshots import current_record, snapshot_bytes

WRITER_RUNNING = 3


@pytest.fixture
def as_reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process is a reader, as ``manage.py buckethead`` is: reads see the latest snapshot, read-only."""
    monkeypatch.setattr(runtime, "_decision", Decision(Role.READER, False, "`manage.py buckethead` does not serve"))
    monkeypatch.setattr(runtime, "_engine", None)
    yield
    runtime.stop()


@pytest.fixture
def reader(as_reader: None, bucket_config: BucketConfig, settings) -> BucketConfig:
    """A reader process whose BUCKETHEAD setting points at the test's bucket (local, or on moto)."""
    settings.BUCKETHEAD = settings_for(bucket_config)
    return bucket_config


@pytest.fixture
def writer(bucket_config: BucketConfig, settings) -> Iterator[BucketSQLite]:
    """This process is the writer of the test's bucket, as with ``BUCKETHEAD['AUTOSTART'] = True``."""
    settings.BUCKETHEAD = settings_for(bucket_config)
    with fresh_buckethead(bucket_config) as engine:
        yield engine


def refusal(*args: str, stdin: str | None = None) -> CommandError:
    with pytest.raises(CommandError) as info:
        call(*args, stdin=stdin)
    return info.value


# -- status ------------------------------------------------------------------------------------


def test_status_shows_where_state_lives_the_latest_snapshot_and_the_role_never_a_secret(reader: BucketConfig) -> None:
    seed(reader, greeting="hello")
    latest = current_record(open_object_store(reader), reader.key)
    assert latest is not None

    out = call("status").out
    assert (str(reader.local_path) if reader.is_local else f"bucket {reader.bucket!r}") in out
    assert f"Snapshot key     {reader.key}" in out
    assert re.search(
        rf"Latest snapshot  generation {latest.name} \(current\), \d+\.\d KB, written "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((just now|\d+ seconds? ago)\)",
        out,
    ), out
    assert f"                 signed, sha256 {latest.sha256}\n" in out
    assert "Generations      1 in the bucket; retention keeps the newest 24 (and every labelled snapshot)" in out
    assert "Writer           none: no process holds the writer lease" in out
    assert "Health" not in out, "a reader cannot know how another process's writer is doing"
    assert "reader (`manage.py buckethead` does not serve)" in out

    data = call_json("status")
    assert data["backend"] == ("local" if reader.is_local else "s3")
    assert data["latest_snapshot"]["name"] == latest.name
    assert data["latest_snapshot"]["size"] == latest.size
    assert data["latest_snapshot"]["sha256"] == latest.sha256
    assert (data["latest_snapshot"]["current"], data["latest_snapshot"]["signed"]) == (True, True)
    assert data["generations"] == {
        "count": 1,
        "keep_snapshots": 24,
        "keep_snapshots_max_age": None,
        "keep_previous": True,
    }
    assert data["health"] is None
    assert data["process"] == {
        "pid": os.getpid(),
        "role": "reader",
        "reason": data["process"]["reason"],
        "writes": False,
    }
    assert SECRET not in out + json.dumps(data)


def test_status_names_the_live_writer_and_since_when(reader: BucketConfig, make_engine: EngineFactory) -> None:
    server = make_engine().start()
    holder = f"{socket.gethostname()}:{os.getpid()}"
    assert f"Writer           {holder}, running since " in call("status").out
    writer = call_json("status")["writer"]
    assert (writer["holder"], writer["live"], writer["this_process"]) == (holder, True, False)
    server.stop()
    assert call_json("status")["writer"] is None, "a writer that stopped released the bucket"


def test_an_expired_lease_does_not_hold_the_bucket(reader: BucketConfig) -> None:
    seed(reader, k="v")
    now = time.time()
    crashed = WriterLease("gone:1", "gone", 1, started_at=now - 4000, renewed_at=now - 1200, expires_at=now - 900)
    open_object_store(reader).put(lease_key(reader.key), crashed.to_json())
    assert "Writer           none live: the lease of gone:1 expired 15 minutes ago" in call("status").out
    assert call_json("status")["writer"]["live"] is False
    call("kv", "set", "k", "after the crash")
    assert kv_in_bucket(reader) == {"k": "after the crash"}


def test_status_in_the_writer_shows_its_own_lease_and_database(writer: BucketSQLite) -> None:
    writer.kv.set("a", "1")
    out = call("status").out
    assert "Writer           this process: " in out
    assert "Health           ok\n" in out
    assert re.search(r"Database         [\d.]+ KB, 1 KV entries, 0 files", out)
    data = call_json("status")
    assert data["process"]["writes"] is True
    assert (data["health"]["status"], data["health"]["fenced"], data["health"]["last_error"]) == ("ok", None, None)


def test_status_shows_the_retention_settings_and_a_legacy_snapshot(reader: BucketConfig, settings) -> None:
    settings.BUCKETHEAD = {**settings.BUCKETHEAD, "KEEP_SNAPSHOTS": 3, "KEEP_SNAPSHOTS_MAX_AGE": 86400}
    database = sqlite3.connect(":memory:")
    database.execute("CREATE TABLE t (x)")
    open_object_store(reader).put(reader.key, database.serialize())  # what buckethead 0.4.x leaves in a bucket
    out = call("status").out
    assert "Latest snapshot  legacy: a buckethead 0.4.x snapshot, which the next writer adopts, " in out
    assert "                 unsigned\n" in out
    assert "Generations      0 in the bucket; retention keeps the newest 3 and any younger than 1 day" in out
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
    writer: BucketSQLite, bucket_config: BucketConfig
) -> None:
    writer.kv.set("k", "mine")
    writer.force_flush()
    with BucketSQLite(bucket_config, background_flush=False) as other:  # takes the bucket over
        writer.kv.set("k", "lost")
        with pytest.raises(WriterFenced):
            writer.force_flush()
        out = call("status").out
        assert re.search(r"Health           FENCED: .* has taken over .* as its writer, so this process", out), out
        health = call_json("status")["health"]
        assert health["status"] == "failing"
        assert "stopped flushing" in health["fenced"]
        other.kv.set("k", "theirs")
    assert kv_in_bucket(bucket_config) == {"k": "theirs"}, "the fenced writer never rolled the bucket back"


# -- snapshot and history -------------------------------------------------------------------------


def test_snapshot_in_the_writer_flushes_what_is_in_memory(writer: BucketSQLite, bucket_config: BucketConfig) -> None:
    writer.kv.set("k", "not flushed yet")
    assert "Flushed the live state to " in call("snapshot").out
    assert kv_in_bucket(bucket_config) == {"k": "not flushed yet"}

    writer.kv.set("k", "labelled")
    assert "snapshot 'before-upgrade'" in call("snapshot", "--label", "before-upgrade").out
    assert kv_in_bucket(bucket_config, "before-upgrade") == {"k": "labelled"}


def test_snapshot_beside_a_live_writer_copies_the_latest_durable_one(
    reader: BucketConfig, make_engine: EngineFactory
) -> None:
    seed(reader, k="durable")
    server = make_engine(**signing()).start()
    server.kv.set("k", "only in the server's memory")
    before = bucket_state(reader)

    out = call("snapshot", "--label", "nightly").out
    assert re.search(r"A live writer holds the bucket \(.+\).*written (just now|\d+ seconds? ago)", out)
    assert "not flushed since then are not in it" in out
    assert kv_in_bucket(reader, "nightly") == {"k": "durable"}
    assert {k: v for k, v in bucket_state(reader).items() if "nightly" not in k} == before, "only a copy was added"

    server.stop()
    assert kv_in_bucket(reader) == {"k": "only in the server's memory"}, "the server's data was not overwritten"


def test_labelled_snapshots_outlive_later_flushes(reader: BucketConfig, settings) -> None:
    settings.BUCKETHEAD = {**settings.BUCKETHEAD, "KEEP_SNAPSHOTS": 2}
    seed(reader, k="v1")
    first = current_record(open_object_store(reader), reader.key)
    data = call_json("snapshot")
    label = data["snapshot"]["name"]
    assert re.fullmatch(r"manual-\d{8}T\d{6}Z-[0-9a-f]{4}", label)
    assert (data["flushed"], data["source"]["name"], data["source"]["current"]) == (False, first.name, True)
    assert (data["snapshot"]["kind"], data["snapshot"]["signed"]) == ("labelled", True)
    for value in ("v2", "v3", "v4"):
        with server_engine(reader, snapshot_config=get_settings().snapshot_config()) as server:
            server.kv.set("k", value)
    history = call_json("history")
    assert [e["kind"] for e in history] == ["generation", "generation", "labelled"], "retention kept the newest two"
    assert first.name not in [e["name"] for e in history]
    assert history[-1]["name"] == label
    assert kv_in_bucket(reader, label) == {"k": "v1"}


def test_snapshot_refuses_a_bad_or_taken_label_and_an_empty_bucket(reader: BucketConfig) -> None:
    assert "nothing to copy" in str(refusal("snapshot"))
    seed(reader, k="v")
    call("snapshot", "--label", "keep")
    before = bucket_state(reader)
    assert "already exists" in str(refusal("snapshot", "--label", "keep"))
    assert "is not valid" in str(refusal("snapshot", "--label", "../etc"))
    assert "is not valid" in str(refusal("snapshot", "--label", "latest"))
    assert bucket_state(reader) == before


def test_history_lists_every_restorable_snapshot(reader: BucketConfig) -> None:
    assert "No snapshots yet in " in call("history").out
    seed(reader, k="1")
    seed(reader, k="2")
    call("snapshot", "--label", "release-1.2")
    newest, older = (e for e in entries(reader) if e.kind == "generation")
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
    assert data[0]["key"] == f"{reader.key}.generations/{newest.name}.json"
    assert data[2]["key"] == f"{reader.key}.labels/release-1.2.json"
    assert all(e["size"] > 0 and e["last_modified"] and e["signed"] and len(e["sha256"]) == 64 for e in data)


# -- restore -----------------------------------------------------------------------------------


def test_restore_a_snapshot_keeps_the_state_it_replaces(reader: BucketConfig) -> None:
    seed(reader, k="old")
    seed(reader, k="new")
    out = call("restore", "previous", "--yes").out
    assert "Restored snapshot 'previous'" in out
    assert kv_in_bucket(reader) == {"k": "old"}
    kept = re.search(r"kept as snapshot '(pre-restore-[^']+)'; to undo: manage.py buckethead restore \1", out)
    assert kept, out
    assert kv_in_bucket(reader, kept[1]) == {"k": "new"}

    call("restore", kept[1], "--yes")
    assert kv_in_bucket(reader) == {"k": "new"}, "the restore was undone"
    assert call_json("status")["writer"] is None, "the command's own writer released the bucket"


def test_restore_from_a_local_sqlite_file(reader: BucketConfig, tmp_path: Path) -> None:
    elsewhere = BucketConfig.local(tmp_path / "elsewhere")
    seed(elsewhere, k="from the file")
    copy = tmp_path / "copy.db"
    copy.write_bytes(snapshot_bytes(open_object_store(elsewhere)))
    seed(reader, k="live")
    data = call_json("restore", "--file", str(copy), "--yes")
    assert data["from"] == "file"
    assert data["current"]["signed"], "the restored file is signed as it becomes a generation"
    assert data["kept"]["name"].startswith("pre-restore-")
    assert kv_in_bucket(reader) == {"k": "from the file"}
    assert kv_in_bucket(reader, data["kept"]["name"]) == {"k": "live"}


def test_restore_validates_first_and_changes_nothing_on_bad_input(reader: BucketConfig, tmp_path: Path) -> None:
    seed(reader, k="v")
    seed(reader, k="w")
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello")
    truncated = tmp_path / "truncated.db"
    good = snapshot_bytes(open_object_store(reader))
    truncated.write_bytes(good[: len(good) // 2])
    call("snapshot", "--label", "broken")
    open_object_store(reader).put(f"{reader.key}.labels/broken.chunk0000", b"SQLite format 3\x00" + b"\x00" * 4000)
    project_keys = get_settings().signing_keys()
    with server_engine(reader, signing_key=b"another project's key", verify_keys=project_keys) as stranger:
        stranger.snapshot("forged")  # a snapshot this project's key did not sign
    names = ", ".join(e.name for e in entries(reader))
    before = bucket_state(reader)

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
    assert bucket_state(reader) == before
    assert kv_in_bucket(reader) == {"k": "w"}


def test_restore_asks_for_confirmation(reader: BucketConfig) -> None:
    seed(reader, k="old")
    seed(reader, k="new")
    before = bucket_state(reader)
    assert "cancelled: nothing was changed" in str(refusal("restore", "previous", stdin="no\n"))
    assert "standard input is closed" in str(refusal("restore", "previous", stdin=""))
    assert bucket_state(reader) == before

    result = call("restore", "previous", stdin="yes\n")
    assert "Restore snapshot 'previous' (" in result.err
    assert "Type 'yes' to continue" in result.err
    assert kv_in_bucket(reader) == {"k": "old"}


def test_restore_is_refused_while_a_live_writer_holds_the_bucket(
    reader: BucketConfig, make_engine: EngineFactory
) -> None:
    seed(reader, k="old")
    seed(reader, k="new")
    server = make_engine(**signing()).start()
    before = bucket_state(reader)

    error = refusal("restore", "previous", "--yes")
    assert error.returncode == WRITER_RUNNING
    message = str(error)
    assert message.startswith("refusing to restore snapshot 'previous'")
    assert "a live writer holds the bucket" in message
    assert "Its next flush would silently overwrite the change" in message
    assert "Stop the server" in message
    assert "Django admin" in message
    assert message.endswith("Nothing was changed.")
    assert bucket_state(reader) == before

    server.kv.set("k", "the server's")
    server.stop()
    assert kv_in_bucket(reader) == {"k": "the server's"}


def test_restore_recovers_from_a_damaged_current_snapshot(reader: BucketConfig) -> None:
    seed(reader, k="good")
    good = current_record(open_object_store(reader), reader.key)
    seed(reader, k="newer")
    damaged = damage_current(reader)
    before = bucket_state(reader)

    error = str(refusal("kv", "get", "k"))
    assert f"snapshot object '{reader.key}.generations/{damaged}.chunk0000' failed verification" in error
    assert "this process did not start" in error
    assert f"`python manage.py buckethead restore {good.name}`" in error, "the error says how to recover"
    assert "\n" not in error
    refused = str(refusal("restore", "latest", "--yes"))
    assert f"snapshot 'latest' ({damaged}, " in refused
    assert "cannot be restored either: it failed verification (its content does not match its record" in refused
    assert bucket_state(reader) == before, "nothing was changed"

    data = call_json("restore", good.name, "--yes")
    assert (data["latest_was_damaged"], data["kept"]) == (True, None)
    assert data["damaged"]["name"] == damaged
    assert data["damaged"]["key"] == f"{reader.key}.generations/{damaged}.chunk0000"
    assert data["current"]["current"]
    assert data["current"]["signed"]
    assert data["current"]["name"] not in (good.name, damaged), "the restored data is a new generation"
    assert kv_in_bucket(reader) == {"k": "good"}
    assert call("kv", "get", "k").out == "good\n"
    history = {e.name: e for e in entries(reader)}
    assert damaged in history, "the damaged generation stays until retention prunes it"
    assert good.name in history, "the source is left as it was"

    with server_engine(reader) as server:  # a writer starts again, from the restored data
        assert server.kv.get("k") == "good"
        server.kv.set("k", "serving again")
    assert kv_in_bucket(reader) == {"k": "serving again"}


def test_restore_of_a_file_over_a_damaged_current_snapshot_says_what_happened(
    reader: BucketConfig, tmp_path: Path
) -> None:
    seed(reader, k="in the bucket")
    copy = tmp_path / "repaired.db"
    copy.write_bytes(snapshot_bytes(open_object_store(reader)))
    seed(reader, k="newer")
    damaged = damage_current(reader)
    out = call("restore", "--file", str(copy), "--yes").out
    assert f"Restored the file {copy} (" in out
    assert f"The current snapshot ({damaged}) could not be loaded (its content does not match its record" in out
    assert "so it could not be kept first; it stays in the bucket until retention prunes it." in out
    current = current_record(open_object_store(reader), reader.key)
    assert f"The current generation is now {current.name}: the next writer starts from it." in out
    assert call("kv", "get", "k").out == "in the bucket\n"


def test_an_unreadable_current_record_is_reported_and_restore_gets_out_of_it(reader: BucketConfig) -> None:
    seed(reader, k="good")
    good = current_record(open_object_store(reader), reader.key)
    open_object_store(reader).put(f"{reader.key}.current", b"{ not json")

    status = call("status").out
    assert f"cannot be read: snapshot object '{reader.key}.current' failed verification" in status
    assert good.name in [e["name"] for e in call_json("history")], "history still lists every generation"
    refused = str(refusal("kv", "get", "k"))
    assert f"`python manage.py buckethead restore {good.name}`" in refused, "the error names the way out"

    call("restore", good.name, "--yes")
    assert call("kv", "get", "k").out == "good\n"


def test_restore_in_the_writer_replaces_its_live_database(writer: BucketSQLite, bucket_config: BucketConfig) -> None:
    writer.kv.set("k", "old")
    writer.force_flush()
    writer.kv.set("k", "new")
    writer.force_flush()
    call("restore", "previous", "--yes")
    assert writer.kv.get("k") == "old"
    assert kv_in_bucket(bucket_config) == {"k": "old"}


def test_restore_to_file_downloads_a_plain_sqlite_file(reader: BucketConfig, tmp_path: Path) -> None:
    seed(reader, k="old")
    seed(reader, k="new")
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

    damage_current(reader)
    damaged = str(refusal("restore", "--to-file", str(tmp_path / "damaged.db")))
    assert "snapshot 'latest' failed verification (its content does not match its record" in damaged
    assert not (tmp_path / "damaged.db").exists(), "nothing that failed verification is left behind"

    before = bucket_state(reader)
    assert "already exists" in str(refusal("restore", "--to-file", str(latest)))
    assert "no snapshot named 'nope'" in str(refusal("restore", "nope", "--to-file", str(tmp_path / "x.db")))
    assert "cannot be used with --file" in str(refusal("restore", "--file", str(latest), "--to-file", "y.db"))
    assert not (tmp_path / "x.db").exists()
    assert bucket_state(reader) == before


def test_a_big_download_shows_a_progress_bar_only_on_a_terminal(reader: BucketConfig, tmp_path: Path) -> None:
    with server_engine(reader) as writer:
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


def test_kv_reads_come_from_the_latest_snapshot_and_say_as_of_when(reader: BucketConfig) -> None:
    seed(reader, **{"user/1": "alice", "user/2": "bob", "other": "x"})
    result = call("kv", "get", "user/1")
    assert result.out == "alice\n"
    assert re.search(r"As of the latest snapshot, written \d{4}-.* UTC \((just now|\d+ seconds? ago)\)", result.err)

    lines = call("kv", "list", "--prefix", "user/").out.splitlines()
    assert lines[0].split() == ["KEY", "SIZE", "EXPIRES"]
    assert [line.split() for line in lines[1:]] == [
        ["user/1", "5", "bytes", "never"],
        ["user/2", "3", "bytes", "never"],
        ["2", "of", "2", "keys"],
    ]
    assert call("kv", "list", "--limit", "1").out.splitlines()[-1] == "1 of 3 keys (use --limit to see more)"
    data = call_json("kv", "list")
    assert data["as_of"]
    assert data["total"] == 3
    assert [k["key"] for k in data["keys"]] == ["other", "user/1", "user/2"]


def test_kv_get_shows_any_value_in_the_encoding_asked_for(reader: BucketConfig) -> None:
    with server_engine(reader) as writer:
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
    assert data["as_of"]
    assert "cannot be combined with --json" in str(refusal("kv", "get", "bin", "--bytes", "--json"))
    assert re.search(r"no KV key 'missing' as of the snapshot written \d{4}-", str(refusal("kv", "get", "missing")))


def test_kv_set_and_delete_without_a_running_writer_flush_to_the_bucket(reader: BucketConfig) -> None:
    seed(reader, keep="1")
    out = call("kv", "set", "feature", "on", "--ttl", "3600").out
    assert out.startswith("Set 'feature' (2 bytes, expires in 59 minutes) and flushed it to ")
    assert kv_in_bucket(reader) == {"keep": "1", "feature": "on"}
    call("kv", "delete", "keep")
    assert kv_in_bucket(reader) == {"feature": "on"}

    before = bucket_state(reader)
    assert "there is no KV key 'nope'" in str(refusal("kv", "delete", "nope"))
    assert bucket_state(reader) == before
    assert call_json("status")["writer"] is None


def test_changes_are_refused_while_a_live_writer_holds_the_bucket(
    reader: BucketConfig, make_engine: EngineFactory
) -> None:
    seed(reader, k="v")
    make_engine(**signing()).start()
    before = bucket_state(reader)
    for args in (["kv", "set", "k", "changed"], ["kv", "delete", "k"], ["files", "gc"]):
        error = refusal(*args)
        assert error.returncode == WRITER_RUNNING
        assert "a live writer holds the bucket" in str(error)
    assert "files gc --dry-run" in str(refusal("files", "gc"))
    assert bucket_state(reader) == before
    assert call("kv", "get", "k").out == "v\n", "reads still work, from the latest snapshot"


def test_kv_in_the_writer_changes_its_live_state(writer: BucketSQLite, bucket_config: BucketConfig) -> None:
    call("kv", "set", "k", "v")
    assert writer.kv.get("k") == "v"
    assert kv_in_bucket(bucket_config) == {"k": "v"}
    result = call("kv", "get", "k")
    assert (result.out, result.err) == ("v\n", ""), "the writer's own state is live: no 'as of' note"


# -- files ---------------------------------------------------------------------------------------


def test_files_list_and_get(reader: BucketConfig, tmp_path: Path) -> None:
    with server_engine(reader) as writer:
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


def test_files_gc_reports_and_deletes_old_unreferenced_blobs(reader: BucketConfig) -> None:
    with server_engine(reader) as writer:
        kept = writer.files.put(b"referenced")
    store = open_object_store(reader)
    orphan = hashlib.sha256(b"orphan").hexdigest()
    store.put(f"files/{orphan}", b"orphan")

    dry = call("files", "gc", "--dry-run", "--grace-seconds", "0").out
    assert dry.splitlines()[:2] == ["Would delete 1 unreferenced blobs.", f"  files/{orphan}"]
    assert store.head(f"files/{orphan}") is not None

    assert "Kept 1 unreferenced blobs younger than 3600 seconds." in call("files", "gc").out
    assert call("files", "gc", "--grace-seconds", "0").out.startswith("Deleted 1 unreferenced blobs.")
    assert store.head(f"files/{orphan}") is None
    assert store.head(f"files/{kept}") is not None


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kv", "get"], "the following arguments are required: KEY"),
        (["kv", "list", "--limit", "0"], "'0' is not a positive whole number"),
        (["kv", "set", "k", "v", "--ttl", "-1"], "'-1' is not a number of seconds"),
        (["kv", "get", "k", "--hex", "--base64"], "not allowed with argument"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: SUBCOMMAND"),
    ],
)
def test_wrong_flags_are_command_errors(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call(*args)


def test_an_unreachable_bucket_or_bad_settings_is_one_clear_error(as_reader: None, settings) -> None:
    settings.BUCKETHEAD = {
        "BACKEND": "s3",
        "BUCKET": "nowhere",
        "ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": "id",
        "SECRET_ACCESS_KEY": SECRET,
        "MAX_ATTEMPTS": 1,
        "CONNECT_TIMEOUT": 1,
        "STARTUP_TIMEOUT": 0,  # a reader does not wait for the bucket to come up
    }
    for args in (["status"], ["history"], ["kv", "list"]):
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
def test_a_running_server_keeps_the_bucket_and_commands_say_what_to_do(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {} if backend == "local" else env_for(s3_config(request.getfixturevalue("moto")))
    assert run(tmp_path, "kv", "set", "k", "v1", **env).returncode == 0
    assert run(tmp_path, "snapshot", "--label", "first", **env).returncode == 0
    assert run(tmp_path, "kv", "set", "k", "v2", **env).returncode == 0

    with Server("runserver", tmp_path, "--noreload", **env) as server:
        writer = json.loads(run(tmp_path, "status", "--json", **env).stdout)["writer"]
        assert (writer["pid"], writer["live"]) == (server.proc.pid, True)
        for args in (["restore", "first", "--yes"], ["kv", "set", "k", "x"], ["kv", "delete", "k"], ["files", "gc"]):
            refused = run(tmp_path, *args, **env)
            assert refused.returncode == WRITER_RUNNING, refused.stderr
            [line] = error_lines(refused)
            assert line.startswith("CommandError: refusing to ")
            assert f"a live writer holds the bucket ({socket.gethostname()}:{server.proc.pid}, running since" in line
        restore = error_lines(run(tmp_path, "restore", "first", "--yes", **env))[0]
        assert "Stop the server and run this command again, or restore from the Django admin" in restore

        copy = run(tmp_path, "snapshot", "--label", "while-serving", **env)
        assert copy.returncode == 0
        assert "A live writer holds the bucket" in copy.stdout
        read = run(tmp_path, "kv", "get", "k", **env)
        assert (read.returncode, read.stdout) == (0, "v2\n")
        assert "As of the latest snapshot" in read.stderr
        server.stop(signal.SIGTERM)

    restored = run(tmp_path, "restore", "first", "--yes", **env)
    assert restored.returncode == 0, restored.stderr
    with Server("runserver", tmp_path, "--noreload", **env):
        pass  # the next server starts from the restored state, and its final flush keeps it
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
