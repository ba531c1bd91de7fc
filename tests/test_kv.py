"""KVStore, behaviour by behaviour as the seed text states it, plus expiry."""

from __future__ import annotations

import sqlite3

import pytest

from buckethead_django.engine import BucketSQLite, Interface, KVStore, ReadOnlyError, ValueTooLarge
from buckethead_django.engine.interfaces.kv import glob_escape

from .concurrency import run_in_threads


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def conn() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kv(conn: sqlite3.Connection, clock: FakeClock) -> KVStore:
    return KVStore(conn, clock=clock)


# -- the seed text, line by line ------------------------------------------------


def test_canonical_api_is_str_in_str_out(kv: KVStore) -> None:
    kv.set("greeting", "héllo ✓")
    assert kv.get("greeting") == "héllo ✓"
    assert isinstance(kv.get("greeting"), str)
    assert kv.get("missing") is None
    assert kv.get("missing", "fallback") == "fallback"


def test_bytes_escape_hatch(kv: KVStore) -> None:
    kv.set_bytes("blob", b"\x00\xff\x10")
    assert kv.get_bytes("blob") == b"\x00\xff\x10"
    assert kv.get_bytes("missing") is None


def test_both_apis_share_one_blob_column(kv: KVStore, conn: sqlite3.Connection) -> None:
    kv.set("s", "text")
    kv.set_bytes("b", b"text")
    assert kv.get_bytes("s") == b"text"
    assert kv.get("b") == "text"
    types = {r[0] for r in conn.execute("SELECT typeof(value) FROM bh_kv")}
    assert types == {"blob"}


def test_table_is_bh_kv_with_the_buckethead_columns(kv: KVStore, conn: sqlite3.Connection) -> None:
    cols = [(r[1], r[2], r[3], r[5]) for r in conn.execute("PRAGMA table_info(bh_kv)")]
    assert cols == [
        ("key", "TEXT", 0, 1),
        ("value", "BLOB", 1, 0),
        ("created_at", "REAL", 1, 0),
        ("updated_at", "REAL", 1, 0),
        ("expires_at", "REAL", 0, 0),
    ]


def test_get_of_non_utf8_names_the_key_and_get_bytes(kv: KVStore) -> None:
    kv.set_bytes("pickle:1", b"\x80\x04\x95")
    with pytest.raises(UnicodeDecodeError) as err:
        kv.get("pickle:1")
    message = str(err.value)
    assert "'pickle:1'" in message
    assert "get_bytes()" in message
    assert kv.get_bytes("pickle:1") == b"\x80\x04\x95"


def test_dict_protocol_in_string_form(kv: KVStore) -> None:
    kv["a"] = "1"
    kv["b"] = "2"
    assert kv["a"] == "1"
    assert "a" in kv
    assert "zzz" not in kv
    assert 42 not in kv
    assert len(kv) == 2
    del kv["a"]
    assert "a" not in kv
    assert len(kv) == 1
    with pytest.raises(KeyError):
        kv["a"]
    with pytest.raises(KeyError):
        del kv["a"]


def test_delete_says_whether_the_key_existed(kv: KVStore) -> None:
    kv.set("k", "v")
    assert kv.delete("k") is True
    assert kv.delete("k") is False
    assert kv.exists("k") is False


def test_keys_are_sorted_and_filtered_by_literal_prefix(kv: KVStore) -> None:
    for key in ["user:2", "user:1", "users", "user%x", "user_x", "User:3", "session:1", "usex"]:
        kv.set(key, "v")
    assert kv.keys() == sorted(["user:2", "user:1", "users", "user%x", "user_x", "User:3", "session:1", "usex"])
    assert kv.keys("user:") == ["user:1", "user:2"]
    assert kv.keys("user%") == ["user%x"], "% matches literally"
    assert kv.keys("user_") == ["user_x"], "_ matches literally"
    assert kv.keys("User") == ["User:3"], "prefixes are case-sensitive"
    assert kv.keys("nothing") == []


def test_keys_with_non_ascii_prefixes(kv: KVStore) -> None:
    for key in ["κλειδί:1", "κλειδί:2", "κλειδιά", "🔑a", "🔑b", "\U0010ffff-max"]:
        kv.set(key, "v")
    assert kv.keys("κλειδί:") == ["κλειδί:1", "κλειδί:2"]
    assert kv.keys("🔑") == ["🔑a", "🔑b"]
    assert kv.keys("\U0010ffff") == ["\U0010ffff-max"]


def test_value_over_the_limit_is_refused_with_advice(conn: sqlite3.Connection) -> None:
    kv = KVStore(conn, max_value_bytes=1024)
    kv.set_bytes("ok", b"x" * 1024)
    with pytest.raises(ValueTooLarge, match=r"2048 bytes.*FileStore"):
        kv.set_bytes("big", b"x" * 2048)
    assert kv.get_bytes("big") is None


