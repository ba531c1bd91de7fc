"""Generations, retention, verified and signed snapshots, fencing, lease waiting, crashes mid-flush."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from buckethead_django.engine import (
    BucketConfig,
    BucketSQLite,
    BucketUnavailable,
    CurrentSnapshotCorrupt,
    History,
    SnapshotConfig,
    WriterConflict,
    WriterFenced,
    read_lease,
)
from buckethead_django.engine.history import GenerationObjects, retained
from buckethead_django.engine.lease import WriterLease, lease_key
from buckethead_django.engine.lineage import generation_seq
from buckethead_django.engine.objectstore import ObjectStore, iter_objects
from buckethead_django.engine.retry import backoff

from .conftest import EngineFactory, unreachable_config
from .snapshots import KEY, current_record, snapshot_bytes

SIGNING_KEY = b"k" * 32
OTHER_KEY = b"o" * 32


#: A compaction ratio so small that every flush writes a new base: the generations themselves are under test here
#: (deltas are in test_deltas.py).
EVERY_FLUSH_A_BASE = 1e-12
#: Retention by count alone: no generation kept for its age or its day.
COUNT_ONLY: dict[str, Any] = {"keep_max_age_seconds": None, "keep_daily": 0}


@pytest.fixture
def make_engine(make_engine: EngineFactory) -> EngineFactory:
    """The suite's engines, with every flush a new generation."""

    def factory(*args: Any, snapshot: SnapshotConfig | None = None, **kwargs: Any) -> BucketSQLite:
        snapshot = replace(snapshot or SnapshotConfig(min_interval_seconds=0), compact_ratio=EVERY_FLUSH_A_BASE)
        return make_engine(*args, snapshot=snapshot, **kwargs)

    return factory


def value_in(image: bytes, key: str) -> bytes | None:
    conn = sqlite3.connect(":memory:")
    conn.deserialize(image)
    row = conn.execute("SELECT value FROM bh_kv WHERE key=?", (key,)).fetchone()
    return row[0] if row else None


def generation_names(store: ObjectStore) -> list[str]:
    return [g.name for g in History(store, KEY).generations()]


def flushes(bh: BucketSQLite, count: int) -> list[str]:
    """Make ``count`` generations, each with ``v`` set to its number; returns their names."""
    names = []
    for i in range(count):
        bh.kv.set("v", str(i))
        result = bh.force_flush()
        assert result.uploaded
        names.append(str(result.generation))
    return names


# -- generations and retention -------------------------------------------------------------


def test_every_flush_is_a_new_generation_and_any_retained_one_restores(make_engine: EngineFactory) -> None:
    with make_engine() as bh:
        names = flushes(bh, 3)
    assert generation_names(bh.store) == names, "one generation per flush, in order"
    assert [generation_seq(n) for n in names] == [1, 2, 3]
    for i, name in enumerate(names):
        assert value_in(snapshot_bytes(bh.store, name), "v") == str(i).encode()
    with make_engine() as again:
        assert again.restored_from is not None
        assert again.restored_from.name == names[-1]
        assert again.kv.get("v") == "2"


def test_retention_keeps_exactly_the_newest_and_never_a_label(make_engine: EngineFactory) -> None:
    bh = make_engine(snapshot=SnapshotConfig(min_interval_seconds=0, keep_snapshots=3, **COUNT_ONLY)).start()
    names = flushes(bh, 2)
    bh.snapshot(label="release-1")
    names += flushes(bh, 4)
    assert generation_names(bh.store) == names[-3:], "exactly the newest three generations are left"
    assert value_in(snapshot_bytes(bh.store, "release-1"), "v") == b"1", "labelled snapshots are never pruned"
    assert not [o.key for o in iter_objects(bh.store, KEY + ".generations/") if o.key.split("/")[-1][:21] in names[:3]]


