"""Merged deltas: a restore reads a few dozen objects after a day of flushes, and every point stays exact.

Each run of 16 deltas is also written as one merged delta (and each run of
16 of those as one of the next level); a restore takes the fewest objects
that lead to its point. Integration tests run on a local directory and on a
bucket on the moto server, over HTTP.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest

from buckethead_django.engine import History, SnapshotConfig
from buckethead_django.engine.chain import MERGE_FANOUT, Link, merges_due, path, points, span_of, thinned
from buckethead_django.engine.delta import apply, encode, merge
from buckethead_django.engine.history import point_name

from .conftest import EngineFactory
from .recording_store import RecordingStore
from .snapshots import KEY
from .test_deltas import bodies, fill, restored, write

PAGE = 512


# -- the chain, as pure functions ---------------------------------------------------------------


def plain(n: int, at: float = 0.0) -> Link:
    return Link(n, n, at, f"g.d{n:08d}")


def merged(first: int, last: int, at: float = 0.0) -> Link:
    return Link(first, last, at, f"g.m{first:08d}-{last:08d}")


def test_merges_are_due_at_the_end_of_each_aligned_run() -> None:
    assert merges_due(15) == []
    assert merges_due(16) == [(1, 16)]
    assert merges_due(32) == [(17, 32)]
    assert merges_due(256) == [(241, 256), (1, 256)]
    assert merges_due(0) == []


def test_a_restore_takes_the_fewest_links() -> None:
    links = [plain(n) for n in range(1, 300)] + [merged(a, a + 15) for a in range(1, 289, 16)] + [merged(1, 256)]
    route = path(links, 299)
    assert [(x.first, x.last) for x in route] == [(1, 256), (257, 272), (273, 288), *((n, n) for n in range(289, 300))]
    assert [(x.first, x.last) for x in path(links, 20)] == [(1, 16), (17, 17), (18, 18), (19, 19), (20, 20)]
    assert path(links, 0) == []


def test_every_point_a_link_reaches_is_restorable_and_a_gap_ends_the_chain() -> None:
    links = [plain(n) for n in (1, 2, 3, 5, 6)]
    assert [n for n, _ in points(links)] == [1, 2, 3]
    with pytest.raises(KeyError):
        path(links, 5)
    # A merged delta over the gap makes what follows it reachable again.
    assert [n for n, _ in points([*links, merged(1, 16), plain(17)])] == [1, 2, 3, 16, 17]


def test_only_what_an_old_merged_delta_covers_is_thinned() -> None:
    links = [plain(n, at=n) for n in range(1, 40)] + [merged(1, 16, at=16.5), merged(17, 32, at=32.5)]
    doomed = thinned(links, plain_before=20, merged_before=None)
    assert sorted(x.last for x in doomed) == list(range(1, 17)), "only deltas 1-16: the run 17-32 is not all old"
    left = [x for x in links if x not in doomed]
    assert [n for n, _ in points(left)][:3] == [16, 17, 18]
    assert path(left, 39)[0].last == 16
    assert thinned(links, plain_before=None, merged_before=100) == [], "no merged delta covers another"


def test_merged_deltas_a_longer_one_covers_are_thinned_at_their_own_age() -> None:
    runs = [merged(a, a + 15, at=a + 15.5) for a in range(1, 513, 16)]
    links = [*runs, merged(1, 256, at=256.6), merged(257, 512, at=512.6), *(plain(n, at=n) for n in range(497, 520))]
    doomed = thinned(links, plain_before=None, merged_before=300)
    assert [(x.first, x.last) for x in doomed] == [(a, a + 15) for a in range(1, 257, 16)]
    left = [x for x in links if x not in doomed]
    assert [(x.first, x.last) for x in path(left, 519)] == [(1, 256), (257, 512), *((n, n) for n in range(513, 520))]
    assert [n for n, _ in points(left)][:2] == [256, 272], "past the age, the points are the runs' ends"


# -- merging pages ------------------------------------------------------------------------------


def test_a_merged_delta_writes_exactly_what_its_run_writes(tmp_path: Path) -> None:
    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    base = bytes(rng.getrandbits(8) for _ in range(PAGE * 40))
    runs = []
    sizes = [40, 42, 30, 35, 20, 38, 38]  # it shrinks twice, and grows back over pages cut off
    for seq, size in enumerate(sizes, start=1):
        changed = {n: bytes([seq]) * PAGE for n in rng.sample(range(1, size + 3), 6)}
        _, delta = encode(
            generation="g", seq=seq, created_at=0.0, writer="w", parent="", page_size=PAGE, db_pages=size,
            pages=changed, signing_key=None,
        )  # fmt: skip
        runs.append(delta)

    one_by_one, at_once = tmp_path / "one", tmp_path / "merged"
    for target in (one_by_one, at_once):
        target.write_bytes(base)
    apply(runs, one_by_one)
    _, whole = merge(runs, created_at=0.0, writer="w", signing_key=None)
    assert (whole.first, whole.header.seq) == (1, len(runs))
    apply([whole], at_once)
    assert at_once.read_bytes() == one_by_one.read_bytes()


# -- the engine ---------------------------------------------------------------------------------


def test_runs_of_deltas_are_merged_and_every_point_restores_exactly(
    make_engine: EngineFactory, recording: RecordingStore
) -> None:
    bh = make_engine(store=recording, snapshot=SnapshotConfig(min_interval_seconds=0)).start()
    fill(bh, 400)
    bh.force_flush()
    states = {}
    for i in range(2 * MERGE_FANOUT + 3):
        write(bh, "UPDATE notes SET body = ? WHERE id = ?", f"version {i}", i % 20 + 1)
        if i % 5 == 0:
            write(bh, "INSERT INTO notes (body) VALUES (?)", f"added {i}")  # the database grows inside a run
        recording.gets.clear()
        bh.force_flush()
        if i == MERGE_FANOUT - 1:
            assert [k for k in recording.gets if span_of(k)] == [], "a merge reads back none of the deltas it merges"
        states[bh.replicator.current_point] = bodies(restored(recording))

    history = History(recording, KEY)
    generation = history.current().record.name
    keys = {x.key.rsplit(".", 1)[1] for x in history.links(generation)}
    assert len(history.generations()) == 1, "every flush was a delta of one generation"
    assert {"m00000001-00000016", "m00000017-00000032"} <= keys

    recording.gets.clear()
    assert bodies(restored(recording)) == states[point_name(generation, 2 * MERGE_FANOUT + 3)]
    deltas_read = [k for k in recording.gets if span_of(k) is not None]
    assert len(deltas_read) == 2 + 3, f"two merged deltas and the three after them, not {deltas_read}"
    for point, expected in states.items():
        assert bodies(restored(recording, name=point)) == expected, f"{point} restores the state of its flush"


def test_a_corrupt_merged_delta_is_passed_by_through_the_deltas_it_stands_for(
    make_engine: EngineFactory, recording: RecordingStore, caplog: pytest.LogCaptureFixture
) -> None:
    bh = make_engine(store=recording, snapshot=SnapshotConfig(min_interval_seconds=0)).start()
    fill(bh, 20)
    bh.force_flush()
    for i in range(MERGE_FANOUT + 1):
        write(bh, "UPDATE notes SET body = ? WHERE id = 1", f"version {i}")
        bh.force_flush()
    history = History(recording, KEY)
    generation = history.current().record.name
    bad = history.delta_key(generation, MERGE_FANOUT, first=1)
    data = bytearray(recording.get(bad))
    data[-5] ^= 0xFF
    recording.inner.delete(bad)
    recording.inner.put(bad, bytes(data))

    assert bodies(restored(recording))[0] == f"version {MERGE_FANOUT}"
    assert bad in caplog.text, "the damaged object is named in the log"


def test_old_deltas_a_merged_delta_stands_for_are_deleted_and_later_points_stay_exact(
    make_engine: EngineFactory, recording: RecordingStore
) -> None:
    config = SnapshotConfig(min_interval_seconds=0, keep_every_flush_seconds=1.0)
    bh = make_engine(store=recording, snapshot=config).start()
    fill(bh, 20)
    bh.force_flush()
    for i in range(2 * MERGE_FANOUT):
        write(bh, "UPDATE notes SET body = ? WHERE id = 1", f"version {i}")
        bh.force_flush()
        if i == MERGE_FANOUT - 1:
            time.sleep(1.2)  # deltas 1-16 and their merged delta are past keep_every_flush_seconds now
    history = History(recording, KEY)
    generation = history.current().record.name
    left = {x.key.rsplit(".", 1)[1] for x in history.links(generation)}
    assert not any(f"d{n:08d}" in left for n in range(1, MERGE_FANOUT + 1)), "the old deltas are thinned"
    assert f"d{MERGE_FANOUT + 1:08d}" in left, "the young ones stay"
    listed = [p.deltas for p in history.points() if p.generation.name == generation]
    assert 5 not in listed, "a point inside the old run is no longer restorable"
    assert MERGE_FANOUT in listed, "the point at its end is"
    for point in (MERGE_FANOUT, MERGE_FANOUT + 3):
        assert bodies(restored(recording, name=point_name(generation, point)))[0] == f"version {point - 1}"
    assert bodies(restored(recording))[0] == f"version {2 * MERGE_FANOUT - 1}"


def test_a_merged_delta_restores_into_a_file_sqlite_accepts(make_engine: EngineFactory, tmp_path: Path) -> None:
    bh = make_engine(snapshot=SnapshotConfig(min_interval_seconds=0)).start()
    fill(bh, 200)
    bh.force_flush()
    for i in range(MERGE_FANOUT):
        write(bh, "INSERT INTO notes (body) VALUES (?)", f"added {i}" * 50)
        bh.force_flush()
    history = History(bh.store, KEY)
    entry = history.find("latest")
    target = tmp_path / "restored.db"
    history.fetch(entry.record, target, keys=(), deltas=entry.deltas)
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 200 + MERGE_FANOUT
