"""Adopting a bucket written by the PyPI ``buckethead`` 0.4.1 package."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from buckethead_django.engine import BucketSQLite, History
from buckethead_django.engine.objectstore import ObjectStore, iter_objects

from .conftest import FIXTURE_BUCKET, EngineFactory

pytestmark = pytest.mark.skipif(
    not FIXTURE_BUCKET.exists(), reason="the buckethead 0.4.1 fixture bucket is not beside the checkout"
)


@pytest.fixture
def manifest() -> dict:
    return json.loads((FIXTURE_BUCKET / "manifest.json").read_text("utf-8"))


@pytest.fixture
def adopted_store(store: ObjectStore) -> ObjectStore:
    """The fixture's objects uploaded, key for key, into the test bucket."""
    root = FIXTURE_BUCKET / "bucket"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        store.put(path.relative_to(root).as_posix(), path)
    return store


def expected_kv() -> list[tuple[str, bytes]]:
    entries = []
    for line in (FIXTURE_BUCKET / "expected_kv.jsonl").read_text("utf-8").splitlines():
        row = json.loads(line)
        value = row["value"].encode("utf-8") if "value" in row else base64.b64decode(row["value_b64"])
        entries.append((row["key"], value))
    return entries


def test_every_kv_value_is_read_back(adopted_store: ObjectStore, make_engine: EngineFactory, manifest: dict) -> None:
    with make_engine() as bh:
        entries = expected_kv()
        assert len(bh.kv) == len(entries) == manifest["kv"]["count"]
        for key, value in entries:
            assert bh.kv.get_bytes(key) == value, key
        assert bh.kv.get("json:settings") == '{"a": 2, "b": [1, 2, 3]}'
        assert bh.kv.keys() == sorted(k for k, _ in entries)
        digest = hashlib.sha256()
        for key in sorted(k for k, _ in entries):
            digest.update(key.encode() + b"\x00" + bh.kv.get_bytes(key) + b"\x01")  # type: ignore[operator]
        assert digest.hexdigest() == manifest["kv"]["digest"]["hex"]


def test_files_and_their_metadata_are_read_back(
    adopted_store: ObjectStore, make_engine: EngineFactory, manifest: dict, tmp_path: Path
) -> None:
    with make_engine() as bh:
        for row in manifest["files"]["rows"]:
            info = bh.files.head(row["bh_key"])
            assert info is not None
            assert (info.filename, info.mime, info.size) == (row["filename"], row["mime"], row["size"])
            assert info.metadata == row.get("metadata", {})
            out = tmp_path / row["filename"]
            bh.files.get(row["bh_key"], dest=out)
            assert hashlib.sha256(out.read_bytes()).hexdigest() == row["bh_key"]
        assert bh.files.gc(grace_seconds=0, dry_run=True).deleted == [], "no fixture blob is an orphan"


def test_application_tables_are_kept(adopted_store: ObjectStore, make_engine: EngineFactory, manifest: dict) -> None:
    with make_engine() as bh:
        rows = bh.connection.execute("SELECT * FROM app_users ORDER BY id").fetchall()
        assert [list(r) for r in rows] == manifest["user_table"]["rows"]
        assert bh.connection.execute("SELECT count(*) FROM bh_docs").fetchone() == (4,)


def test_writing_carries_the_bucket_forward_without_deleting_anything(
    adopted_store: ObjectStore, make_engine: EngineFactory
) -> None:
    before = {o.key: o.etag for o in iter_objects(adopted_store)}
    bh: BucketSQLite = make_engine().start()
    assert bh.restored_from is not None
    assert bh.restored_from.name == "legacy"
    bh.kv.set("adopted", "yes")
    bh.stop()
    after = {o.key: o.etag for o in iter_objects(adopted_store)}
    assert {k: after.get(k) for k in before} == before, "every 0.4.x object is still there, unchanged"
    added = sorted(set(after) - set(before))
    assert [k.rsplit(".", 1)[-1] for k in added] == ["current", "chunk0000", "json"], "one new generation"
    with make_engine() as again:
        assert again.restored_from is not None
        assert again.restored_from.kind == "generation", "from now on the generations are the truth"
        assert again.kv.get("adopted") == "yes"
        assert len(again.kv) == 1001
        assert again.connection.execute("SELECT count(*) FROM app_users").fetchone() == (3,)
    names = [e.name for e in History(adopted_store, "bucketsqlite/snap.db").snapshots()]
    assert names[-2:] == ["legacy", "legacy-previous"], "the 0.4.x snapshots stay restorable by name"


def test_an_idle_adoption_changes_no_existing_object(adopted_store: ObjectStore, make_engine: EngineFactory) -> None:
    before = {o.key: o.etag for o in iter_objects(adopted_store)}
    with make_engine() as bh:
        bh.kv.get("json:settings")
    after = {o.key: o.etag for o in iter_objects(adopted_store)}
    assert {k: after.get(k) for k in before} == before
    assert set(after) - set(before) == {"bucketsqlite/snap.db.current"}, "only the writer's claim, no snapshot"
