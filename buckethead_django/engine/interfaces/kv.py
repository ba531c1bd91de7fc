"""KVStore: a simple string key-value interface with an explicit bytes escape hatch.

Canonical API is str in, str out — what most callers want. For binary
payloads (small pickles, protobufs, etc.), use the `set_bytes` / `get_bytes`
methods. Both APIs share a single ``bh_kv.value`` BLOB column under the hood.

Values are stored inline in SQLite — keep individual values small (under
roughly 1 MB each). For larger values, use FileStore.

Supports the standard dict protocol (``__getitem__``, ``__setitem__``,
``__delitem__``, ``__contains__``, ``__len__``) in its string form.

Gotcha: if you store a value via `set_bytes` with non-UTF-8 bytes and then
retrieve via `get()`, you'll get ``UnicodeDecodeError``. Retrieve via
`get_bytes` in that case. The error message tells you what went wrong, but
the split API makes this easy to avoid.

Keys may expire: ``set(key, value, ttl=seconds)``, `expire`, `persist` and
`ttl` manage an optional expiry time; an expired key is never returned nor
counted, whether or not its row has been purged yet.

Batch and conditional operations (`add`, `get_many_bytes`, `set_many_bytes`,
`update_bytes`, `rename`, `delete_many`, `delete_prefix`, `count`,
`evict_oldest`) each run as one statement or one transaction, so a caller
such as a cache backend gets atomic read-modify-writes and one round of
locking per call instead of one per key.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping

from ..config import DEFAULT_KV_MAX_VALUE_BYTES
from ..errors import ValueTooLarge
from ..objectstore import ObjectStore
from .base import Interface, prefix_range

_LIVE = "(expires_at IS NULL OR expires_at > ?)"
# Fewer bound parameters per statement than any SQLite build allows (999 before 3.32).
_CHUNK = 500
_UPSERT = """
    INSERT INTO bh_kv (key, value, created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT(key) DO UPDATE SET
        value = excluded.value,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at,
        created_at = CASE WHEN bh_kv.expires_at IS NOT NULL AND bh_kv.expires_at <= excluded.updated_at
                          THEN excluded.created_at ELSE bh_kv.created_at END
"""
# The same upsert, except that a live value is left alone: the insert happens only if the key is absent or expired.
_ADD = """
    INSERT INTO bh_kv (key, value, created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT(key) DO UPDATE SET
        value = excluded.value,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at
    WHERE bh_kv.expires_at IS NOT NULL AND bh_kv.expires_at <= excluded.updated_at
"""


class KVStore(Interface):
    """String (and bytes) key-value store in the ``bh_kv`` table."""

    TABLE = "bh_kv"

    def __init__(
        self,
        conn: sqlite3.Connection,
        store: ObjectStore | None = None,
        *,
        max_value_bytes: int = DEFAULT_KV_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_value_bytes = max_value_bytes
        self._clock = clock
        super().__init__(conn, store)

    def _init_schema(self) -> None:
        self._change(
            """
            CREATE TABLE IF NOT EXISTS bh_kv (
                key        TEXT PRIMARY KEY,
                value      BLOB NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                expires_at REAL
            )
            """
        )
        # Snapshots written by buckethead 0.4.x have no expiry column.
        self._add_missing_columns(self.TABLE, {"expires_at": "REAL"})

    # -- strings ---------------------------------------------------------------

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds if given."""
        self.set_bytes(key, _text(value, "set"), ttl)

    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is missing or expired; True if it was stored.

        One statement, so two callers racing to add the same key cannot both win.
        """
        return self.add_bytes(key, _text(value, "add"), ttl)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key`` as text, or ``default`` if it is missing or expired."""
        raw = self.get_bytes(key)
        if raw is None:
            return default
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnicodeDecodeError(
                exc.encoding,
                exc.object,
                exc.start,
                exc.end,
                f"the value of key {key!r} is not UTF-8 text (it was stored as bytes); read it with get_bytes()",
            ) from None

    # -- bytes -----------------------------------------------------------------

    def set_bytes(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store raw bytes under ``key``, expiring after ``ttl`` seconds if given."""
        self._upsert([self._row(key, _bytes(value, "set_bytes"), ttl)])

    def add_bytes(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """`add` for raw bytes: store only if ``key`` is missing or expired; True if it was stored."""
        row = self._row(key, _bytes(value, "add_bytes"), ttl)
        return self._change(_ADD, row) > 0

    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None:
        """The value of ``key`` as bytes, or ``default`` if it is missing or expired."""
        _check_key(key)
        row = self._one(f"SELECT value FROM bh_kv WHERE key = ? AND {_LIVE}", (key, self._clock()))
        return default if row is None else bytes(row[0])

    def get_many_bytes(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The live values of ``keys``, by key; missing and expired keys are left out.

        One query per few hundred keys rather than one per key.
        """
        found: dict[str, bytes] = {}
        now = self._clock()
        for chunk in _chunks(keys):
            marks = ", ".join("?" * len(chunk))
            rows = self._all(f"SELECT key, value FROM bh_kv WHERE key IN ({marks}) AND {_LIVE}", (*chunk, now))
            found.update((k, bytes(v)) for k, v in rows)
        return found

    def set_many_bytes(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Store every value of ``items`` in one transaction, all with the same expiry.

        Every value is checked before anything is written, so a refused value
        leaves the store unchanged.
        """
        self._upsert([self._row(key, _bytes(value, "set_many_bytes"), ttl) for key, value in items.items()])

    def update_bytes(self, key: str, change: Callable[[bytes], bytes]) -> bytes:
        """Replace the value of ``key`` by ``change(old value)`` atomically; returns the new value.

        A read-modify-write (a counter, an append) that no other writer can
        interleave with. The expiry and ``created_at`` are kept. ``KeyError``
        if the key is missing or expired; if ``change`` raises, nothing is
        written. ``change`` runs inside the transaction, so it must be quick
        and must not use this store.
        """
        _check_key(key)
        with self._transaction() as conn:
            now = self._clock()
            row = conn.execute(f"SELECT value FROM bh_kv WHERE key = ? AND {_LIVE}", (key, now)).fetchone()
            if row is None:
                raise KeyError(key)
            new = _bytes(change(bytes(row[0])), "update_bytes")
            self._check_size(key, new)
            conn.execute("UPDATE bh_kv SET value = ?, updated_at = ? WHERE key = ?", (new, now, key))
        return new

    # -- keys ------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if a live value was there."""
        return self.delete_many([key]) > 0

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove every key in ``keys`` in one transaction; returns how many had live values."""
        chunks = list(_chunks(keys))
        if not chunks:
            return 0
        removed = 0
        with self._transaction() as conn:
            now = self._clock()
            for chunk in chunks:
                marks = ", ".join("?" * len(chunk))
                live = conn.execute(f"SELECT count(*) FROM bh_kv WHERE key IN ({marks}) AND {_LIVE}", (*chunk, now))
                removed += int(live.fetchone()[0])
                conn.execute(f"DELETE FROM bh_kv WHERE key IN ({marks})", chunk)
        return removed

    def delete_prefix(self, prefix: str, glob: str | None = None) -> int:
        """Remove every key under ``prefix`` (matching ``glob`` if given, as in `keys`), expired rows too.

        Returns how many had live values. One transaction, however many keys.
        An empty prefix with no glob empties the whole table.
        """
        sql, params = _match_clause(prefix, glob)
        with self._transaction() as conn:
            live = conn.execute(f"SELECT count(*) FROM bh_kv WHERE {sql} AND {_LIVE}", (*params, self._clock()))
            removed = int(live.fetchone()[0])
            conn.execute(f"DELETE FROM bh_kv WHERE {sql}", params)
        return removed

    def rename(self, src: str, dst: str) -> bool:
        """Move the live value of ``src`` to ``dst`` with its expiry, replacing ``dst``; False if ``src`` is missing.

        Atomic, like Redis's RENAME: no reader sees both keys or neither.
        """
        _check_key(src)
        _check_key(dst)
        with self._transaction() as conn:
            now = self._clock()
            if conn.execute(f"SELECT 1 FROM bh_kv WHERE key = ? AND {_LIVE}", (src, now)).fetchone() is None:
                return False
            if src != dst:
                conn.execute("DELETE FROM bh_kv WHERE key = ?", (dst,))
                conn.execute("UPDATE bh_kv SET key = ? WHERE key = ?", (dst, src))
        return True

    def exists(self, key: str) -> bool:
        _check_key(key)
        row = self._one(f"SELECT 1 FROM bh_kv WHERE key = ? AND {_LIVE}", (key, self._clock()))
        return row is not None

    def keys(self, prefix: str = "", glob: str | None = None) -> list[str]:
        """Live keys starting with ``prefix``, sorted. Every character of the prefix is literal.

        ``glob``, if given, must also match the whole key, with SQLite's
        case-sensitive GLOB syntax: ``*`` any run of characters, ``?`` one
        character, ``[abc]``, ``[a-z]`` and ``[^abc]`` sets. There is no
        backslash escape: `glob_escape` makes text match literally. The
        prefix narrows the search through the primary key index; the glob
        then filters what the prefix found.
        """
        sql, params = _match_clause(prefix, glob)
        rows = self._all(f"SELECT key FROM bh_kv WHERE {sql} AND {_LIVE} ORDER BY key", (*params, self._clock()))
        return [r[0] for r in rows]

    def count(self, prefix: str = "", *, include_expired: bool = False) -> int:
        """How many live keys start with ``prefix``.

        With ``include_expired``, rows of expired keys that have not been
        purged yet count too: that is what the database (and each snapshot)
        actually holds, which is what a size limit should look at.
        """
        sql, params = prefix_range("key", prefix)
        if not include_expired:
            sql, params = f"{sql} AND {_LIVE}", (*params, self._clock())
        row = self._one(f"SELECT count(*) FROM bh_kv WHERE {sql}", params)
        return int(row[0]) if row else 0

    # -- expiry ----------------------------------------------------------------

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires, or None if it never does. KeyError if it is missing."""
        _check_key(key)
        now = self._clock()
        row = self._one(f"SELECT expires_at FROM bh_kv WHERE key = ? AND {_LIVE}", (key, now))
        if row is None:
            raise KeyError(key)
        return None if row[0] is None else max(0.0, row[0] - now)

    def expire(self, key: str, seconds: float) -> bool:
        """Make ``key`` expire ``seconds`` from now (at once if <= 0); False if it is missing."""
        _check_key(key)
        now = self._clock()
        changed = self._change(f"UPDATE bh_kv SET expires_at = ? WHERE key = ? AND {_LIVE}", (now + seconds, key, now))
        return changed > 0

    def persist(self, key: str) -> bool:
        """Remove the expiry of ``key``; False if it is missing."""
        _check_key(key)
        changed = self._change(f"UPDATE bh_kv SET expires_at = NULL WHERE key = ? AND {_LIVE}", (key, self._clock()))
        return changed > 0

    def purge_expired(self, prefix: str = "") -> int:
        """Delete the rows of expired keys (under ``prefix`` if given); returns how many were removed."""
        sql, params = prefix_range("key", prefix)
        return self._change(
            f"DELETE FROM bh_kv WHERE {sql} AND expires_at IS NOT NULL AND expires_at <= ?", (*params, self._clock())
        )

    def evict_oldest(self, prefix: str, count: int) -> int:
        """Delete the ``count`` least recently written live keys under ``prefix``; returns how many went.

        For size-bounded uses such as a cache: reads never write, so "least
        recently written" is the order that costs nothing to keep.
        """
        if count <= 0:
            return 0
        sql, params = prefix_range("key", prefix)
        return self._change(
            f"""
            DELETE FROM bh_kv WHERE key IN (
                SELECT key FROM bh_kv WHERE {sql} AND {_LIVE} ORDER BY updated_at, key LIMIT ?
            )
            """,
            (*params, self._clock(), count),
        )

    # -- dict protocol (string form) ---------------------------------------------

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: str) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.exists(key)

    def __len__(self) -> int:
        return self.count()

    # -- internals -------------------------------------------------------------

    def _row(self, key: str, value: bytes, ttl: float | None) -> tuple[str, bytes, float, float, float | None]:
        """The checked parameters of one insert: key, value, created_at, updated_at, expires_at."""
        _check_key(key)
        self._check_size(key, value)
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}; use delete() to remove a key")
        now = self._clock()
        return key, value, now, now, None if ttl is None else now + ttl

    def _upsert(self, rows: list[tuple[str, bytes, float, float, float | None]]) -> None:
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(_UPSERT, rows)

    def _check_size(self, key: str, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            raise ValueTooLarge(
                f"the value for key {key!r} is {len(value)} bytes, over the KVStore limit of "
                f"{self.max_value_bytes} bytes; store large values with FileStore (files.put()) "
                "and keep the returned bh-key in KV instead"
            )


_STR_TWINS = frozenset({"set_bytes", "add_bytes"})


def glob_escape(text: str) -> str:
    """``text`` as a GLOB pattern that matches exactly itself (``*``, ``?`` and ``[`` become one-character sets)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"KVStore keys are str, got {type(key).__name__}")


def _text(value: object, method: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(
            f"KVStore.{method}() takes a str value, got {type(value).__name__}; use {method}_bytes() for bytes"
        )
    return value.encode("utf-8")


def _bytes(value: object, method: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        advice = f"use {method.removesuffix('_bytes')}() for str" if method in _STR_TWINS else "encode str first"
        raise TypeError(f"KVStore.{method}() takes bytes, got {type(value).__name__}; {advice}")
    return bytes(value)


def _chunks(keys: Iterable[str]) -> Iterable[list[str]]:
    """``keys`` checked and split into lists small enough to bind in one statement."""
    chunk: list[str] = []
    for key in keys:
        _check_key(key)
        chunk.append(key)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _match_clause(prefix: str, glob: str | None) -> tuple[str, tuple[str, ...]]:
    """`prefix_range`, narrowed further by a GLOB pattern on the whole key if one is given."""
    sql, params = prefix_range("key", prefix)
    if glob is None:
        return sql, params
    return f"{sql} AND key GLOB ?", (*params, glob)
