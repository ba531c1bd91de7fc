"""A database image as several objects: uploaded and downloaded several at once, each chunk verified on its own."""

from __future__ import annotations

import hashlib
import os
import threading
import types
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from buckethead_django.engine import ObjectStoreError, PreconditionFailed, SnapshotCorrupt
from buckethead_django.engine import chunks as chunks_module
from buckethead_django.engine.chunks import ChunkedUpload, download_chunks, upload_chunks
from buckethead_django.engine.objectstore import ObjectInfo, ObjectStore, Source
from buckethead_django.engine.record import Chunk

from .recording_store import RecordingStore

MiB = 1024 * 1024
WRITER = "writer-a"


def key_of(index: int) -> str:
    return f"snap.db.generations/0000000001-abcdef01.chunk{index:04d}"


def image(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "image.db"
    path.write_bytes(data)
    return path, data


def uploaded(store: ObjectStore, tmp_path: Path, size: int = 5 * MiB + 12345) -> tuple[ChunkedUpload, bytes]:
    path, data = image(tmp_path, size)
    return upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=MiB, concurrency=4), data


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_round_trip_of_a_multi_chunk_image(store: ObjectStore, tmp_path: Path, concurrency: int) -> None:
    path, data = image(tmp_path, 5 * MiB + 12345)
    result = upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=MiB, concurrency=concurrency)
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert [c.key for c in result.chunks] == [key_of(i) for i in range(6)]
    assert [c.size for c in result.chunks] == [MiB] * 5 + [12345]
    for i, chunk in enumerate(result.chunks):
        assert chunk.sha256 == hashlib.sha256(data[i * MiB : (i + 1) * MiB]).hexdigest()
        assert store.get(chunk.key) == data[i * MiB : (i + 1) * MiB]

    dest = tmp_path / "restored" / "snapshot.db"
    digest = download_chunks(store, result.chunks, dest, concurrency=concurrency)
    assert dest.read_bytes() == data
    assert digest == result.sha256
    assert leftovers(dest.parent) == []


def test_chunks_carry_their_writer_digest_and_content_type(store: ObjectStore, tmp_path: Path) -> None:
    result, _ = uploaded(store, tmp_path)
    info = store.head(result.chunks[2].key)
    assert info is not None
    assert info.metadata == {"sha256": result.chunks[2].sha256, "writer": WRITER}
    assert info.content_type == "application/vnd.sqlite3"


def test_an_image_of_exactly_whole_chunks_and_an_empty_one(store: ObjectStore, tmp_path: Path) -> None:
    path, data = image(tmp_path, 3 * MiB)
    result = upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=MiB)
    assert [c.size for c in result.chunks] == [MiB] * 3  # no empty fourth chunk
    dest = tmp_path / "whole.db"
    download_chunks(store, result.chunks, dest)
    assert dest.read_bytes() == data

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    result = upload_chunks(store, empty, lambda i: f"empty.chunk{i:04d}", writer=WRITER, chunk_bytes=MiB)
    assert result == ChunkedUpload((Chunk("empty.chunk0000", 0, hashlib.sha256().hexdigest()),), result.sha256, 0)
    assert download_chunks(store, result.chunks, tmp_path / "empty-restored.db") == hashlib.sha256().hexdigest()
    assert (tmp_path / "empty-restored.db").read_bytes() == b""


def test_a_changed_chunk_is_named_and_nothing_is_left(store: ObjectStore, tmp_path: Path) -> None:
    result, _ = uploaded(store, tmp_path)
    bad = result.chunks[3]
    store.put(bad.key, os.urandom(bad.size))  # same size, other bytes
    dest = tmp_path / "restored.db"
    with pytest.raises(SnapshotCorrupt) as err:
        download_chunks(store, result.chunks, dest, concurrency=4)
    assert err.value.key == bad.key
    assert f"{bad.size} bytes" in err.value.reason
    assert f"SHA-256 {bad.sha256[:12]}…" in err.value.reason
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_a_missing_chunk_is_named_and_nothing_is_left(store: ObjectStore, tmp_path: Path) -> None:
    result, _ = uploaded(store, tmp_path)
    store.delete(result.chunks[4].key)
    dest = tmp_path / "restored.db"
    with pytest.raises(SnapshotCorrupt) as err:
        download_chunks(store, result.chunks, dest, concurrency=4)
    assert err.value.key == result.chunks[4].key
    assert err.value.reason == "the object is missing"
    assert not dest.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("difference", [-1, 1])
def test_a_chunk_with_the_right_digest_but_another_size(store: ObjectStore, tmp_path: Path, difference: int) -> None:
    """The record's size is checked too: a longer object never writes into the next chunk's range."""
    result, _ = uploaded(store, tmp_path)
    chunks = list(result.chunks)
    chunks[1] = replace(chunks[1], size=chunks[1].size + difference)
    dest = tmp_path / "restored.db"
    with pytest.raises(SnapshotCorrupt) as err:
        download_chunks(store, chunks, dest, concurrency=4)
    assert err.value.key == chunks[1].key
    assert f"{MiB} bytes with SHA-256 {chunks[1].sha256[:12]}…" in err.value.reason
    assert f"the record says {MiB + difference} bytes" in err.value.reason
    assert not dest.exists()


