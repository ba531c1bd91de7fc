"""FileStore: content-addressed blobs in the bucket, described in SQLite.

A blob's name — its *bh-key* — is the SHA-256 hex digest of its content, and
it is stored once at ``<files_prefix><bh-key>`` however many times it is put.
The ``filestore`` table (name and columns as in buckethead 0.4.x) records
each blob's size, MIME type, original filename, creation time and free-form
metadata. Content is streamed in both directions: a large file is never held
whole in memory.

Blob objects are uploaded at once, while their rows live in the in-memory
database until the next snapshot; `gc` therefore only deletes unreferenced
objects older than a grace window.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import mimetypes
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BucketHeadError, PreconditionFailed
from ..objectstore import ObjectStore, Source, iter_objects
from ..objectstore.base import COPY_CHUNK, copy_stream
from .base import Interface

DEFAULT_MIME = "application/octet-stream"
_BH_KEY = re.compile(r"^[0-9a-f]{64}$")
_COLUMNS = "bh_key, object_key, size, mime, filename, created_at, metadata"


@dataclass(frozen=True)
class FileInfo:
    """One row of the ``filestore`` table."""

    bh_key: str
    object_key: str
    size: int
    mime: str | None
    filename: str | None
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> FileInfo:
        bh_key, object_key, size, mime, filename, created_at, metadata = row
        return cls(bh_key, object_key, int(size), mime, filename, float(created_at), json.loads(metadata or "{}"))


@dataclass(frozen=True)
class GcReport:
    """What `FileStore.gc` did: objects deleted, recent orphans kept, rows whose object is gone."""

    deleted: list[str]
    kept_recent: list[str]
    missing_objects: list[str]


class BlobSizeMismatch(BucketHeadError):
    """A downloaded blob is not the size its row records."""


class FileStore(Interface):
    """Content-addressed file storage: blobs in the bucket, rows in ``filestore``."""

    TABLE = "filestore"

    def __init__(
        self,
        conn: sqlite3.Connection,
        store: ObjectStore | None = None,
        *,
        prefix: str = "files/",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is None:
            raise TypeError("FileStore needs the object store its blobs live in")
        self.prefix = prefix
        self._clock = clock
        self._objects: ObjectStore = store
        super().__init__(conn, store)

    def _init_schema(self) -> None:
        self._change(
            """
            CREATE TABLE IF NOT EXISTS filestore (
                bh_key       TEXT PRIMARY KEY,
                object_key   TEXT NOT NULL,
                size         INTEGER NOT NULL,
                mime         TEXT,
                filename     TEXT,
                created_at   REAL NOT NULL,
                metadata     TEXT
            )
            """
        )
        self._change("CREATE INDEX IF NOT EXISTS idx_filestore_created ON filestore(created_at)")

    def object_key(self, bh_key: str) -> str:
        """The bucket key of the blob named ``bh_key``."""
        return self.prefix + _checked(bh_key)

    # -- writing -----------------------------------------------------------------

    def put(
        self,
        src: Source,
        *,
        filename: str | None = None,
        mime: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Store content from bytes, a path or a binary stream; returns its bh-key.

        Content already stored is not uploaded again. Streams are spooled to a
        temporary file while hashed, so memory use stays bounded.
        """
        self._check_writable()
        if isinstance(src, Path) and filename is None:
            filename = src.name
        mime = mime or (mimetypes.guess_type(filename)[0] if filename else None) or DEFAULT_MIME
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            return self._save(
                hashlib.sha256(data).hexdigest(), len(data), data, filename=filename, mime=mime, metadata=metadata
            )
        if isinstance(src, Path):
            bh_key, size = _hash_file(src)
            return self._save(bh_key, size, src, filename=filename, mime=mime, metadata=metadata)
        with tempfile.TemporaryFile(prefix="buckethead-put-") as spool:
            digest = hashlib.sha256()
            size = copy_stream(src, spool, digests=(digest,))
            spool.seek(0)
            return self._save(digest.hexdigest(), size, spool, filename=filename, mime=mime, metadata=metadata)  # type: ignore[arg-type]

    def _save(
        self,
        bh_key: str,
        size: int,
        content: Source,
        *,
        filename: str | None,
        mime: str,
        metadata: dict[str, Any] | None,
    ) -> str:
        if self.head(bh_key) is None:
            object_key = self.object_key(bh_key)
            existing = self._objects.head(object_key)
            if existing is None or existing.size != size:
                # PreconditionFailed: another writer stored the same content first.
                with contextlib.suppress(PreconditionFailed):
                    self._objects.put(object_key, content, content_type=mime, if_none_match=existing is None)
            self._change(
                f"INSERT OR IGNORE INTO filestore ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bh_key, object_key, size, mime, filename, self._clock(), json.dumps(metadata) if metadata else None),
            )
        return bh_key

    def delete(self, bh_key: str) -> bool:
        """Remove the blob and its row; True if the row existed."""
        self._check_writable()
        info = self.head(bh_key)
        self._objects.delete(info.object_key if info else self.object_key(bh_key))
        return self._change("DELETE FROM filestore WHERE bh_key = ?", (bh_key,)) > 0

    # -- reading -----------------------------------------------------------------

    def head(self, bh_key: str) -> FileInfo | None:
        """The row for ``bh_key``, or None."""
        row = self._one(f"SELECT {_COLUMNS} FROM filestore WHERE bh_key = ?", (bh_key,))
        return None if row is None else FileInfo.from_row(row)

    def metadata(self, bh_key: str) -> dict[str, Any]:
        """The free-form metadata stored with ``bh_key``. KeyError if unknown."""
        info = self.head(bh_key)
        if info is None:
            raise KeyError(bh_key)
        return info.metadata

    def exists(self, bh_key: str) -> bool:
        return self.head(bh_key) is not None

    def get(self, bh_key: str, dest: Path | BinaryIO | None = None) -> bytes | Path | None:
        """The blob's content: as bytes (no ``dest``), written to a path, or copied into a stream.

        The size received is checked against the recorded size; a mismatch
        raises `BlobSizeMismatch` (and leaves no partial file at ``dest``).
        """
        info = self.head(bh_key)
        object_key = info.object_key if info else self.object_key(bh_key)
        expected = info.size if info else None
        if dest is None:
            data = self._objects.get(object_key)
            _check_size(bh_key, expected, len(data))
            return data
        if isinstance(dest, Path):
            with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as tmp:
                part = Path(tmp) / "blob"
                self._objects.get_to(object_key, part)
                _check_size(bh_key, expected, part.stat().st_size)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(part, dest)
            return dest
        counter = _CountingWriter(dest)
        self._objects.get_to(object_key, counter)  # type: ignore[arg-type]
        _check_size(bh_key, expected, counter.count)
        return None

    def open(self, bh_key: str) -> BinaryIO:
        """A readable stream of the blob, straight from the bucket."""
        info = self.head(bh_key)
        return self._objects.open(info.object_key if info else self.object_key(bh_key))

    def list(self, limit: int = 100, offset: int = 0) -> list[FileInfo]:
        """Rows newest first, ``limit`` at a time from ``offset``."""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM filestore ORDER BY created_at DESC, bh_key LIMIT ? OFFSET ?", (limit, offset)
        )
        return [FileInfo.from_row(r) for r in rows]

    def __len__(self) -> int:
        row = self._one("SELECT count(*) FROM filestore")
        return int(row[0]) if row else 0

    # -- maintenance -------------------------------------------------------------

    def gc(self, grace_seconds: float = 3600.0, *, dry_run: bool = False) -> GcReport:
        """Delete blob objects no row refers to, once older than ``grace_seconds``.

        The grace window protects blobs whose row was written after the
        snapshot this process (or another) restored. Rows whose object is
        missing are reported, not deleted: they need a human decision.
        """
        if not dry_run:
            self._check_writable()
        referenced = {r[0] for r in self._all("SELECT object_key FROM filestore")}
        cutoff = dt.datetime.fromtimestamp(self._clock() - grace_seconds, tz=dt.UTC)
        deleted: list[str] = []
        kept: list[str] = []
        present: set[str] = set()
        for obj in iter_objects(self._objects, self.prefix):
            present.add(obj.key)
            if obj.key in referenced or not _BH_KEY.match(obj.key[len(self.prefix) :]):
                continue
            if obj.last_modified > cutoff:
                kept.append(obj.key)
                continue
            if not dry_run:
                self._objects.delete(obj.key)
            deleted.append(obj.key)
        missing = sorted(referenced - present)
        return GcReport(deleted=deleted, kept_recent=kept, missing_objects=missing)


def _checked(bh_key: str) -> str:
    if not _BH_KEY.match(bh_key):
        raise ValueError(f"{bh_key!r} is not a bh-key (64 lowercase hex characters of a SHA-256)")
    return bh_key


def _check_size(bh_key: str, expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise BlobSizeMismatch(
            f"blob {bh_key} is {actual} bytes in the bucket but its row records {expected}; "
            "the object was changed or truncated outside BucketHead"
        )


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class _CountingWriter:
    """Pass writes through to a stream while counting bytes."""

    def __init__(self, dest: BinaryIO) -> None:
        self._dest = dest
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return self._dest.write(data)
