"""BucketHeadCache with values over the KV store's size limit: each is a FileStore blob that goes with its entry.

Every test runs twice, on a local directory bucket and on a moto S3 server
over HTTP (conftest's ``bucket_config``). "Removed" means what the FileStore
says it means: the blob's row is gone at once and its object is a pending
deletion, which the next snapshot carries out in the bucket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from django.views.decorators.cache import cache_page

from buckethead_django.cache import BLOB_MARK, BLOB_REGISTRY, BucketHeadCache
from buckethead_django.engine import BucketConfig, BucketSQLite, ObjectStoreError, ReadOnlyError, SnapshotConfig
from buckethead_django.engine.config import DEFAULT_KV_MAX_VALUE_BYTES
from buckethead_django.engine.objectstore import iter_objects
from buckethead_django.runtime import use_engine
from buckethead_django.testing import fresh_buckethead

BACKEND = "buckethead_django.cache.BucketHeadCache"
#: A small KV limit keeps the tests quick; the cache_page test uses the default 1 MiB.
LIMIT = 16 * 1024


@pytest.fixture
def bh(bucket_config: BucketConfig) -> Iterator[BucketSQLite]:
    with fresh_buckethead(bucket_config, kv_max_value_bytes=LIMIT) as engine:
        yield engine


def make_cache(location: str = "", **params: Any) -> BucketHeadCache:
    return BucketHeadCache(location, params)


def big(tag: object = "", size: int = 2 * LIMIT) -> bytes:
    """A value whose pickle is over LIMIT, different for each tag."""
    return (f"{tag}|".encode() * size)[:size]


class Ballast:
    """A number padded to ``n`` bytes: `cache.incr` adds to it, and it grows or shrinks past the limit."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pad = b"b" * n

    def __add__(self, delta: int) -> Ballast:
        return Ballast(self.n + delta)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ballast) and (self.n, self.pad) == (other.n, other.pad)

    def __hash__(self) -> int:
        return self.n


def blob_of(bh: BucketSQLite, cache: BucketHeadCache, key: str, version: int | None = None) -> str | None:
    """The bh-key the entry's KV row points at, or None if the row holds the pickle itself (or nothing)."""
    raw = bh.kv.get_bytes(cache._key(key, version))
    return raw[len(BLOB_MARK) :].decode() if raw is not None and raw.startswith(BLOB_MARK) else None


def blobs(bh: BucketSQLite) -> set[str]:
    return {info.bh_key for info in bh.files.list(limit=10_000)}


def bucket_objects(bh: BucketSQLite) -> set[str]:
    return {obj.key for obj in iter_objects(bh.store, bh.files.prefix)}


def assert_removed(bh: BucketSQLite, *bh_keys: str) -> None:
    """The FileStore no longer holds these blobs: rows gone, objects pending, and gone from the bucket after a flush."""
    for bh_key in bh_keys:
        assert not bh.files.exists(bh_key)
        assert bh.files.object_key(bh_key) in bh.files.pending_deletions()
    bh.force_flush()
    assert bh.files.pending_deletions() == []
    assert not bucket_objects(bh) & {bh.files.object_key(k) for k in bh_keys}


def assert_blobs_are_exactly(bh: BucketSQLite, expected: set[str]) -> None:
    """The FileStore holds exactly these blobs, and after a snapshot so does the bucket."""
    assert blobs(bh) == expected
    bh.force_flush()
    assert bucket_objects(bh) == {bh.files.object_key(k) for k in expected}


# -- the caller never sees the difference -----------------------------------------------------