def test_a_failed_download_leaves_a_file_already_at_dest_as_it_was(store: ObjectStore, tmp_path: Path) -> None:
    result, _ = uploaded(store, tmp_path)
    store.delete(result.chunks[0].key)
    dest = tmp_path / "restored.db"
    dest.write_bytes(b"what was there")
    with pytest.raises(SnapshotCorrupt):
        download_chunks(store, result.chunks, dest)
    assert dest.read_bytes() == b"what was there"


def test_a_chunk_without_a_digest_is_checked_by_size(store: ObjectStore, tmp_path: Path) -> None:
    """A 0.4.x snapshot's object may have no SHA-256 in its metadata: only its size can be checked."""
    result, data = uploaded(store, tmp_path)
    chunks = [replace(c, sha256="") for c in result.chunks]
    dest = tmp_path / "restored.db"
    assert download_chunks(store, chunks, dest) == result.sha256
    assert dest.read_bytes() == data


def test_the_upload_is_create_only(store: ObjectStore, tmp_path: Path) -> None:
    path, _ = image(tmp_path, 3 * MiB + 1)
    first = upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=MiB)
    with pytest.raises(PreconditionFailed):
        upload_chunks(store, path, key_of, writer="writer-b", chunk_bytes=MiB)
    # The same writer sending the same bytes again is a retry whose first attempt landed: it succeeds.
    assert upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=MiB) == first


def test_progress_sums_to_the_size(store: ObjectStore, tmp_path: Path) -> None:
    path, data = image(tmp_path, 5 * MiB + 12345)
    sent: list[int] = []
    result = upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=MiB, concurrency=4, progress=sent.append)
    assert sum(sent) == len(data)
    received: list[int] = []
    lock = threading.Lock()

    def count(n: int) -> None:
        with lock:
            received.append(n)

    download_chunks(store, result.chunks, tmp_path / "restored.db", concurrency=4, progress=count)
    assert sum(received) == len(data)


def test_a_download_stops_at_the_first_bad_chunk(store: ObjectStore, tmp_path: Path) -> None:
    """The chunks after a failure are never requested (a worker takes one only when it is free)."""
    path, _ = image(tmp_path, 24 * 64 * 1024)
    result = upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=64 * 1024)
    assert len(result.chunks) == 24
    store.delete(result.chunks[0].key)
    recording = RecordingStore(store)
    with pytest.raises(SnapshotCorrupt) as err:
        download_chunks(recording, result.chunks, tmp_path / "restored.db", concurrency=2)  # type: ignore[arg-type]
    assert err.value.key == result.chunks[0].key
    assert len(recording.gets) < 8


class FailingStore(RecordingStore):
    """Refuses the put of one key, as a bucket that is cut off would."""

    def __init__(self, inner: ObjectStore, failing: str) -> None:
        super().__init__(inner)
        self.failing = failing

    def put(self, key: str, data: Source, **kwargs: Any) -> ObjectInfo:
        if key == self.failing:
            self.puts.append(key)
            raise ObjectStoreError(f"cannot reach the bucket for {key!r}")
        return super().put(key, data, **kwargs)


def test_an_upload_stops_at_the_first_failure(store: ObjectStore, tmp_path: Path) -> None:
    path, _ = image(tmp_path, 24 * 64 * 1024)
    failing = FailingStore(store, key_of(1))
    with pytest.raises(ObjectStoreError, match="cannot reach"):
        upload_chunks(failing, path, key_of, writer=WRITER, chunk_bytes=64 * 1024, concurrency=2)  # type: ignore[arg-type]
    assert key_of(1) in failing.puts
    assert len(failing.puts) < 8


def test_bad_arguments(store: ObjectStore, tmp_path: Path) -> None:
    path, _ = image(tmp_path, 10)
    with pytest.raises(ValueError, match="concurrency"):
        upload_chunks(store, path, key_of, writer=WRITER, concurrency=0)
    with pytest.raises(ValueError, match="chunk size"):
        upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=0)
    with pytest.raises(ValueError, match="concurrency"):
        download_chunks(store, [], tmp_path / "x.db", concurrency=0)


class ShutDownPool(ThreadPoolExecutor):
    """A pool as `concurrent.futures` leaves it at interpreter exit, where a writer's final flush runs."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


class ShutDownThread(threading.Thread):
    """A thread as Python 3.12 and later refuse to start one at interpreter exit."""

    def start(self) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")


def test_at_interpreter_exit_the_chunks_go_one_by_one(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks_module, "ThreadPoolExecutor", ShutDownPool)
    # Only the chunk module's view of threading: the moto server's own threads must go on.
    monkeypatch.setattr(chunks_module, "threading", types.SimpleNamespace(Thread=ShutDownThread, Event=threading.Event))
    path, data = image(tmp_path, 3 * MiB + 7)
    result = upload_chunks(store, path, key_of, writer=WRITER, chunk_bytes=MiB, concurrency=4)
    assert len(result.chunks) == 4
    dest = tmp_path / "restored.db"
    assert download_chunks(store, result.chunks, dest, concurrency=4) == hashlib.sha256(data).hexdigest()
    assert dest.read_bytes() == data
