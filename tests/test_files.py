"""FileStore: content-addressed blobs in the bucket, rows in the ``filestore`` table."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from buckethead_django.engine import BucketSQLite, FileStore
from buckethead_django.engine.interfaces import BlobSizeMismatch
from buckethead_django.engine.objectstore import ObjectStore, iter_objects


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