def test_a_value_over_the_limit_is_a_blob_behind_a_small_marker(bh: BucketSQLite) -> None:
    cache = make_cache()
    value = {"page": big("p"), "n": 1}
    cache.set("k", value, timeout=1000)
    assert cache.get("k") == value
    assert bh.kv.keys(BLOB_REGISTRY) == [f"django-cache:%blobs:default:{blob_of(bh, cache, 'k')}"]
    raw = bh.kv.get_bytes(cache._key("k"))
    assert raw is not None
    assert raw.startswith(BLOB_MARK)
    assert len(raw) < 200, "the KV row holds only the marker"
    assert blobs(bh) == {blob_of(bh, cache, "k")}
    assert cache.get_many(["k", "missing"]) == {"k": value}
    assert cache.has_key("k")
    assert "k" in cache
    assert 999 <= (cache.ttl("k") or 0) <= 1000
    assert sorted(cache.iter_keys("*")) == ["k"]
    assert bh.kv.count(cache.namespace) == 1, "a big entry is one entry of the namespace"


def test_a_value_at_the_limit_stays_in_the_kv_row(bh: BucketSQLite) -> None:
    cache = make_cache()
    n = LIMIT
    while len(cache._dumps(b"a" * n)) > LIMIT:
        n -= 1
    at_limit, over = b"a" * n, b"a" * (n + 1)  # the largest pickle the KV row takes, and the next one
    cache.set("at", at_limit)
    cache.set("over", over)
    assert blob_of(bh, cache, "at") is None
    assert blob_of(bh, cache, "over") is not None
    assert cache.get_many(["at", "over"]) == {"at": at_limit, "over": over}


def test_values_that_look_like_a_marker_are_ordinary_values(bh: BucketSQLite) -> None:
    cache = make_cache()
    lookalike = BLOB_MARK + b"0" * 64
    cache.set("k", lookalike)
    assert cache.get("k") == lookalike
    assert blobs(bh) == set()


def test_set_many_get_many_and_delete_many_mix_small_and_big_values(bh: BucketSQLite) -> None:
    cache = make_cache()
    data = {"small": 1, "big1": big(1), "big2": big(2), "text": "t"}
    assert cache.set_many(data) == []
    assert cache.get_many([*data, "missing"]) == data
    assert blobs(bh) == {blob_of(bh, cache, "big1"), blob_of(bh, cache, "big2")}
    cache.delete_many(["big1", "small"])
    assert cache.get_many(list(data)) == {"big2": big(2), "text": "t"}
    assert_blobs_are_exactly(bh, {blob_of(bh, cache, "big2")})  # type: ignore[arg-type]


