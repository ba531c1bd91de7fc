"""The ObjectStore protocol, run against a local directory and a moto S3 server."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest

from buckethead_django.engine import ObjectStoreError, PreconditionFailed
from buckethead_django.engine.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore, iter_objects

from .conftest import s3_config, unreachable_config


class OneWayStream(io.RawIOBase):
    """A readable, non-seekable stream, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        chunk = self._buf.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_put_get_head_bytes(store: ObjectStore) -> None:
    info = store.put("a/b.txt", b"hello", content_type="text/plain", metadata={"owner": "alice"})
    assert info.size == 5
    assert store.get("a/b.txt") == b"hello"
    head = store.head("a/b.txt")
    assert head is not None
    assert head.size == 5
    assert head.etag == info.etag
    assert head.etag.startswith('"')
    assert head.metadata == {"owner": "alice"}
    assert head.content_type == "text/plain"
    assert head.last_modified.tzinfo is not None


def test_put_from_path_and_stream(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1000))
    store.put("from-path", src)
    store.put("from-stream", OneWayStream(b"streamed"))  # type: ignore[arg-type]
    assert store.get("from-path") == src.read_bytes()
    assert store.get("from-stream") == b"streamed"


def test_get_to_path_stream_and_open(store: ObjectStore, tmp_path: Path) -> None:
    store.put("k", b"x" * 3000)
    dest = tmp_path / "out" / "k.bin"
    info = store.get_to("k", dest)
    assert dest.read_bytes() == b"x" * 3000
    assert info.size == 3000
    buf = io.BytesIO()
    store.get_to("k", buf)
    assert buf.getvalue() == b"x" * 3000
    with store.open("k") as f:
        assert f.read() == b"x" * 3000


def test_missing_objects(store: ObjectStore, tmp_path: Path) -> None:
    assert store.head("nope") is None
    with pytest.raises(KeyError):
        store.get("nope")
    with pytest.raises(KeyError):
        store.get_to("nope", tmp_path / "x")
    with pytest.raises(KeyError):
        store.copy("nope", "other")
    store.delete("nope")  # deleting what is not there is not an error, as in S3


def test_copy_and_delete(store: ObjectStore) -> None:
    store.put("src", b"data", metadata={"m": "1"})
    store.copy("src", "dst")
    assert store.get("dst") == b"data"
    store.delete("src")
    assert store.head("src") is None
    assert store.get("dst") == b"data"


def test_list_by_prefix_paginates(store: ObjectStore) -> None:
    for i in range(7):
        store.put(f"p/{i:02d}", b"x" * i)
    store.put("q/other", b"y")
    page = store.list_page("p/", page_size=3)
    assert [o.key for o in page.objects] == ["p/00", "p/01", "p/02"]
    assert page.next_token is not None
    assert [o.key for o in iter_objects(store, "p/", page_size=3)] == [f"p/{i:02d}" for i in range(7)]
    assert [o.size for o in iter_objects(store, "p/")] == list(range(7))
    assert [o.key for o in iter_objects(store, "")] == [*(f"p/{i:02d}" for i in range(7)), "q/other"]


def test_create_only_write(store: ObjectStore) -> None:
    store.put("lease", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("lease", b"second", if_none_match=True)
    assert store.get("lease") == b"first"


def test_if_match_write(store: ObjectStore) -> None:
    first = store.put("record", b"v1")
    second = store.put("record", b"v2", if_match=first.etag)
    assert store.get("record") == b"v2"
    with pytest.raises(PreconditionFailed):
        store.put("record", b"v3", if_match=first.etag)  # stale: v2 replaced v1
    assert store.get("record") == b"v2"
    store.put("record", b"v3", if_match=second.etag)
    assert store.get("record") == b"v3"


def test_if_match_on_missing_object_is_refused(store: ObjectStore) -> None:
    with pytest.raises((PreconditionFailed, KeyError)):
        store.put("absent", b"v", if_match='"0123"')
    assert store.head("absent") is None


def test_local_store_writes_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("dir/obj", b"v1")
    store.put("dir/obj", b"v2")
    with pytest.raises(PreconditionFailed):
        store.put("dir/obj", b"v3", if_none_match=True)
    names = sorted(p.name for p in (tmp_path / "dir").iterdir())
    assert names == ["obj"]
    assert (tmp_path / "dir" / "obj").read_bytes() == b"v2"


def test_local_store_survives_a_replaced_object(tmp_path: Path) -> None:
    """An object edited outside the store gets a fresh ETag instead of a stale sidecar one."""
    store = LocalObjectStore(tmp_path)
    before = store.put("obj", b"original")
    (tmp_path / "obj").write_bytes(b"edited by hand")
    after = store.head("obj")
    assert after is not None
    assert after.size == len(b"edited by hand")
    assert after.etag != before.etag


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ".bh-meta/x", ""])
def test_local_store_rejects_unsafe_keys(tmp_path: Path, key: str) -> None:
    store = LocalObjectStore(tmp_path / "bucket")
    with pytest.raises(ObjectStoreError, match="cannot be stored"):
        store.put(key, b"x")
    assert not (tmp_path / "escape").exists()


