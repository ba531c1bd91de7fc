"""BucketHeadCache beyond Django's generic suite: namespacing, expiry, culling, extras, threads, engine lifecycle."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from buckethead_django.cache import BucketHeadCache
from buckethead_django.engine import BucketConfig, BucketSQLite, ReadOnlyError, SnapshotConfig
from buckethead_django.runtime import use_engine
from buckethead_django.testing import fresh_buckethead

BACKEND = "buckethead_django.cache.BucketHeadCache"


@pytest.fixture
def bh() -> Iterator[BucketSQLite]:
    with fresh_buckethead() as engine:
        yield engine


def make_cache(location: str = "", **params: Any) -> BucketHeadCache:
    """A cache built the way Django builds one from a CACHES entry."""
    return BucketHeadCache(location, params)


def local_engine(path: Path, **kwargs: Any) -> BucketSQLite:
    snapshots = SnapshotConfig(min_interval_seconds=0)
    return BucketSQLite(BucketConfig.local(path), snapshots, background_flush=False, **kwargs)


# -- configuration and namespacing --------------------------------------------------------------


@override_settings(
    CACHES={
        "default": {"BACKEND": BACKEND},
        "sessions": {"BACKEND": BACKEND, "LOCATION": "sessions"},
    }
)
def test_configured_through_caches_with_one_namespace_per_location(bh: BucketSQLite) -> None:
    default, sessions = caches["default"], caches["sessions"]
    assert isinstance(default, BucketHeadCache)
    default.set("k", "from default")
    assert sessions.get("k") is None
    sessions.set("k", "from sessions")
    assert default.get("k") == "from default"
    assert sessions.get("k") == "from sessions"
    assert bh.kv.keys() == ["django-cache:default::1:k", "django-cache:sessions::1:k"]
    sessions.clear()
    assert default.get("k") == "from default"
    assert bh.kv.keys() == ["django-cache:default::1:k"]


def test_key_prefixes_share_a_location_without_colliding(bh: BucketSQLite) -> None:
    a, b = make_cache(KEY_PREFIX="a"), make_cache(KEY_PREFIX="b")
    a.set("k", 1)
    b.set("k", 2)
    assert (a.get("k"), b.get("k")) == (1, 2)
    a.delete("k")
    assert (a.get("k"), b.get("k")) == (None, 2)
    a.set("k", 1)
    a.clear()
    assert (a.get("k"), b.get("k")) == (None, None), "clear() empties the whole LOCATION, as documented"


def test_clear_leaves_application_keys_and_other_locations_alone(bh: BucketSQLite) -> None:
    bh.kv.set("user/1", "alice")
    bh.kv.set("django-cache", "an app key that merely looks alike")
    make_cache("other").set("k", "v")
    cache = make_cache()
    cache.set_many({"a": 1, "b": 2})
    cache.clear()
    assert cache.get_many(["a", "b"]) == {}
    assert bh.kv.get("user/1") == "alice"
    assert bh.kv.get("django-cache") == "an app key that merely looks alike"
    assert make_cache("other").get("k") == "v"


def test_a_location_is_never_a_prefix_of_another(bh: BucketSQLite) -> None:
    short, long = make_cache("a"), make_cache("a:b")
    long.set("k", "kept")
    short.set("k", "cleared")
    short.clear()
    assert long.get("k") == "kept"
    assert {make_cache("a").namespace, long.namespace, make_cache("50%").namespace} == {
        "django-cache:a:",
        "django-cache:a%3Ab:",
        "django-cache:50%25:",
    }


def test_values_are_pickled_into_the_bytes_column(bh: BucketSQLite) -> None:
    cache = make_cache()
    value = {"when": 1.5, "items": [1, "two", (3,)], "raw": b"\x00"}
    cache.set("k", value)
    raw = bh.kv.get_bytes("django-cache:default::1:k")
    assert raw == pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    assert cache.get("k") == value


def test_the_process_engine_is_looked_up_on_every_call() -> None:
    cache = make_cache()
    with fresh_buckethead():
        cache.set("k", "first engine")
        with fresh_buckethead():
            assert cache.get("k") is None
            cache.set("k", "second engine")
        assert cache.get("k") == "first engine"


# -- timeouts -------------------------------------------------------------------------------


def test_default_timeout_is_300_seconds_and_none_means_forever(bh: BucketSQLite) -> None:
    make_cache().set("k", "v")
    assert make_cache().ttl("k") == 300
    make_cache(TIMEOUT=60).set("k", "v")
    assert make_cache().ttl("k") == 60
    make_cache(TIMEOUT=None).set("k", "v")
    assert make_cache().ttl("k") is None
    make_cache(TIMEOUT="not a number").set("k", "v")
    assert make_cache().ttl("k") == 300, "an unusable TIMEOUT falls back to Django's default"


def test_timeout_zero_or_less_stores_nothing_and_drops_the_old_value(bh: BucketSQLite) -> None:
    cache = make_cache()
    for timeout in (0, -1, -0.5):
        cache.set("k", "old")
        cache.set("k", "new", timeout=timeout)
        assert cache.has_key("k") is False
        cache.set_many({"a": 1, "b": 2})
        assert cache.set_many({"a": 3, "b": 4}, timeout=timeout) == []
        assert cache.get_many(["a", "b"]) == {}
    assert bh.kv.count() == 0
    make_cache(TIMEOUT=0).set("k", "v")
    assert cache.has_key("k") is False, "TIMEOUT=0 in CACHES means nothing is cached"


def test_add_with_timeout_zero_reports_as_django_does_but_stores_nothing(bh: BucketSQLite) -> None:
    cache = make_cache()
    assert cache.add("k", "v", timeout=0) is True
    assert cache.has_key("k") is False
    cache.set("k", "live")
    assert cache.add("k", "v", timeout=0) is False
    assert cache.get("k") == "live"


def test_add_replaces_only_missing_or_expired_entries(bh: BucketSQLite) -> None:
    cache = make_cache()
    assert cache.add("k", "first", timeout=0.05) is True
    assert cache.add("k", "second") is False
    time.sleep(0.1)
    assert cache.add("k", "third") is True
    assert cache.get("k") == "third"
    assert cache.ttl("k") == 300


def test_touch_sets_removes_or_ends_the_expiry(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("k", "v", timeout=10)
    assert cache.touch("k", 100) is True
    assert cache.ttl("k") == 100
    assert cache.touch("k", None) is True
    assert cache.ttl("k") is None
    assert cache.touch("k") is True
    assert cache.ttl("k") == 300
    assert cache.touch("k", 0) is True
    assert cache.get("k") is None
    assert cache.touch("k") is False


def test_entries_expire(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("short", "v", timeout=0.05)
    cache.set_many({"a": 1}, timeout=0.05)
    cache.set("long", "v", timeout=60)
    time.sleep(0.1)
    assert cache.get("short", "gone") == "gone"
    assert cache.get_many(["short", "a", "long"]) == {"long": "v"}
    assert "short" not in cache
    assert cache.delete("short") is False, "an expired entry no longer exists"


# -- incr / decr and versions ----------------------------------------------------------------


def test_incr_and_decr_keep_the_expiry_and_refuse_missing_keys(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("n", 10, timeout=1000)
    assert cache.incr("n", 5) == 15
    assert cache.decr("n", 20) == -5
    assert cache.get("n") == -5
    assert 999 <= (cache.ttl("n") or 0) <= 1000, "an increment does not reset the expiry"
    cache.set("f", 1.5)
    assert cache.incr("f") == 2.5
    with pytest.raises(ValueError, match="Key 'missing' not found"):
        cache.incr("missing")
    with pytest.raises(ValueError, match="Key 'missing' not found"):
        cache.decr("missing")
    cache.set("s", "text")
    with pytest.raises(TypeError):
        cache.incr("s")
    assert cache.get("s") == "text"


def test_incr_version_moves_the_entry_and_keeps_its_expiry(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set("k", "v", timeout=1000)
    cache.set("k", "stale", version=2)
    assert cache.incr_version("k") == 2
    assert cache.get("k") is None
    assert cache.get("k", version=2) == "v"
    assert 999 <= (cache.ttl("k", version=2) or 0) <= 1000
    assert cache.decr_version("k", version=2) == 1
    assert cache.get("k") == "v"
    with pytest.raises(ValueError, match="Key 'missing' not found"):
        cache.incr_version("missing")


def test_async_methods(bh: BucketSQLite) -> None:
    cache = make_cache()

    async def scenario() -> None:
        await cache.aset("n", 0)
        await asyncio.gather(*(cache.aincr("n") for _ in range(50)))
        assert await cache.aget("n") == 50
        assert await cache.adecr("n", 10) == 40
        assert await cache.aset_many({"a": 1, "b": 2}) == []
        assert await cache.aget_many(iter(["a", "b", "c"])) == {"a": 1, "b": 2}
        assert await cache.ahas_key("a") is True
        await cache.adelete_many(iter(["a", "b"]))
        assert await cache.ahas_key("a") is False
        assert await cache.aincr_version("n") == 2
        assert await cache.aget("n", version=2) == 40
        assert await cache.aget_or_set("d", lambda: "made") == "made"

    asyncio.run(scenario())


# -- culling ---------------------------------------------------------------------------------


def test_culling_evicts_the_least_recently_written_fraction(bh: BucketSQLite) -> None:
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2})
    for i in range(10):
        cache.set(f"k{i}", i)
    cache.set("k0", "rewritten")
    assert bh.kv.count(cache.namespace) == 10
    cache.set("new", "v")
    survivors = {key for key in (f"k{i}" for i in range(10)) if key in cache}
    assert survivors == {"k0", "k6", "k7", "k8", "k9"}, "5 of 10 culled, oldest writes first"
    assert "new" in cache
    assert bh.kv.count(cache.namespace) == 6


def test_culling_purges_expired_entries_first(bh: BucketSQLite) -> None:
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 5})
    cache.set_many({f"old{i}": i for i in range(3)}, timeout=0.05)
    cache.set_many({"a": 1, "b": 2})
    time.sleep(0.1)
    cache.set("c", 3)
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}, "no live entry was evicted"
    assert bh.kv.count(cache.namespace, include_expired=True) == 3, "the expired rows are gone"


def test_cull_frequency_zero_empties_the_namespace(bh: BucketSQLite) -> None:
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 5, "CULL_FREQUENCY": 0})
    cache.set_many({f"k{i}": i for i in range(5)})
    cache.set("last", "v")
    assert bh.kv.keys(cache.namespace) == ["django-cache:default::1:last"]


def test_every_instance_of_a_namespace_keeps_it_within_max_entries(bh: BucketSQLite) -> None:
    instances = [make_cache(OPTIONS={"MAX_ENTRIES": 10}) for _ in range(3)]  # Django makes one per thread
    namespace = instances[0].namespace
    for i in range(100):
        instances[i % 3].set(f"k{i}", i)
        assert bh.kv.count(namespace) <= 10
    instances[0].clear()
    for i in range(10):
        instances[i % 3].set(f"n{i}", i)
    assert bh.kv.count(namespace) == 10, "after clear() the namespace fills up again before any cull"


def test_culling_counts_and_touches_only_its_own_namespace(bh: BucketSQLite) -> None:
    for i in range(20):
        bh.kv.set(f"app/{i}", "v")
    make_cache("other").set_many({f"o{i}": i for i in range(20)})
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 5})
    cache.set_many({f"k{i}": i for i in range(4)})
    cache.set("k4", 4)
    assert bh.kv.count(cache.namespace) == 5, "20 app keys and 20 other-cache entries did not count"
    cache.set("k5", 5)
    assert bh.kv.count(cache.namespace) == 5
    assert bh.kv.count("app/") == 20
    assert bh.kv.count(make_cache("other").namespace) == 20


# -- django-redis-style extras ----------------------------------------------------------------


def test_ttl_expire_and_persist(bh: BucketSQLite) -> None:
    cache = make_cache()
    assert cache.ttl("missing") == 0
    cache.set("forever", "v", timeout=None)
    assert cache.ttl("forever") is None
    cache.set("soon", "v", timeout=0.2)
    assert cache.ttl("soon") == 1, "whole seconds rounded up: a live entry never reads 0"
    assert cache.expire("forever", 50) is True
    assert cache.ttl("forever") == 50
    assert cache.persist("forever") is True
    assert cache.ttl("forever") is None
    assert cache.expire("forever", 0) is True
    assert cache.ttl("forever") == 0
    assert cache.has_key("forever") is False
    assert cache.expire("missing", 10) is False
    assert cache.persist("missing") is False
    assert cache.ttl("soon", version=2) == 0


def test_iter_keys_matches_user_keys_of_one_version(bh: BucketSQLite) -> None:
    cache = make_cache(KEY_PREFIX="site[*]?")
    cache.set_many({"user:1": 1, "user:2": 2, "user:10": 10, "User:3": 3, "session:1": "s"})
    cache.set("user:9", 9, version=2)
    cache.set("user:gone", 0, timeout=0)
    make_cache().set("user:4", "no prefix")
    bh.kv.set("site[*]?:1:user:5", "an app key that looks like an entry")
    assert sorted(cache.iter_keys("user:*")) == ["user:1", "user:10", "user:2"]
    assert sorted(cache.iter_keys("user:?")) == ["user:1", "user:2"]
    assert sorted(cache.iter_keys("[uU]ser:[^1]")) == ["User:3", "user:2"]
    assert sorted(cache.iter_keys("*", version=2)) == ["user:9"]
    assert list(cache.iter_keys("nothing*")) == []
    cache.set("literal*", 1)
    assert list(cache.iter_keys("literal[*]")) == ["literal*"]


def test_delete_pattern_returns_how_many_it_deleted(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set_many({"user:1": 1, "user:2": 2, "session:1": "s"})
    cache.set("user:3", 3, version=2)
    bh.kv.set("user:4", "app key")
    assert cache.delete_pattern("user:*") == 2
    assert cache.get_many(["user:1", "user:2", "session:1"]) == {"session:1": "s"}
    assert cache.get("user:3", version=2) == 3
    assert bh.kv.get("user:4") == "app key"
    assert cache.delete_pattern("user:*") == 0


def test_patterns_follow_a_custom_key_function(bh: BucketSQLite) -> None:
    cache = make_cache(KEY_PREFIX="p", KEY_FUNCTION=lambda key, prefix, version: f"{prefix}/{key}/v{version}")
    cache.set_many({"a1": 1, "a2": 2, "b1": 3})
    assert sorted(cache.iter_keys("a*")) == ["a1", "a2"]
    assert cache.delete_pattern("*1") == 2
    hashed = make_cache(KEY_FUNCTION=lambda key, prefix, version: str(hash(key)))
    with pytest.raises(ValueError, match="KEY_FUNCTION"):
        list(hashed.iter_keys("*"))


# -- errors, engine lifecycle, threads -----------------------------------------------------------


def test_values_over_the_kv_limit_are_cached_as_blobs() -> None:
    """Once refused with ValueTooLarge; tests/test_cache_blobs.py covers them in depth."""
    with fresh_buckethead(kv_max_value_bytes=1024) as bh:
        cache = make_cache()
        cache.set("k", "small")
        cache.set("k", "x" * 2000)
        cache.set_many({"a": 1, "b": "y" * 2000})
        assert cache.get_many(["a", "b", "k"]) == {"a": 1, "b": "y" * 2000, "k": "x" * 2000}
        assert len(bh.files) == 2


def test_reads_never_make_the_database_dirty(bh: BucketSQLite) -> None:
    cache = make_cache()
    cache.set_many({"a": 1, "b": 2}, timeout=0.05)
    time.sleep(0.1)
    bh.force_flush()
    cache.get("a")
    cache.get_many(["a", "b"])
    cache.has_key("b")
    cache.ttl("a")
    list(cache.iter_keys("*"))
    assert bh.dirty is False, "reading expired entries must not write (nothing to snapshot)"


def test_read_only_engine_serves_reads_and_refuses_writes(tmp_path: Path) -> None:
    with local_engine(tmp_path) as writer, use_engine(writer):
        make_cache().set("k", "from the writer")
    reader = local_engine(tmp_path, read_only_reason="this is a reader: write through the running site").start()
    try:
        with use_engine(reader):
            cache = make_cache()
            assert cache.get("k") == "from the writer"
            writes = [
                lambda: cache.set("k", "v"),
                lambda: cache.add("new", "v"),
                lambda: cache.set_many({"a": 1}),
                lambda: cache.delete("k"),
                lambda: cache.incr("k"),
                lambda: cache.touch("k"),
                cache.clear,
            ]
            for write in writes:
                with pytest.raises(ReadOnlyError, match="write through the running site"):
                    write()
            assert cache.get("k") == "from the writer"
    finally:
        reader.stop()


def test_entries_survive_an_engine_restart(tmp_path: Path) -> None:
    cache = make_cache("durable")
    with local_engine(tmp_path / "bucket", local_dir=tmp_path / "host-1") as first, use_engine(first):
        cache.set("forever", {"answer": 42}, timeout=None)
        cache.set("timed", [1, 2], timeout=1000)
        cache.set("counter", 1)
        cache.incr("counter", 9)
    with local_engine(tmp_path / "bucket", local_dir=tmp_path / "host-2") as second, use_engine(second):  # new host
        assert second.restored_from is not None
        assert cache.get_many(["forever", "timed", "counter"]) == {
            "forever": {"answer": 42},
            "timed": [1, 2],
            "counter": 10,
        }
        assert cache.ttl("forever") is None
        assert 990 < (cache.ttl("timed") or 0) <= 1000


def test_many_threads_never_see_a_locked_database(bh: BucketSQLite) -> None:
    """16 threads hammer one cache while snapshots are taken and another connection writes."""
    threads_n, rounds = 16, 150
    cache = make_cache(OPTIONS={"MAX_ENTRIES": 100_000})
    cache.set("shared", 0, timeout=None)
    errors: list[BaseException] = []
    add_winners: Counter[int] = Counter()
    winners_lock = threading.Lock()
    start = threading.Barrier(threads_n + 2)
    done = threading.Event()

    def client(n: int) -> None:
        try:
            start.wait()
            cache.set(f"own:{n}", 0)
            for r in range(rounds):
                cache.incr("shared")
                cache.incr(f"own:{n}")
                cache.set(f"t{n}:{r}", {"n": n, "r": r})
                assert cache.get(f"t{n}:{r}") == {"n": n, "r": r}
                if cache.add(f"race:{r}", n):
                    with winners_lock:
                        add_winners[r] += 1
                cache.get_many([f"t{n}:{r}", "shared", f"race:{r}"])
                if r % 10 == 0:
                    cache.delete_many([f"t{n}:{r - 10}"])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def flusher() -> None:
        try:
            start.wait()
            while not done.wait(0.005):
                bh.force_flush()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def other_connection_writer() -> None:
        conn = bh.connect(check_same_thread=True, autocommit=True)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS app_log (n INTEGER)")
            start.wait()
            while not done.wait(0.001):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO app_log VALUES (1)")
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            conn.close()

    clients = [threading.Thread(target=client, args=(n,)) for n in range(threads_n)]
    helpers = [threading.Thread(target=flusher), threading.Thread(target=other_connection_writer)]
    for t in clients + helpers:
        t.start()
    for t in clients:
        t.join()
    done.set()
    for t in helpers:
        t.join()

    assert errors == []
    assert cache.get("shared") == threads_n * rounds
    assert [cache.get(f"own:{n}") for n in range(threads_n)] == [rounds] * threads_n
    assert add_winners == dict.fromkeys(range(rounds), 1), "exactly one add() wins each race"
    assert bh.last_flush is not None
    assert bh.last_flush.uploaded