def test_default_limit_is_one_mib(kv: KVStore) -> None:
    kv.set_bytes("ok", b"x" * 1024 * 1024)
    with pytest.raises(ValueTooLarge):
        kv.set_bytes("big", b"x" * (1024 * 1024 + 1))


def test_wrong_types_are_refused_with_the_right_method_named(kv: KVStore) -> None:
    with pytest.raises(TypeError, match="set_bytes"):
        kv.set("k", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"use set\(\)"):
        kv.set_bytes("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys are str"):
        kv.get(1)  # type: ignore[arg-type]


def test_overwrite_keeps_created_at_and_moves_updated_at(
    kv: KVStore, conn: sqlite3.Connection, clock: FakeClock
) -> None:
    kv.set("k", "v1")
    clock.now += 10
    kv.set("k", "v2")
    created, updated = conn.execute("SELECT created_at, updated_at FROM bh_kv WHERE key='k'").fetchone()
    assert updated - created == 10


# -- expiry ----------------------------------------------------------------------


def test_ttl_expiry(kv: KVStore, clock: FakeClock) -> None:
    kv.set("session", "data", ttl=30)
    kv.set("forever", "data")
    assert kv.ttl("session") == 30
    assert kv.ttl("forever") is None
    clock.now += 29
    assert kv.get("session") == "data"
    assert kv.ttl("session") == pytest.approx(1)
    clock.now += 1
    assert kv.get("session") is None
    assert kv.get_bytes("session") is None
    assert "session" not in kv
    assert kv.exists("session") is False
    assert kv.keys() == ["forever"]
    assert len(kv) == 1
    with pytest.raises(KeyError):
        kv.ttl("session")
    assert kv.delete("session") is False, "an expired key did not exist any more"


def test_expire_and_persist(kv: KVStore, clock: FakeClock) -> None:
    kv.set("k", "v")
    assert kv.expire("k", 5) is True
    assert kv.ttl("k") == 5
    assert kv.persist("k") is True
    clock.now += 100
    assert kv.get("k") == "v"
    assert kv.expire("k", 0) is True
    assert kv.get("k") is None
    assert kv.expire("missing", 5) is False
    assert kv.persist("missing") is False


def test_setting_again_replaces_the_expiry(kv: KVStore, clock: FakeClock) -> None:
    kv.set("k", "v", ttl=5)
    kv.set("k", "v2")
    clock.now += 10
    assert kv.get("k") == "v2"


def test_purge_expired_removes_rows(kv: KVStore, conn: sqlite3.Connection, clock: FakeClock) -> None:
    kv.set("a", "1", ttl=1)
    kv.set("b", "2")
    clock.now += 2
    assert kv.purge_expired() == 1
    assert [r[0] for r in conn.execute("SELECT key FROM bh_kv")] == ["b"]


def test_non_positive_ttl_is_refused(kv: KVStore) -> None:
    with pytest.raises(ValueError, match="delete"):
        kv.set("k", "v", ttl=0)


# -- Interface contract ------------------------------------------------------------


def test_interface_is_abstract(conn: sqlite3.Connection) -> None:
    with pytest.raises(TypeError):
        Interface(conn)  # type: ignore[abstract]


def test_init_schema_runs_at_construction_and_is_idempotent(conn: sqlite3.Connection) -> None:
    class Counters(Interface):
        def _init_schema(self) -> None:
            self._change("CREATE TABLE IF NOT EXISTS bh_counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")

        def incr(self, name: str) -> int:
            with self._transaction() as c:
                c.execute("INSERT INTO bh_counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1", (name,))
                return int(c.execute("SELECT n FROM bh_counters WHERE name = ?", (name,)).fetchone()[0])

    first = Counters(conn)
    assert first.incr("hits") == 1
    second = Counters(conn)  # the table exists already: construction must not fail or reset it
    assert second.incr("hits") == 2


def test_schema_upgrade_adds_the_expiry_column_to_an_old_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE bh_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL)"
    )
    conn.execute("INSERT INTO bh_kv VALUES ('old', CAST('value' AS BLOB), 1, 1)")
    kv = KVStore(conn)
    KVStore(conn)  # a second construction finds the column already there
    assert kv.get("old") == "value"
    assert kv.ttl("old") is None
    kv.set("new", "v", ttl=60)
    assert 59 < (kv.ttl("new") or 0) <= 60


def test_many_threads_share_one_kvstore(engine: BucketSQLite) -> None:

    def work(n: int) -> None:
        for i in range(200):
            engine.kv.set(f"t{n}:{i}", str(i))
            assert engine.kv.get(f"t{n}:{i}") == str(i)

    assert run_in_threads(work) == []
    assert len(engine.kv) == 8 * 200