def test_retention_by_age_keeps_young_generations_beyond_the_count(make_engine: EngineFactory) -> None:
    bh = make_engine(
        snapshot=SnapshotConfig(
            min_interval_seconds=0, keep_snapshots=1, keep_previous=False, keep_max_age_seconds=3600
        )
    ).start()
    names = flushes(bh, 4)
    assert generation_names(bh.store) == names, "all four are younger than an hour"


def test_the_retention_rule() -> None:
    def gen(seq: int, age: float) -> GenerationObjects:
        return GenerationObjects(name=f"g{seq}", seq=seq, created_at=1000.0 - age, keys=(), has_record=True)

    found = [gen(1, 500), gen(2, 400), gen(3, 300), gen(4, 20), gen(5, 10)]
    assert retained(found, current="g5", keep=2, max_age_seconds=None, now=1000) == {"g4", "g5"}
    assert retained(found, current="g5", keep=1, max_age_seconds=350, now=1000) == {"g2", "g3", "g4", "g5"}, (
        "the generation before the oldest young one is kept too: its deltas reach until the next base"
    )
    assert retained(found, current="g3", keep=1, max_age_seconds=None, now=1000, daily=1) == {"g3", "g5"}, (
        "the newest of the day is kept beside the current one"
    )
    assert retained(found, current="g5", keep=1, max_age_seconds=None, now=90_000, daily=2) == {"g5"}, (
        "one generation a day: all five were written on the same day"
    )
    assert retained(found, current="g1", keep=2, max_age_seconds=None, now=1000) == {"g1", "g4", "g5"}, (
        "the current generation survives even when older ones are newer than it"
    )


def test_keep_previous_keeps_at_least_one_generation_before_the_current_one() -> None:
    assert SnapshotConfig(keep_snapshots=1).generations_kept == 2
    assert SnapshotConfig(keep_snapshots=1, keep_previous=False).generations_kept == 1
    with pytest.raises(ValueError, match="keep_snapshots"):
        SnapshotConfig(keep_snapshots=0)


# -- verification and signing -------------------------------------------------------------


