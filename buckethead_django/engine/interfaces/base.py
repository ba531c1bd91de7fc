"""Abstract base class for typed views on BucketHead state.

An Interface owns one or more SQLite tables (and optionally an R2 prefix) and
is constructed by `BucketSQLite.start()` after the snapshot is restored.
Schema bootstrap is idempotent so the tables exist whether or not they were
present in the restored snapshot.

First concrete implementation: `buckethead_django.engine.interfaces.kv.KVStore`.
Future examples (not implemented yet) include NumPy array storage and Pandas
DataFrame storage, both of which will also inherit from Interface.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ReadOnlyError
from ..objectstore import ObjectStore


class Interface(ABC):
    """Base class for typed interfaces attached to a BucketSQLite instance.

    Subclasses implement `_init_schema()` to create the tables they own
    using ``CREATE TABLE IF NOT EXISTS``. The base class calls it during
    construction so every subclass gets the schema up before its public
    methods are ever invoked.

    Reserved table-name convention: Interface subclasses should prefix
    their tables with ``bh_`` so user tables never collide. KVStore uses
    ``bh_kv``; future Interface subclasses should follow suit. (FileStore's
    ``filestore`` table predates this convention and is grandfathered in.)

    The connection should be in autocommit mode (``isolation_level=None``).
    One interface may be shared by many threads, but a sqlite3 connection must
    not run two statements at once: every statement goes through `_one`,
    `_all`, `_change` or `_transaction`, which serialise on one lock.
    """

    def __init__(self, conn: sqlite3.Connection, store: ObjectStore | None = None) -> None:
        self._conn = conn
        self._store = store
        self._lock = threading.RLock()
        #: When set, every write raises `ReadOnlyError` with this explanation.
        self.read_only_reason: str | None = None
        self._init_schema()

    @abstractmethod
    def _init_schema(self) -> None:
        """Create this interface's tables and indexes if they do not exist yet."""

    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _check_writable(self) -> None:
        """Raise `ReadOnlyError` if this interface is a read-only view."""
        if self.read_only_reason is not None:
            raise ReadOnlyError(self.read_only_reason)

    def refuse_writes(self, reason: str) -> None:
        """Make every later write raise `ReadOnlyError`; returns once writes already running have finished."""
        with self._lock:
            self.read_only_reason = reason

    def _change(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one data-changing statement; returns the number of rows it changed."""
        with self._lock:
            self._check_writable()  # under the lock: `refuse_writes` then waits for writes already running
            return self._conn.execute(sql, params).rowcount

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on this interface's connection, committed or rolled back whole."""
        with self._lock:
            self._check_writable()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _add_missing_columns(self, table: str, columns: dict[str, str]) -> None:
        """Upgrade a table restored from an older snapshot by adding columns it lacks.

        Idempotent and safe when several threads construct the same interface at once.
        """
        present = {row[1] for row in self._all(f"PRAGMA table_info({table})")}
        for name, decl in columns.items():
            if name in present:
                continue
            try:
                self._change(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError as exc:
                if "duplicate column name" not in str(exc):
                    raise


def prefix_range(column: str, prefix: str) -> tuple[str, tuple[str, ...]]:
    """A case-sensitive, index-friendly condition: ``column`` starts with ``prefix``, every character literal.

    A range (``column >= prefix AND column < successor``) rather than LIKE:
    LIKE is case-insensitive for ASCII and treats ``%`` and ``_`` as
    wildcards, and a range is answered from the column's index.
    """
    if not prefix:
        return "1", ()
    upper = _successor(prefix)
    if upper is None:
        return f"{column} >= ?", (prefix,)
    return f"{column} >= ? AND {column} < ?", (prefix, upper)


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
