"""The database image: captured consistently, and proved whole before it is loaded.

An image is a plain SQLite database file, as the PyPI ``buckethead`` 0.4.x
package writes it. It is only ever loaded after it has proved to be a whole,
valid SQLite database: a damaged object raises `SnapshotCorrupt` naming it,
and never turns into an empty database. Where images live in the bucket is
`history`'s business.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .errors import SnapshotCorrupt

SQLITE_HEADER = b"SQLite format 3\x00"
CONTENT_TYPE = "application/vnd.sqlite3"


@dataclass(frozen=True)
class Capture:
    """A point-in-time image of the database and the version it reflects."""

    data: bytes
    data_version: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def page_size_of(path: Path) -> int:
    """The page size a SQLite file's header gives (0 when it is no SQLite file)."""
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        return 0
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def validate(path: Path, key: str) -> None:
    """Raise `SnapshotCorrupt` unless ``path`` holds a whole SQLite database that passes integrity_check."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(100)
    if size == 0:
        raise SnapshotCorrupt(key, "the object is empty (0 bytes)")
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise SnapshotCorrupt(key, "it does not start with the SQLite file header")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    if page_size < 512 or size % page_size != 0:
        raise SnapshotCorrupt(key, f"its size ({size} bytes) is not a whole number of {page_size}-byte pages")
    if page_count and page_count * page_size > size:
        raise SnapshotCorrupt(
            key, f"it is truncated: the header promises {page_count * page_size} bytes, the object has {size}"
        )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SnapshotCorrupt(key, f"SQLite cannot open it: {exc}") from None
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as exc:
        raise SnapshotCorrupt(key, f"SQLite cannot read it: {exc}") from None
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    if rows != ["ok"]:
        raise SnapshotCorrupt(key, "integrity_check failed: " + "; ".join(rows[:5]))