def damage_chunk(store: ObjectStore, how: str) -> str:
    record = current_record(store)
    assert record is not None
    chunk = record.chunks[0].key
    good = store.get(chunk)
    if how == "corrupt":
        store.put(chunk, good[:5000] + bytes(b ^ 0xFF for b in good[5000:5100]) + good[5100:])
    elif how == "truncated":
        store.put(chunk, good[: len(good) // 2])
    return chunk


def tamper_record(store: ObjectStore) -> str:
    """Swap the current generation's data for another valid database, fixing its digests but not its HMAC."""
    other = sqlite3.connect(":memory:")
    other.execute("CREATE TABLE bh_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, created_at REAL, updated_at REAL)")
    other.execute("INSERT INTO bh_kv VALUES ('v', CAST('evil' AS BLOB), 0, 0)")
    other.commit()
    data = other.serialize()
    current = History(store, KEY).current()
    assert current is not None
    assert current.record is not None
    record = current.record
    digest = hashlib.sha256(data).hexdigest()
    store.put(record.chunks[0].key, data)
    forged = replace(
        record, size=len(data), sha256=digest, chunks=(replace(record.chunks[0], size=len(data), sha256=digest),)
    )
    body = json.loads(store.get(History(store, KEY).current_key))
    body["record"] = json.loads(forged.to_json())
    store.put(History(store, KEY).current_key, json.dumps(body).encode())
    store.put(record.key, forged.to_json())
    return record.key


@pytest.mark.parametrize("how", ["corrupt", "truncated", "tampered"])
def test_a_bad_current_snapshot_is_refused_naming_the_newest_good_one(make_engine: EngineFactory, how: str) -> None:
    with make_engine(signing_key=SIGNING_KEY) as bh:
        good, _bad = flushes(bh, 2)
    store = bh.store
    blamed = tamper_record(store) if how == "tampered" else damage_chunk(store, how)
    before = {o.key: o.etag for o in iter_objects(store)}
    refused = make_engine(signing_key=SIGNING_KEY)
    with pytest.raises(CurrentSnapshotCorrupt) as err:
        refused.start()
    message = str(err.value)
    assert blamed in message, "the error names the object at fault"
    assert err.value.restorable == good
    assert f"python manage.py buckethead restore {good}" in message
    assert "HMAC" in message if how == "tampered" else "HMAC" not in message
    assert not refused.started
    assert read_lease(store, KEY) is None, "a writer that did not start leaves no lease behind"
    assert {o.key: o.etag for o in iter_objects(store)} == before, "nothing in the bucket changed"

    make_engine(signing_key=SIGNING_KEY).recover(good)
    with make_engine(signing_key=SIGNING_KEY) as recovered:
        assert recovered.kv.get("v") == "0", "the named good generation is the current state again"


def test_an_unsigned_or_foreign_snapshot_is_refused_when_a_key_is_configured(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    with make_engine() as unsigned:
        unsigned.kv.set("v", "x")
    with pytest.raises(CurrentSnapshotCorrupt, match="not signed"):
        make_engine(signing_key=SIGNING_KEY).start()

    local_copy = tmp_path / "copy.db"
    with sqlite3.connect(local_copy) as conn:
        conn.execute("CREATE TABLE bh_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, created_at REAL, updated_at REAL)")
        conn.execute("INSERT INTO bh_kv VALUES ('v', CAST('y' AS BLOB), 0, 0)")
    conn.close()
    make_engine(signing_key=OTHER_KEY).recover(local_copy)  # an operator's own file is trusted, then signed
    with pytest.raises(CurrentSnapshotCorrupt, match="HMAC does not match"):
        make_engine(signing_key=SIGNING_KEY).start()
    with make_engine(signing_key=SIGNING_KEY, verify_keys=[OTHER_KEY]) as rotated:
        assert rotated.kv.get("v") == "y", "a fallback key verifies snapshots written before a rotation"
        rotated.kv.set("v", "z")
    record = current_record(unsigned.store)
    assert record is not None
    record.verify_signature([SIGNING_KEY])  # new generations are signed with the new key


def test_a_missing_current_record_is_not_an_empty_bucket(make_engine: EngineFactory) -> None:
    with make_engine() as bh:
        (only,) = flushes(bh, 1)
    bh.store.delete(bh.history.current_key)
    with pytest.raises(CurrentSnapshotCorrupt, match="missing") as err:
        make_engine().start()
    assert err.value.restorable == only


# -- one writer: the lease and fenced commits ---------------------------------------------------


def foreign_lease(store: ObjectStore, seconds: float) -> None:
    now = time.time()
    lease = WriterLease("elsewhere:1", "elsewhere", 1, now, now, now + seconds, token="t")
    store.put(lease_key(KEY), lease.to_json())


def test_a_second_writer_waits_for_the_lease_then_gives_up_with_what_to_do(make_engine: EngineFactory) -> None:
    foreign_lease(make_engine().store, 300)
    with pytest.raises(WriterConflict) as err:
        make_engine(lease_wait=0.3).start()
    message = str(err.value)
    assert "elsewhere:1" in message
    assert "after waiting 0.3s" in message
    assert "LEASE_WAIT" in message
    assert "LEASE_CONFLICT" in message


def test_a_waiting_writer_starts_once_the_holder_releases(make_engine: EngineFactory, store: ObjectStore) -> None:
    with make_engine() as first:
        first.kv.set("handed", "over")
    foreign_lease(store, 300)
    threading.Timer(0.5, lambda: store.delete(lease_key(KEY))).start()
    with make_engine(lease_wait=30) as second:
        assert second.kv.get("handed") == "over"
        lease = read_lease(store, KEY)
        assert lease is not None
        assert lease.pid != 1


def test_a_waiting_writer_takes_over_an_expiring_lease(make_engine: EngineFactory, store: ObjectStore) -> None:
    foreign_lease(store, 1.0)
    with make_engine(lease_wait=30) as bh:
        assert bh.lease is not None
        assert bh.lease.host == socket.gethostname()


def test_a_writer_that_was_taken_over_is_fenced_and_keeps_serving(
    make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    paused = make_engine().start()
    paused.kv.set("who", "paused")
    paused.force_flush()
    # While it is "paused", another writer takes the bucket over (same pid here: a same-process engine may).
    successor = make_engine().start()
    assert successor.kv.get("who") == "paused"
    paused.kv.set("who", "stale write")
    with pytest.raises(WriterFenced, match="taken over") as err:
        paused.force_flush()
    assert successor.writer_id in str(err.value), "it names the writer that took over"
    assert paused.fenced is err.value
    assert paused.last_error is err.value
    assert paused.kv.get("who") == "stale write", "it keeps serving from memory"
    with pytest.raises(WriterFenced):
        paused.flush()
    successor.kv.set("who", "successor")
    successor.force_flush()
    paused.stop()
    saved = re.search(r"is saved in (\S+\.db)", caplog.text)
    assert saved, "the fenced writer says where its unsaved database went"
    assert value_in(Path(saved.group(1)).read_bytes(), "who") == b"stale write", "nothing it held is lost"
    Path(saved.group(1)).unlink()
    assert read_lease(successor.store, KEY) is not None, "the fenced writer leaves the successor's lease alone"
    assert value_in(snapshot_bytes(successor.store), "who") == b"successor"
    successor.stop()
    with make_engine() as after:
        assert after.kv.get("who") == "successor", "the stale write never reached the bucket"


def test_a_taken_over_writer_is_fenced_even_before_the_successor_flushes(make_engine: EngineFactory) -> None:
    paused = make_engine().start()
    paused.kv.set("k", "1")
    paused.force_flush()
    successor = make_engine().start()
    paused.kv.set("k", "stale")
    with pytest.raises(WriterFenced):
        paused.force_flush()
    successor.kv.set("other", "x")
    assert successor.force_flush().uploaded, "the lease holder is not blocked by the fenced writer"


def test_the_lease_renewal_notices_a_takeover(make_engine: EngineFactory) -> None:
    paused = make_engine(lease_seconds=0.4, snapshot=SnapshotConfig(interval_seconds=3600), background_flush=True)
    paused.start()
    successor = make_engine().start()
    deadline = time.monotonic() + 10
    while paused.fenced is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paused.fenced is not None, "its own renewal found the lease taken and fenced it"
    assert successor.fenced is None


# -- outages --------------------------------------------------------------------------------


def test_an_unreachable_bucket_at_startup_fails_after_a_bounded_wait() -> None:
    bh = BucketSQLite(unreachable_config("nowhere"), startup_timeout=1.5, background_flush=False)
    with pytest.raises(BucketUnavailable, match="could not reach bucket 'nowhere'") as err:
        bh.start()
    assert "STARTUP_TIMEOUT" in str(err.value)
    assert not bh.started


def test_a_failed_flush_is_retried_by_the_loop_before_the_next_interval(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bh = make_engine(snapshot=SnapshotConfig(interval_seconds=2, min_interval_seconds=0), background_flush=True)
    bh.start()
    real_put = bh.store.put
    refused: list[str] = []

    def flaky(key: str, *args: object, **kwargs: object) -> object:
        if len(refused) < 3 and ".generations/" in key:
            refused.append(key)
            raise OSError("connection reset")
        return real_put(key, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bh.store, "put", flaky)
    bh.kv.set("k", "after the outage")
    deadline = time.monotonic() + 30
    while (bh.last_upload is None or bh.last_error is not None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(refused) == 3, "the first attempts failed"
    assert bh.last_error is None
    assert value_in(snapshot_bytes(bh.store), "k") == b"after the outage", "the retries caught up on their own"


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 30), (50, 30)]:
        samples = [backoff(attempt, cap=30) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 100, "jittered, so retries of many processes spread out"


# -- crashes in the middle of a flush ---------------------------------------------------------

CRASHER = """
import json, os, sys
from pathlib import Path
from buckethead_django.engine import BucketConfig, BucketSQLite, SnapshotConfig

step, config = sys.argv[1], json.loads(sys.argv[2])
if config.get("local_path"):
    config["local_path"] = Path(config["local_path"])
# Deltas (the default) for the delta steps; else every flush is a new base, the generation's own steps.
ratio = 0.5 if step.startswith("delta") else 1e-12
bh = BucketSQLite(
    BucketConfig(**config),
    SnapshotConfig(keep_snapshots=1, keep_previous=False, keep_max_age_seconds=None, keep_daily=0, compact_ratio=ratio),
    background_flush=False,
)
bh.start()
bh.kv.set("v", "committed")
bh.force_flush()
bh.kv.set("v", "in flight")
store = bh.store
real_put, real_delete = store.put, store.delete

def put(key, *args, **kwargs):
    if step == "after-chunk-upload" and key.endswith(".json"):
        os._exit(9)
    if step == "before-current-update" and key.endswith(".current"):
        os._exit(9)
    if step == "delta-upload" and ".d0" in key:
        os._exit(9)
    info = real_put(key, *args, **kwargs)
    if step == "delta-committed" and ".d0" in key:
        os._exit(9)
    return info

def delete(key):
    real_delete(key)
    if step == "during-retention":
        os._exit(9)

store.put, store.delete = put, delete
bh.force_flush()
os._exit(0)
"""


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("after-chunk-upload", "committed"),
        ("before-current-update", "committed"),
        ("during-retention", "in flight"),
        ("delta-upload", "committed"),
        ("delta-committed", "in flight"),
    ],
)
def test_a_crash_at_any_step_of_a_flush_leaves_a_consistent_bucket(
    step: str, expected: str, bucket_config: BucketConfig, make_engine: EngineFactory
) -> None:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(bucket_config).items()}
    crashed = subprocess.run([sys.executable, "-c", CRASHER, step, json.dumps(config)], check=False, timeout=60)
    assert crashed.returncode == 9, "the process died in the middle of its flush"
    bh = make_engine(snapshot=SnapshotConfig(keep_snapshots=1, keep_previous=False, **COUNT_ONLY)).start()
    assert bh.kv.get("v") == expected
    assert bh.connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    left = bh.history.generations()
    assert all(g.has_record for g in left), "what the crash left half-written is cleaned up at start"
    bh.kv.set("v", "after")
    bh.force_flush()
    assert generation_names(bh.store) == [str(bh.last_upload.generation)], "and retention catches up"  # type: ignore[union-attr]
    bh.stop()
    with make_engine() as again:
        assert again.kv.get("v") == "after"


# -- images in several chunks ------------------------------------------------------------------


def test_an_image_in_several_chunks_restores_and_a_damaged_chunk_is_named(make_engine: EngineFactory) -> None:
    bh = make_engine().start()
    bh.history.chunk_bytes = 64 * 1024  # a 64 KiB chunk: the test's small database still makes several
    for i in range(40):
        bh.kv.set(f"k{i}", "x" * 4000)
    bh.force_flush()
    record = current_record(bh.store)
    assert record is not None
    assert len(record.chunks) > 2, "the image was cut into chunks"
    assert [c.key for c in record.chunks] == [
        bh.history.chunk_key(record.name, "generation", i) for i in range(len(record.chunks))
    ]
    bh.stop()

    with make_engine() as again:  # a new host: the chunks are downloaded (several at once) and verified
        assert again.kv.get("k39") == "x" * 4000

    damaged = record.chunks[1]
    data = bytearray(bh.store.get(damaged.key))
    data[100] ^= 0xFF
    bh.store.delete(damaged.key)
    bh.store.put(damaged.key, bytes(data))
    with pytest.raises(CurrentSnapshotCorrupt) as caught:
        make_engine().start()
    assert caught.value.key == damaged.key, "the one chunk at fault is named"