def test_s3_large_upload_uses_multipart(moto, tmp_path: Path) -> None:
    cfg = s3_config(moto, multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    store = S3ObjectStore(cfg)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * 1024 * 1024))
    info = store.put("big", src)
    assert info.etag.endswith('-3"'), "an 11 MiB upload with 5 MiB parts is a 3-part multipart upload"
    dest = tmp_path / "back.bin"
    store.get_to("big", dest)
    assert dest.read_bytes() == src.read_bytes()


def test_s3_download_of_many_parts_into_a_stream_that_cannot_seek(moto) -> None:
    """boto3's ordered download into such a stream hangs past about ten parts; get_to must not."""
    cfg = s3_config(moto, multipart_threshold=1024 * 1024, multipart_chunksize=1024 * 1024)
    data = os.urandom(16 * 1024 * 1024)
    S3ObjectStore(dataclasses.replace(cfg, multipart_threshold=8 << 20, multipart_chunksize=8 << 20)).put(
        "many-parts", data
    )

    class Sink:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, b: bytes) -> int:
            self.parts.append(bytes(b))
            return len(b)

        def seekable(self) -> bool:
            return False

    sink = Sink()
    moved: list[int] = []
    S3ObjectStore(cfg).get_to("many-parts", sink, progress=moved.append)  # type: ignore[arg-type]
    assert b"".join(sink.parts) == data, "every byte, in order"
    assert sum(moved) == len(data)


def test_s3_unreachable_endpoint_gives_a_clear_error() -> None:
    with pytest.raises(ObjectStoreError, match="cannot reach bucket 'b-unreachable'"):
        S3ObjectStore(unreachable_config("b-unreachable")).head("anything")


@pytest.mark.parametrize("conditional", [False, True])
def test_extra_upload_parameters(store: ObjectStore, request: pytest.FixtureRequest, conditional: bool) -> None:
    """S3 sends ``extra`` as PutObject parameters on both upload paths; a directory ignores them."""
    extra = {"CacheControl": "max-age=60", "ContentDisposition": "attachment", "Metadata": {"from": "extra"}}
    store.put(
        "x", b"data", content_type="text/plain", metadata={"owner": "bob"}, extra=extra, if_none_match=conditional
    )
    head = store.head("x")
    assert head is not None
    assert head.content_type == "text/plain"
    if isinstance(store, LocalObjectStore):
        assert head.metadata == {"owner": "bob"}
        return
    assert head.metadata == {"from": "extra", "owner": "bob"}
    assert isinstance(store, S3ObjectStore)
    raw = request.getfixturevalue("moto").client().head_object(Bucket=store.bucket, Key="x")
    assert (raw["CacheControl"], raw["ContentDisposition"]) == ("max-age=60", "attachment")


def test_progress_is_reported_for_uploads_and_downloads(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    uploaded: list[int] = []
    store.put("p", src, progress=uploaded.append)
    downloaded: list[int] = []
    store.get_to("p", tmp_path / "back.bin", progress=downloaded.append)
    assert sum(uploaded) == sum(downloaded) == src.stat().st_size


def test_a_listing_can_start_after_a_key(store: ObjectStore) -> None:
    for name in ("p/a", "p/b", "p/c", "p/d", "q/e"):
        store.put(name, b"x")
    assert [o.key for o in iter_objects(store, "p/", start_after="p/b")] == ["p/c", "p/d"]
    assert [o.key for o in iter_objects(store, "p/", start_after="p/b", page_size=1)] == ["p/c", "p/d"]