def test_set_many_writes_nothing_and_uploads_nothing_if_a_value_cannot_be_pickled(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("big", "old")
    with pytest.raises(TypeError, match="pickle"):
        cache.set_many({"big": big(), "bad": threading.Lock()})
    assert cache.get("big") == "old"
    assert blobs(bh) == set()


def test_a_failed_upload_writes_nothing_and_leaves_no_blob(bh: BucketSQLite, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = make_cache()
    cache.set_many({"a": "old a", "b": "old b"})
    real_put, uploads = bh.files.put, []

    def put_then_fail(src: bytes, **kwargs: Any) -> str:
        if uploads:
            raise ObjectStoreError("the bucket went away")
        uploads.append(real_put(src, **kwargs))
        return uploads[-1]

    monkeypatch.setattr(bh.files, "put", put_then_fail)
    with pytest.raises(ObjectStoreError, match="went away"):
        cache.set_many({"a": big(1), "b": big(2)})
    monkeypatch.undo()
    assert cache.get_many(["a", "b"]) == {"a": "old a", "b": "old b"}, "a failed batch writes nothing"
    assert_removed(bh, uploads[0])
    assert bh.kv.keys(BLOB_REGISTRY) == [], "nor any registry row"


def test_add_stores_a_big_value_only_if_the_key_is_free_and_keeps_no_blob_otherwise(bh: BucketSQLite) -> None:
    cache = make_cache()
    assert cache.add("k", big(1)) is True
    first = blob_of(bh, cache, "k")
    assert cache.add("k", big(2)) is False
    assert cache.get("k") == big(1)
    assert cache.add("k", big(3), timeout=0) is False
    assert_blobs_are_exactly(bh, {first})  # type: ignore[arg-type]
    assert cache.add("other", big(4), timeout=0) is True, "added and expired at once, as for small values"
    assert cache.get("other") is None
    assert blobs(bh) == {first}
    assert cache.get_or_set("made", lambda: big(5)) == big(5)
    assert cache.get("made") == big(5)


def test_incr_and_decr_work_on_big_values_and_keep_the_expiry(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("n", Ballast(2 * LIMIT), timeout=1000)
    old = blob_of(bh, cache, "n")
    assert cache.incr("n", 5) == Ballast(2 * LIMIT + 5)
    assert cache.get("n") == Ballast(2 * LIMIT + 5)
    assert 998 <= (cache.ttl("n") or 0) <= 1000, "an increment does not reset the expiry"
    new = blob_of(bh, cache, "n")
    assert new is not None
    assert new != old
    assert_removed(bh, old)  # type: ignore[arg-type]
    assert cache.decr("n", 2 * LIMIT) == Ballast(5), "back under the limit: inline again"
    assert blob_of(bh, cache, "n") is None
    assert_removed(bh, new)
    assert cache.incr("n", 2 * LIMIT) == Ballast(2 * LIMIT + 5), "over the limit through an increment"
    assert blobs(bh) == {blob_of(bh, cache, "n")}
    with pytest.raises(ValueError, match="Key 'missing' not found"):
        cache.incr("missing")
    cache.set("s", big())
    with pytest.raises(TypeError):
        cache.incr("s")
    assert cache.get("s") == big()


def test_concurrent_increments_of_a_big_value_are_not_lost(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("n", Ballast(2 * LIMIT))
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(5):
                cache.incr("n")
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.get("n") == Ballast(2 * LIMIT + 20)
    assert_blobs_are_exactly(bh, {blob_of(bh, cache, "n")})  # type: ignore[arg-type]


def test_incr_version_moves_a_big_entry_and_drops_the_one_it_replaces(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("k", big("v1"), timeout=1000)
    cache.set("k", big("stale"), version=2)
    moved = blob_of(bh, cache, "k")
    stale = blob_of(bh, cache, "k", version=2)
    assert cache.incr_version("k") == 2
    assert cache.get("k") is None
    assert cache.get("k", version=2) == big("v1")
    assert blob_of(bh, cache, "k", version=2) == moved
    assert 998 <= (cache.ttl("k", version=2) or 0) <= 1000
    assert_removed(bh, stale)  # type: ignore[arg-type]
    cache.set("other", 1)  # a write sweeps: the moved blob must survive it
    assert cache.decr_version("k", version=2) == 1
    assert cache.get("k") == big("v1")
    assert_blobs_are_exactly(bh, {moved})  # type: ignore[arg-type]


def test_the_same_big_value_under_two_keys_is_two_blobs(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set_many({"a": big(), "b": big()})
    a, b = blob_of(bh, cache, "a"), blob_of(bh, cache, "b")
    assert a != b, "each entry owns its blob, so removing one never breaks the other"
    cache.delete("a")
    assert cache.get("b") == big()
    assert_removed(bh, a)  # type: ignore[arg-type]


def test_async_methods_on_big_values(bh: BucketSQLite) -> None:
    cache = make_cache()

    async def scenario() -> None:
        await cache.aset("k", big(1))
        assert await cache.aget("k") == big(1)
        assert await cache.aset_many({"a": big(2), "b": 2}) == []
        assert await cache.aget_many(["a", "b", "k"]) == {"a": big(2), "b": 2, "k": big(1)}
        await cache.adelete_many(["a", "k"])
        assert await cache.aadd("k", big(3)) is True
        assert await cache.adelete("k") is True

    asyncio.run(scenario())
    assert_blobs_are_exactly(bh, set())


# -- no blob outlives its entry -----------------------------------------------------------------


def test_delete_removes_the_blob(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("k", big())
    bh_key = blob_of(bh, cache, "k")
    assert bh_key is not None
    assert cache.delete("k") is True
    assert cache.get("k") is None
    assert cache.delete("k") is False
    assert_removed(bh, bh_key)
    assert blobs(bh) == set()
    assert bh.kv.keys(BLOB_REGISTRY) == []


def test_overwrites_between_small_and_big_values_leave_no_orphan(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("k", "small")
    cache.set("k", big(1))
    first = blob_of(bh, cache, "k")
    cache.set("k", big(2))
    second = blob_of(bh, cache, "k")
    assert cache.get("k") == big(2)
    assert_removed(bh, first)  # type: ignore[arg-type]
    cache.set("k", "small again")
    assert cache.get("k") == "small again"
    assert_removed(bh, second)  # type: ignore[arg-type]
    cache.set_many({"k": big(3)})
    third = blob_of(bh, cache, "k")
    cache.set_many({"k": 3})
    assert_removed(bh, third)  # type: ignore[arg-type]
    cache.set("k", big(4))
    fourth = blob_of(bh, cache, "k")
    cache.set("k", "dropped", timeout=0)
    assert cache.has_key("k") is False
    assert_removed(bh, fourth)  # type: ignore[arg-type]
    assert blobs(bh) == set()


def test_the_same_big_value_set_again_replaces_its_blob(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("k", big())
    first = blob_of(bh, cache, "k")
    cache.set("k", big())
    assert cache.get("k") == big()
    assert_blobs_are_exactly(bh, {blob_of(bh, cache, "k")})  # type: ignore[arg-type]
    assert first not in blobs(bh)


def test_expired_big_entries_lose_their_blob_at_the_next_write(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("short", big(1), timeout=0.05)
    cache.set("long", big(2), timeout=60)
    short, long = blob_of(bh, cache, "short"), blob_of(bh, cache, "long")
    time.sleep(0.1)
    assert cache.get("short") is None
    assert blobs(bh) == {short, long}, "reads never write"
    cache.blob_sweep_interval = 0  # the next write sweeps, however soon
    cache.set("unrelated", 1)
    assert_removed(bh, short)  # type: ignore[arg-type]
    assert cache.get("long") == big(2)
    assert blobs(bh) == {long}


def test_the_sweep_runs_at_most_once_per_interval(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.blob_sweep_interval = 3600
    cache.set("short", big(), timeout=0.05)  # the first write of the process's namespace sweeps
    short = blob_of(bh, cache, "short")
    time.sleep(0.1)
    cache.set("unrelated", 1)
    assert blobs(bh) == {short}, "swept less than an interval ago"
    cache.clear()
    assert_removed(bh, short)  # type: ignore[arg-type]


def test_touch_and_expire_to_zero_remove_the_blob_at_once(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set_many({"t": big(1), "e": big(2), "kept": big(3)})
    t, e = blob_of(bh, cache, "t"), blob_of(bh, cache, "e")
    assert cache.touch("kept", 100) is True
    assert cache.persist("kept") is True
    assert cache.touch("t", 0) is True
    assert cache.expire("e", 0) is True
    assert cache.get_many(["t", "e", "kept"]) == {"kept": big(3)}
    assert_removed(bh, t, e)  # type: ignore[arg-type]
    assert blobs(bh) == {blob_of(bh, cache, "kept")}


def test_culling_removes_the_blobs_of_the_culled_entries(bh: BucketSQLite) -> None:
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 4, "CULL_FREQUENCY": 2})
    for i in range(4):
        cache.set(f"k{i}", big(i))
    culled = {blob_of(bh, cache, "k0"), blob_of(bh, cache, "k1")}
    cache.set("new", "small")
    assert cache.get_many([f"k{i}" for i in range(4)]) == {"k2": big(2), "k3": big(3)}
    assert_removed(bh, *culled)  # type: ignore[arg-type]
    assert blobs(bh) == {blob_of(bh, cache, "k2"), blob_of(bh, cache, "k3")}


def test_culling_purges_expired_big_entries_and_their_blobs(bh: BucketSQLite) -> None:
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 3})
    cache.blob_sweep_interval = 3600  # only culling may remove the expired blobs here
    cache.set_many({"old1": big(1), "old2": big(2)}, timeout=0.05)
    expired = {blob_of(bh, cache, "old1"), blob_of(bh, cache, "old2")}
    cache.set("live", big(3))
    time.sleep(0.1)
    cache.set("new", big(4))
    assert cache.get_many(["live", "new"]) == {"live": big(3), "new": big(4)}
    assert_removed(bh, *expired)  # type: ignore[arg-type]
    assert blobs(bh) == {blob_of(bh, cache, "live"), blob_of(bh, cache, "new")}


def test_cull_frequency_zero_removes_every_blob_of_the_namespace(bh: BucketSQLite) -> None:
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 3, "CULL_FREQUENCY": 0})
    cache.set_many({f"k{i}": big(i) for i in range(3)})
    gone = {blob_of(bh, cache, f"k{i}") for i in range(3)}
    cache.set("last", big("last"))
    assert_removed(bh, *gone)  # type: ignore[arg-type]
    assert blobs(bh) == {blob_of(bh, cache, "last")}


def test_clear_removes_the_blobs_of_its_location_only(bh: BucketSQLite) -> None:
    app_blob = bh.files.put(b"an application's own blob")
    app_name = bh.files.save_name("docs/readme.txt", big("file")).bh_key
    other = make_cache("other")
    other.set("k", big("other"))
    cache = make_cache()
    cache.set_many({"a": big(1), "b": big(2), "c": 3})
    gone = {blob_of(bh, cache, "a"), blob_of(bh, cache, "b")}
    cache.clear()
    assert cache.get_many(["a", "b", "c"]) == {}
    assert other.get("k") == big("other")
    assert_removed(bh, *gone)  # type: ignore[arg-type]
    assert_blobs_are_exactly(bh, {app_blob, app_name, blob_of(bh, other, "k")})  # type: ignore[arg-type]


def test_delete_pattern_removes_the_blobs_of_the_entries_it_deletes(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set_many({"user:1": big(1), "user:2": big(2), "session:1": big(3)})
    gone = {blob_of(bh, cache, "user:1"), blob_of(bh, cache, "user:2")}
    assert cache.delete_pattern("user:*") == 2
    assert_removed(bh, *gone)  # type: ignore[arg-type]
    assert blobs(bh) == {blob_of(bh, cache, "session:1")}


def test_a_key_deleted_behind_the_caches_back_loses_its_blob_at_the_next_sweep(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("k", big())
    bh_key = blob_of(bh, cache, "k")
    bh.kv.delete_prefix(cache.namespace)  # an application emptying the namespace through the KV store
    cache.blob_sweep_interval = 0
    cache.set("other", 1)
    assert_removed(bh, bh_key)  # type: ignore[arg-type]


def test_a_missing_blob_reads_as_a_miss(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set_many({"k": big(), "small": 1})
    bh.files.delete(blob_of(bh, cache, "k"))  # type: ignore[arg-type]
    bh.force_flush()
    assert cache.get("k", "default") == "default"
    assert cache.get_many(["k", "small"]) == {"small": 1}
    cache.set("k", big(2))
    assert cache.get("k") == big(2)


def test_threads_writing_big_values_leave_exactly_the_live_blobs(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.blob_sweep_interval = 0  # every write sweeps, so sweeps meet blobs other threads are writing
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def client(n: int) -> None:
        try:
            start.wait()
            for r in range(6):
                key = f"k{(n + r) % 3}"
                cache.set(key, big(f"{n}:{r}"))
                value = cache.get(key)
                assert value is None or len(value) == 2 * LIMIT
                if r:
                    assert cache.get(f"own{n}") == big(n), "a sweep never takes the blob of a live entry"
                if r % 3 == 2:
                    cache.delete(f"k{n % 3}")
                cache.set_many({f"own{n}": big(n), "small": r})
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cache.set("after", 1)  # a sweep with nothing in flight: whatever a race orphaned goes now
    live = cache.get_many([f"k{i}" for i in range(3)] + [f"own{n}" for n in range(6)])
    assert {f"own{n}" for n in range(6)} <= set(live)
    assert_blobs_are_exactly(bh, {blob_of(bh, cache, k) for k in live})  # type: ignore[misc]


# -- durability and read-only processes -----------------------------------------------------------


def test_big_entries_survive_a_restart_and_are_removed_on_the_new_host(bucket_config: BucketConfig) -> None:
    with fresh_buckethead(bucket_config, kv_max_value_bytes=LIMIT) as first:
        cache = make_cache("durable")
        cache.set("page", big("page"), timeout=None)
        bh_key = blob_of(first, cache, "page")
    with fresh_buckethead(bucket_config, kv_max_value_bytes=LIMIT) as second:
        assert second.restored_from is not None
        assert cache.get("page") == big("page")
        assert cache.ttl("page") is None
        cache.delete("page")
        assert_removed(second, bh_key)  # type: ignore[arg-type]


def test_a_read_only_engine_reads_big_values_and_uploads_nothing(tmp_path: Path) -> None:
    def engine(**kwargs: Any) -> BucketSQLite:
        config = BucketConfig.local(tmp_path / "bucket")
        return BucketSQLite(
            config, SnapshotConfig(min_interval_seconds=0), background_flush=False, kv_max_value_bytes=LIMIT, **kwargs
        )

    cache = make_cache()
    with engine(local_dir=tmp_path / "writer") as writer, use_engine(writer):
        cache.set("k", big())
    objects = {o.key for o in iter_objects(writer.store, "files/")}
    reader = engine(local_dir=tmp_path / "reader", read_only_reason="a reader: write through the running site").start()
    try:
        with use_engine(reader):
            assert cache.get("k") == big()
            for write in (lambda: cache.set("new", big(2)), lambda: cache.set_many({"n": big(3)}), cache.clear):
                with pytest.raises(ReadOnlyError, match="write through the running site"):
                    write()
            assert cache.get("k") == big()
        assert {o.key for o in iter_objects(reader.store, "files/")} == objects, "nothing was uploaded"
    finally:
        reader.stop()


# -- cache_page through Django's test client ----------------------------------------------------

PAGE_BYTES = 1_200_000
renders: list[int] = []


@cache_page(60)
def big_page(request: HttpRequest) -> HttpResponse:
    renders.append(len(renders) + 1)
    body = f"<html><body><p>render {len(renders)}</p><pre>".encode() + b"x" * PAGE_BYTES + b"</pre></body></html>"
    return HttpResponse(body)


urlpatterns = [path("big/", big_page)]


def test_cache_page_caches_a_1_2_mb_page(bucket_config: BucketConfig) -> None:
    renders.clear()
    caches_setting = {"default": {"BACKEND": BACKEND, "LOCATION": "pages"}}
    with fresh_buckethead(bucket_config) as bh, override_settings(ROOT_URLCONF=__name__, CACHES=caches_setting):
        assert bh.kv.max_value_bytes == DEFAULT_KV_MAX_VALUE_BYTES
        client = Client()
        first = client.get("/big/")
        assert first.status_code == 200
        assert len(first.content) > DEFAULT_KV_MAX_VALUE_BYTES
        second = client.get("/big/")
        assert second.status_code == 200
        assert renders == [1], "the second request was served from the cache"
        assert second.content == first.content
        assert b"render 1" in second.content
        assert len(blobs(bh)) == 1, "the page is one blob; the header list is a small entry"
        page_blob = next(iter(blobs(bh)))
        BucketHeadCache("pages", {}).clear()
        assert b"render 2" in client.get("/big/").content
        assert renders == [1, 2]
        assert page_blob not in blobs(bh)
        assert len(blobs(bh)) == 1
