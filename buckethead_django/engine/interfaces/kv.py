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
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable

from ..errors import ValueTooLarge
from ..objectstore import ObjectStore
from .base import Interface

DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class KVStore(Interface):
    """String (and bytes) key-value store in the ``bh_kv`` table."""

    TABLE = "bh_kv"

    def __init__(
        self,
        conn: sqlite3.Connection,
        store: ObjectStore | None = None,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
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
        if not isinstance(value, str):
            raise TypeError(f"KVStore.set() takes a str value, got {type(value).__name__}; use set_bytes() for bytes")
        self._write(key, value.encode("utf-8"), ttl)

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
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"KVStore.set_bytes() takes bytes, got {type(value).__name__}; use set() for str")
        self._write(key, bytes(value), ttl)

    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None:
        """The value of ``key`` as bytes, or ``default`` if it is missing or expired."""
        _check_key(key)
        row = self._one(f"SELECT value FROM bh_kv WHERE key = ? AND {_LIVE}", (key, self._clock()))
        return default if row is None else bytes(row[0])

    # -- keys ------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if a live value was there."""
        _check_key(key)
        with self._transaction() as conn:
            live = conn.execute(f"SELECT 1 FROM bh_kv WHERE key = ? AND {_LIVE}", (key, self._clock())).fetchone()
            conn.execute("DELETE FROM bh_kv WHERE key = ?", (key,))
        return live is not None

    def exists(self, key: str) -> bool:
        _check_key(key)
        row = self._one(f"SELECT 1 FROM bh_kv WHERE key = ? AND {_LIVE}", (key, self._clock()))
        return row is not None

    def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix``, sorted. Every character of the prefix is literal."""
        sql, params = _prefix_clause(prefix)
        rows = self._all(f"SELECT key FROM bh_kv WHERE {sql} AND {_LIVE} ORDER BY key", (*params, self._clock()))
        return [r[0] for r in rows]

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

    def purge_expired(self) -> int:
        """Delete the rows of expired keys; returns how many were removed."""
        return self._change("DELETE FROM bh_kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (self._clock(),))

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
        row = self._one(f"SELECT count(*) FROM bh_kv WHERE {_LIVE}", (self._clock(),))
        return int(row[0]) if row else 0

    # -- internals -------------------------------------------------------------

    def _write(self, key: str, value: bytes, ttl: float | None) -> None:
        _check_key(key)
        if len(value) > self.max_value_bytes:
            raise ValueTooLarge(
                f"the value for key {key!r} is {len(value)} bytes, over the KVStore limit of "
                f"{self.max_value_bytes} bytes; store large values with FileStore (files.put()) "
                "and keep the returned bh-key in KV instead"
            )
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}; use delete() to remove a key")
        now = self._clock()
        expires_at = None if ttl is None else now + ttl
        self._change(
            """
                INSERT INTO bh_kv (key, value, created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(key) DO UPDATE SET
                    value = excluded.value,
                    updated_at = excluded.updated_at,
                    expires_at = excluded.expires_at,
                    created_at = CASE WHEN bh_kv.expires_at IS NOT NULL AND bh_kv.expires_at <= excluded.updated_at
                                      THEN excluded.created_at ELSE bh_kv.created_at END
                """,
            (key, value, now, now, expires_at),
        )


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"KVStore keys are str, got {type(key).__name__}")


def _prefix_clause(prefix: str) -> tuple[str, tuple[str, ...]]:
    """A case-sensitive, index-friendly range condition matching keys that start with ``prefix``.

    A range (``key >= prefix AND key < successor``) rather than LIKE: LIKE is
    case-insensitive for ASCII and treats ``%`` and ``_`` as wildcards.
    """
    if not prefix:
        return "1", ()
    upper = _successor(prefix)
    if upper is None:
        return "key >= ?", (prefix,)
    return "key >= ? AND key < ?", (prefix, upper)


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (UTF-8 byte order)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= sys.maxunicode:
            return "".join(chars) + chr(code)
    return None
