"""FileStore: content-addressed blobs in the bucket, rows in the ``filestore`` table."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import random
import time
import tracemalloc
from pathlib import Path

import pytest

from buckethead_django.engine import BucketConfig, BucketSQLite, FileStore, ReadOnlyError
from buckethead_django.engine.interfaces import BlobSizeMismatch, InvalidName, NameTaken
from buckethead_django.engine.objectstore import ObjectStore, iter_objects, open_object_store

from .concurrency import run_in_threads
from .conftest import EngineFactory
from .recording_store import RecordingStore


class GeneratedStream(io.RawIOBase):
    """``size`` bytes of a repeating pattern, produced on demand so the test itself holds little memory."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self._block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), self.remaining, len(self._block))
        b[:n] = self._block[:n]
        self.remaining -= n
        return n


def blob_objects(store: ObjectStore) -> list[str]:
    return [o.key for o in iter_objects(store, "files/")]


def test_bh_key_is_the_sha256_of_the_content(engine: BucketSQLite) -> None:
    content = b"hello world"
    bh_key = engine.files.put(content, filename="hello.txt")
    assert bh_key == hashlib.sha256(content).hexdigest()
    info = engine.files.head(bh_key)
    assert info is not None
    assert info.object_key == f"files/{bh_key}"
    assert info.size == len(content)
    assert info.mime == "text/plain"
    assert info.filename == "hello.txt"
    assert engine.store.get(f"files/{bh_key}") == content


def test_same_content_is_stored_once(engine: BucketSQLite) -> None:
    a = engine.files.put(b"same bytes", filename="a.bin")
    b = engine.files.put(io.BytesIO(b"same bytes"), filename="b.bin")
    assert a == b
    assert blob_objects(engine.store) == [f"files/{a}"]
    assert len(engine.files) == 1