# -- batch and conditional operations --------------------------------------------------


def test_add_stores_only_when_the_key_is_missing_or_expired(kv: KVStore, clock: FakeClock) -> None:
    assert kv.add("k", "first", ttl=10) is True
    assert kv.add("k", "second") is False
    assert kv.get("k") == "first"
    assert kv.ttl("k") == 10, "a refused add leaves the expiry alone"
    clock.now += 10
    assert kv.add("k", "third") is True, "an expired key counts as missing"
    assert kv.get("k") == "third"
    assert kv.ttl("k") is None
    assert kv.add_bytes("b", b"\xff") is True
    assert kv.add_bytes("b", b"\x00") is False
    assert kv.get_bytes("b") == b"\xff"


def test_add_refuses_wrong_types_and_oversized_values(conn: sqlite3.Connection) -> None:
    kv = KVStore(conn, max_value_bytes=4)
    with pytest.raises(TypeError, match="add_bytes"):
        kv.add("k", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"use add\(\)"):
        kv.add_bytes("k", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueTooLarge):
        kv.add_bytes("k", b"12345")
    assert "k" not in kv


def test_get_many_bytes_returns_live_values_only(kv: KVStore, clock: FakeClock) -> None:
    kv.set_bytes("a", b"1")
    kv.set_bytes("b", b"2", ttl=5)
    kv.set_bytes("c", b"3")
    clock.now += 5
    assert kv.get_many_bytes(["a", "b", "c", "missing", "a"]) == {"a": b"1", "c": b"3"}
    assert kv.get_many_bytes([]) == {}
    assert kv.get_many_bytes(iter(["c"])) == {"c": b"3"}


def test_batches_larger_than_one_statement_can_bind(kv: KVStore) -> None:
    items = {f"k{i:05}": str(i).encode() for i in range(1234)}
    kv.set_many_bytes(items)
    assert kv.get_many_bytes(items) == items
    assert kv.delete_many(list(items)[:1000]) == 1000
    assert kv.count() == 234


def test_set_many_bytes_writes_all_with_one_expiry_or_nothing(conn: sqlite3.Connection, clock: FakeClock) -> None:
    kv = KVStore(conn, clock=clock, max_value_bytes=8)
    kv.set_many_bytes({"a": b"1", "b": bytearray(b"2")}, ttl=30)
    assert kv.get_many_bytes(["a", "b"]) == {"a": b"1", "b": b"2"}
    assert kv.ttl("a") == kv.ttl("b") == 30
    with pytest.raises(ValueTooLarge):
        kv.set_many_bytes({"c": b"3", "d": b"x" * 9})
    assert kv.keys() == ["a", "b"], "a refused value leaves the batch unwritten"
    with pytest.raises(TypeError, match="set_many_bytes"):
        kv.set_many_bytes({"e": "text"})  # type: ignore[dict-item]
    kv.set_many_bytes({})
    assert kv.count() == 2


def test_update_bytes_is_a_read_modify_write_that_keeps_the_expiry(
    kv: KVStore, conn: sqlite3.Connection, clock: FakeClock
) -> None:
    kv.set_bytes("n", b"41", ttl=60)
    clock.now += 10
    assert kv.update_bytes("n", lambda old: str(int(old) + 1).encode()) == b"42"
    assert kv.get_bytes("n") == b"42"
    assert kv.ttl("n") == 50
    created, updated = conn.execute("SELECT created_at, updated_at FROM bh_kv WHERE key = 'n'").fetchone()
    assert updated - created == 10
    with pytest.raises(KeyError):
        kv.update_bytes("missing", lambda old: old)
    clock.now += 50
    with pytest.raises(KeyError):
        kv.update_bytes("n", lambda old: old)


def test_update_bytes_writes_nothing_when_the_change_fails(conn: sqlite3.Connection) -> None:
    kv = KVStore(conn, max_value_bytes=4)
    kv.set_bytes("k", b"v")

    def boom(old: bytes) -> bytes:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        kv.update_bytes("k", boom)
    with pytest.raises(ValueTooLarge):
        kv.update_bytes("k", lambda old: old * 5)
    with pytest.raises(TypeError, match="update_bytes"):
        kv.update_bytes("k", lambda old: "text")  # type: ignore[arg-type,return-value]
    assert kv.get_bytes("k") == b"v"
    kv.set("k", "ok")  # no transaction was left open
    assert kv.get("k") == "ok"


def test_rename_moves_the_value_and_its_expiry(kv: KVStore, clock: FakeClock) -> None:
    kv.set("old", "v", ttl=30)
    kv.set("new", "replaced")
    assert kv.rename("old", "new") is True
    assert kv.get("old") is None
    assert kv.get("new") == "v"
    assert kv.ttl("new") == 30
    assert kv.rename("new", "new") is True
    assert kv.get("new") == "v"
    kv.set("target", "kept")
    assert kv.rename("missing", "target") is False
    assert kv.get("target") == "kept"
    clock.now += 30
    assert kv.rename("new", "target") is False, "an expired key cannot be renamed"
    assert kv.get("target") == "kept"


def test_delete_many_counts_live_keys_and_removes_expired_rows(
    kv: KVStore, conn: sqlite3.Connection, clock: FakeClock
) -> None:
    kv.set("a", "1")
    kv.set("b", "2", ttl=1)
    kv.set("c", "3")
    clock.now += 1
    assert kv.delete_many(["a", "b", "missing"]) == 1
    assert [r[0] for r in conn.execute("SELECT key FROM bh_kv")] == ["c"]
    assert kv.delete_many([]) == 0


def test_delete_prefix_with_and_without_glob(kv: KVStore, conn: sqlite3.Connection, clock: FakeClock) -> None:
    for key in ["ns:a1", "ns:a2", "ns:b1", "nt:a1", "other"]:
        kv.set(key, "v")
    kv.set("ns:gone", "v", ttl=1)
    clock.now += 1
    assert kv.delete_prefix("ns:", glob="ns:a*") == 2
    assert kv.keys() == ["ns:b1", "nt:a1", "other"]
    assert kv.delete_prefix("ns:") == 1, "the expired key was not live"
    assert [r[0] for r in conn.execute("SELECT key FROM bh_kv ORDER BY key")] == ["nt:a1", "other"]


def test_keys_glob_syntax(kv: KVStore) -> None:
    for key in ["user:1", "user:2", "user:10", "User:3", "user:x", "user:*", "user:[1]"]:
        kv.set(key, "v")
    assert kv.keys(glob="user:*") == ["user:*", "user:1", "user:10", "user:2", "user:[1]", "user:x"]
    assert kv.keys(glob="user:?") == ["user:*", "user:1", "user:2", "user:x"]
    assert kv.keys(glob="user:[0-9]") == ["user:1", "user:2"]
    assert kv.keys(glob="user:[^0-9]") == ["user:*", "user:x"]
    assert kv.keys(glob="USER:*") == [], "GLOB is case-sensitive"
    assert kv.keys("user:1", glob="*0") == ["user:10"], "the glob matches the whole key, the prefix narrows"
    assert kv.keys(glob=glob_escape("user:*")) == ["user:*"]
    assert kv.keys(glob=glob_escape("user:[1]")) == ["user:[1]"]
    assert kv.keys(glob=glob_escape("user:?")) == []


def test_count_by_prefix_with_and_without_expired_rows(kv: KVStore, clock: FakeClock) -> None:
    kv.set("a:1", "v")
    kv.set("a:2", "v", ttl=1)
    kv.set("b:1", "v")
    clock.now += 1
    assert kv.count("a:") == 1
    assert kv.count("a:", include_expired=True) == 2
    assert kv.count() == len(kv) == 2
    assert kv.purge_expired("b:") == 0
    assert kv.purge_expired("a:") == 1
    assert kv.count("a:", include_expired=True) == 1


def test_evict_oldest_removes_the_least_recently_written(kv: KVStore, clock: FakeClock) -> None:
    for i in range(5):
        kv.set(f"c:{i}", "v")
        clock.now += 1
    kv.set("c:0", "rewritten")
    kv.set("other", "v")
    assert kv.evict_oldest("c:", 2) == 2
    assert kv.keys("c:") == ["c:0", "c:3", "c:4"]
    assert kv.evict_oldest("c:", 0) == 0
    assert kv.evict_oldest("c:", 10) == 3
    assert kv.keys() == ["other"]


def test_read_only_store_refuses_every_new_write(kv: KVStore) -> None:
    kv.set("k", "v")
    kv.read_only_reason = "a reader"
    writes = [
        lambda: kv.add("x", "v"),
        lambda: kv.set_many_bytes({"x": b"v"}),
        lambda: kv.update_bytes("k", lambda old: old),
        lambda: kv.rename("k", "x"),
        lambda: kv.delete_many(["k"]),
        lambda: kv.delete_prefix(""),
        kv.purge_expired,
        lambda: kv.evict_oldest("", 1),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError, match="a reader"):
            write()
    assert kv.get("k") == "v"
    assert kv.get_many_bytes(["k"]) == {"k": b"v"}
    assert kv.count() == 1


def test_update_bytes_never_loses_a_concurrent_increment(engine: BucketSQLite) -> None:
    engine.kv.set("counter", "0")

    def work(_thread: int) -> None:
        for _ in range(200):
            engine.kv.update_bytes("counter", lambda old: str(int(old) + 1).encode())

    assert run_in_threads(work) == []
    assert engine.kv.get("counter") == str(8 * 200)