def test_put_from_bytes_path_and_stream(engine: BucketSQLite, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(b'{"ok": true}')
    from_path = engine.files.put(path, metadata={"owner": "alice"})
    from_stream = engine.files.put(GeneratedStream(100_000), filename="gen.bin")  # type: ignore[arg-type]
    from_bytes = engine.files.put(b"raw", mime="application/x-custom")
    assert engine.files.head(from_path).filename == "report.json"  # type: ignore[union-attr]
    assert engine.files.head(from_path).mime == "application/json"  # type: ignore[union-attr]
    assert engine.files.metadata(from_path) == {"owner": "alice"}
    assert engine.files.head(from_stream).size == 100_000  # type: ignore[union-attr]
    assert engine.files.head(from_bytes).mime == "application/x-custom"  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        engine.files.metadata("0" * 64)


def test_get_to_bytes_path_and_stream(engine: BucketSQLite, tmp_path: Path) -> None:
    content = os.urandom(300_000)
    bh_key = engine.files.put(content)
    assert engine.files.get(bh_key) == content
    dest = tmp_path / "sub" / "out.bin"
    assert engine.files.get(bh_key, dest=dest) == dest
    assert dest.read_bytes() == content
    buf = io.BytesIO()
    engine.files.get(bh_key, dest=buf)
    assert buf.getvalue() == content
    with engine.files.open(bh_key) as stream:
        assert stream.read() == content


def test_a_blob_of_the_wrong_size_is_detected(engine: BucketSQLite, tmp_path: Path) -> None:
    bh_key = engine.files.put(b"original content")
    engine.store.put(f"files/{bh_key}", b"truncated")  # damaged outside BucketHead
    with pytest.raises(BlobSizeMismatch, match="9 bytes in the bucket but its row records 16"):
        engine.files.get(bh_key)
    dest = tmp_path / "out.bin"
    with pytest.raises(BlobSizeMismatch):
        engine.files.get(bh_key, dest=dest)
    assert not dest.exists(), "no partial file is left behind"


def test_list_is_newest_first_and_paginated(engine: BucketSQLite) -> None:
    keys = [engine.files.put(f"file {i}".encode()) for i in range(5)]
    listed = [info.bh_key for info in engine.files.list(limit=2)]
    assert listed == [keys[4], keys[3]]
    assert [info.bh_key for info in engine.files.list(limit=2, offset=2)] == [keys[2], keys[1]]
    assert len(engine.files.list(limit=100)) == 5


def test_delete_removes_row_and_object(engine: BucketSQLite) -> None:
    bh_key = engine.files.put(b"bye")
    assert engine.files.delete(bh_key) is True
    assert engine.files.exists(bh_key) is False
    engine.force_flush()
    assert blob_objects(engine.store) == []
    assert engine.files.delete(bh_key) is False


def test_invalid_bh_keys_are_refused(engine: BucketSQLite) -> None:
    with pytest.raises(ValueError, match="not a bh-key"):
        engine.files.get("../snap.db")


def test_gc_deletes_old_orphans_keeps_recent_ones_and_reports_missing(engine: BucketSQLite) -> None:
    kept = engine.files.put(b"referenced")
    lost = engine.files.put(b"object will vanish")
    engine.store.delete(f"files/{lost}")
    orphan = hashlib.sha256(b"orphan").hexdigest()
    engine.store.put(f"files/{orphan}", b"orphan")
    engine.store.put("files/not-a-blob.txt", b"left alone")

    recent = engine.files.gc(grace_seconds=3600)
    assert recent.deleted == []
    assert recent.kept_recent == [f"files/{orphan}"]
    assert recent.missing_objects == [f"files/{lost}"]

    preview = engine.files.gc(grace_seconds=0, dry_run=True)
    assert preview.deleted == [f"files/{orphan}"]
    assert engine.store.head(f"files/{orphan}") is not None

    report = engine.files.gc(grace_seconds=0)
    assert report.deleted == [f"files/{orphan}"]
    assert sorted(blob_objects(engine.store)) == sorted([f"files/{kept}", "files/not-a-blob.txt"])


def test_gc_grace_window_uses_object_age(engine: BucketSQLite) -> None:
    orphan = hashlib.sha256(b"o").hexdigest()
    engine.store.put(f"files/{orphan}", b"o")
    time.sleep(1.1)
    assert engine.files.gc(grace_seconds=0.5).deleted == [f"files/{orphan}"]


@pytest.mark.parametrize("via", ["stream", "path"])
def test_a_200_mb_put_keeps_memory_bounded(engine: BucketSQLite, tmp_path: Path, via: str) -> None:
    size = 200 * 1024 * 1024
    if via == "path":
        src: object = tmp_path / "big.bin"
        with open(src, "wb") as f:  # type: ignore[call-overload]
            stream = GeneratedStream(size)
            while chunk := stream.read(1024 * 1024):
                f.write(chunk)
    else:
        src = GeneratedStream(size)
    tracemalloc.start()
    try:
        bh_key = engine.files.put(src)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert engine.files.head(bh_key).size == size  # type: ignore[union-attr]
    assert peak < 32 * 1024 * 1024, f"peak Python allocation {peak / 2**20:.0f} MiB for a 200 MiB put"
    out = tmp_path / "back.bin"
    engine.files.get(bh_key, dest=out)
    assert out.stat().st_size == size


def test_filestore_needs_an_object_store(engine: BucketSQLite) -> None:
    with pytest.raises(TypeError, match="object store"):
        FileStore(engine.connect(check_same_thread=False, autocommit=True))


def test_grandfathered_table_name_and_columns(engine: BucketSQLite) -> None:
    cols = [r[1] for r in engine.connection.execute("PRAGMA table_info(filestore)")]
    assert cols == ["bh_key", "object_key", "size", "mime", "filename", "created_at", "metadata"]


def test_created_at_is_recorded(engine: BucketSQLite) -> None:
    before = time.time()
    info = engine.files.head(engine.files.put(b"t"))
    assert info is not None
    assert before <= info.created_at <= time.time()
    assert dt.datetime.fromtimestamp(info.created_at, tz=dt.UTC).year >= 2024


# -- names ---------------------------------------------------------------------------


def test_names_table_and_index_exist_after_start(engine: BucketSQLite) -> None:
    cols = [r[1] for r in engine.connection.execute("PRAGMA table_info(bh_file_names)")]
    assert cols == ["name", "bh_key", "size", "content_type", "created_at", "modified_at"]
    indexes = [r[1] for r in engine.connection.execute("PRAGMA index_list(bh_file_names)")]
    assert "idx_bh_file_names_bh_key" in indexes


def test_save_name_resolve_and_exists(engine: BucketSQLite) -> None:
    before = time.time()
    named = engine.files.save_name("docs/report.pdf", b"%PDF-1.7 body")
    assert named.name == "docs/report.pdf"
    assert named.bh_key == hashlib.sha256(b"%PDF-1.7 body").hexdigest()
    assert named.size == 13
    assert named.content_type == "application/pdf"
    assert named.object_key == f"files/{named.bh_key}"
    assert before <= named.created_at == named.modified_at <= time.time()
    assert engine.files.resolve("docs/report.pdf") == named
    assert engine.files.name_exists("docs/report.pdf")
    assert not engine.files.name_exists("docs/other.pdf")
    assert engine.files.resolve("docs/other.pdf") is None
    assert engine.files.head(named.bh_key).filename == "report.pdf"  # type: ignore[union-attr]
    assert engine.files.get(named.bh_key) == b"%PDF-1.7 body"


def test_identical_content_under_two_names_is_one_blob(engine: BucketSQLite) -> None:
    a = engine.files.save_name("a.txt", b"shared bytes")
    b = engine.files.save_name("copies/b.md", io.BytesIO(b"shared bytes"), content_type="text/markdown")
    assert a.bh_key == b.bh_key
    assert blob_objects(engine.store) == [f"files/{a.bh_key}"]
    assert (a.content_type, b.content_type) == ("text/plain", "text/markdown"), "the content type is per name"


def test_a_blob_is_deleted_with_its_last_name_only(engine: BucketSQLite) -> None:
    bh_key = engine.files.save_name("one.bin", b"payload").bh_key
    engine.files.save_name("two.bin", b"payload")
    assert engine.files.delete_name("one.bin") is True
    assert not engine.files.name_exists("one.bin")
    assert blob_objects(engine.store) == [f"files/{bh_key}"], "two.bin still uses the blob"
    assert engine.files.exists(bh_key)
    assert engine.files.delete_name("two.bin") is True
    assert blob_objects(engine.store) == [f"files/{bh_key}"], "the object waits for a snapshot without its name"
    engine.force_flush()
    assert blob_objects(engine.store) == []
    assert not engine.files.exists(bh_key)
    assert engine.files.delete_name("two.bin") is False


def test_deleting_a_name_leaves_blobs_put_without_a_name_to_their_owner(engine: BucketSQLite) -> None:
    raw = engine.files.put(b"kept by bh-key")
    engine.files.save_name("named.txt", b"other content")
    engine.files.delete_name("named.txt")
    engine.force_flush()
    assert blob_objects(engine.store) == [f"files/{raw}"]


def test_a_taken_name_is_refused_and_the_new_content_is_not_kept(engine: BucketSQLite) -> None:
    first = engine.files.save_name("taken.txt", b"first")
    with pytest.raises(NameTaken, match="already in use") as excinfo:
        engine.files.save_name("taken.txt", b"second")
    assert isinstance(excinfo.value, FileExistsError)
    assert engine.files.resolve("taken.txt") == first
    assert blob_objects(engine.store) == [f"files/{first.bh_key}"]


def test_overwrite_replaces_the_name_and_collects_the_old_blob(engine: BucketSQLite) -> None:
    old = engine.files.save_name("avatar.png", b"old picture")
    engine.files.save_name("backup.png", b"kept picture")
    time.sleep(0.01)
    new = engine.files.save_name("avatar.png", b"new picture", overwrite=True)
    assert new.bh_key != old.bh_key
    assert new.created_at == old.created_at, "the name was created with the first save"
    assert new.modified_at > old.modified_at
    assert engine.files.get(engine.files.resolve("avatar.png").bh_key) == b"new picture"  # type: ignore[union-attr]
    assert not engine.files.exists(old.bh_key)
    kept = engine.files.resolve("backup.png")
    assert kept is not None
    replaced = engine.files.save_name("backup.png", b"new picture", overwrite=True)
    assert replaced.bh_key == new.bh_key
    engine.force_flush()
    assert sorted(blob_objects(engine.store)) == [f"files/{new.bh_key}"]


def test_listdir_and_list_names(engine: BucketSQLite) -> None:
    for name in ["top.txt", "docs/a.txt", "docs/b.txt", "docs/sub/c.txt", "docs2/d.txt", "docs_/e.txt"]:
        engine.files.save_name(name, name.encode())
    assert engine.files.listdir("") == (["docs", "docs2", "docs_"], ["top.txt"])
    assert engine.files.listdir("docs") == (["sub"], ["a.txt", "b.txt"])
    assert engine.files.listdir("docs/") == (["sub"], ["a.txt", "b.txt"])
    assert engine.files.listdir("docs/sub") == ([], ["c.txt"])
    assert engine.files.listdir("missing") == ([], [])
    assert [n.name for n in engine.files.list_names("docs/")] == ["docs/a.txt", "docs/b.txt", "docs/sub/c.txt"]
    assert len(engine.files.list_names()) == 6


@pytest.mark.parametrize("name", ["", "/abs.txt", "../up.txt", "a/../b.txt", "a//b.txt", "./a.txt", "dir/", "a\x00b"])
def test_names_that_are_not_relative_paths_are_refused(engine: BucketSQLite, name: str) -> None:
    with pytest.raises(InvalidName):
        engine.files.save_name(name, b"x")
    with pytest.raises(ValueError, match=r"not a relative|non-empty"):
        engine.files.resolve(name)
    assert blob_objects(engine.store) == []


def test_names_are_part_of_the_snapshot(make_engine: EngineFactory) -> None:
    with make_engine() as bh:
        saved = bh.files.save_name("persisted/file.txt", b"durable")
    with make_engine() as again:
        assert again.files.resolve("persisted/file.txt") == saved
        assert again.files.get(saved.bh_key) == b"durable"


def test_a_read_only_view_refuses_name_writes_before_uploading(
    make_engine: EngineFactory, bucket_config: BucketConfig
) -> None:
    with make_engine() as bh:
        bh.files.save_name("existing.txt", b"existing")
    store = RecordingStore(open_object_store(bucket_config))
    view = make_engine(store=store, read_only_reason="a reader").start()
    assert view.files.resolve("existing.txt") is not None
    with pytest.raises(ReadOnlyError, match="a reader"):
        view.files.save_name("new.txt", b"new content")
    with pytest.raises(ReadOnlyError):
        view.files.delete_name("existing.txt")
    with pytest.raises(ReadOnlyError):
        view.files.put(b"raw", extra={"CacheControl": "no-cache"})
    view.stop()
    assert store.puts == []
    assert [o.key for o in iter_objects(store, "files/")] == [f"files/{hashlib.sha256(b'existing').hexdigest()}"]


def test_concurrent_saves_and_deletes_of_shared_content_never_lose_a_used_blob(engine: BucketSQLite) -> None:
    """Threads keep naming and un-naming the same two contents; every surviving name must still have its blob."""
    contents = [b"popular content", b"other content"]

    def worker(i: int) -> None:
        rng = random.Random(i)  # noqa: S311 - a reproducible interleaving, not a secret
        for j in range(12):
            name = f"w{i}/{j % 3}.bin"
            if rng.random() < 0.6:
                engine.files.save_name(name, rng.choice(contents), overwrite=True)
            else:
                engine.files.delete_name(name)

    assert run_in_threads(worker) == []
    used = {n.bh_key for n in engine.files.list_names()}
    stored = {key.removeprefix("files/") for key in blob_objects(engine.store)}
    assert stored == used, "a blob exists exactly while some name uses it"
    for named in engine.files.list_names():
        assert engine.files.get(named.bh_key) in contents


def test_put_passes_upload_parameters_to_the_bucket(engine: BucketSQLite, request: pytest.FixtureRequest) -> None:
    bh_key = engine.files.put(b"cacheable", extra={"CacheControl": "public, max-age=86400"})
    if engine.config.is_local:
        assert engine.files.get(bh_key) == b"cacheable", "a directory has no HTTP headers; extra is ignored"
        return
    head = request.getfixturevalue("moto").client().head_object(Bucket=engine.config.bucket, Key=f"files/{bh_key}")
    assert head["CacheControl"] == "public, max-age=86400"


def test_a_deleted_blob_survives_a_crash_before_the_next_snapshot(make_engine) -> None:
    """Rows are deleted at once, objects only after a snapshot: a crash in between restores a working file."""
    bh = make_engine().start()
    saved = bh.files.save_name("report.pdf", b"%PDF quarterly")
    bh.force_flush()
    assert bh.files.delete_name("report.pdf") is True
    assert blob_objects(bh.store) == [saved.object_key], "nothing is deleted before the snapshot"
    # The process dies here: no flush, no stop().
    with make_engine() as restarted:
        restored = restarted.files.resolve("report.pdf")
        assert restored is not None, "the last snapshot still has the name"
        assert restarted.files.get(restored.bh_key) == b"%PDF quarterly", "and its blob is still there"


def test_content_saved_again_before_the_snapshot_keeps_its_blob(engine: BucketSQLite) -> None:
    first = engine.files.save_name("a.txt", b"same")
    engine.files.delete_name("a.txt")
    again = engine.files.save_name("b.txt", b"same")
    engine.force_flush()
    assert blob_objects(engine.store) == [first.object_key]
    assert engine.files.get(again.bh_key) == b"same"


def test_pending_deletions_run_after_an_unchanged_flush_too(engine: BucketSQLite, monkeypatch) -> None:
    saved = engine.files.save_name("x.txt", b"x")
    engine.force_flush()
    engine.files.delete_name("x.txt")
    failing = engine.store.delete

    def unreachable(key: str) -> None:
        raise OSError("bucket unreachable")

    monkeypatch.setattr(engine.store, "delete", unreachable)
    assert engine.force_flush().uploaded, "the snapshot is written even if the delete that follows fails"
    assert engine.files.pending_deletions() == [saved.object_key], "and the delete is retried later"
    monkeypatch.setattr(engine.store, "delete", failing)
    assert engine.force_flush().reason == "unchanged"
    assert engine.files.pending_deletions() == []
    assert blob_objects(engine.store) == []


def test_files_get_and_snapshot_report_progress(engine: BucketSQLite, tmp_path: Path) -> None:
    bh_key = engine.files.put(os.urandom(2_000_000))
    received: list[int] = []
    engine.files.get(bh_key, dest=tmp_path / "out.bin", progress=received.append)
    assert sum(received) == 2_000_000
    sent: list[int] = []
    engine.snapshot(progress=sent.append)
    assert sum(sent) == engine.last_flush.bytes  # type: ignore[union-attr]
