"""FileStore: content-addressed blobs in the bucket, described in SQLite.

A blob's name — its *bh-key* — is the SHA-256 hex digest of its content, and
it is stored once at ``<files_prefix><bh-key>`` however many times it is put.
The ``filestore`` table (name and columns as in buckethead 0.4.x) records
each blob's size, MIME type, original filename, creation time and free-form
metadata. Content is streamed in both directions: a large file is never held
whole in memory.

Names (the paths a Django storage hands out) live in ``bh_file_names``: each
name points at one bh-key, many names may share one, and a blob is deleted
with the last name that refers to it. Writes and deletions of one blob are
serialised by a per-blob lock, so a blob being deleted is never reused by a
concurrent save without being uploaded again.

Blob objects are uploaded at once, while their rows live in the in-memory
database until the next snapshot; `gc` therefore only deletes unreferenced
objects older than a grace window. Deleting works the other way round: the
rows go at once, the object only after a snapshot without those rows is in
the bucket (`pending_deletions` / `delete_unreferenced`, driven by
`BucketSQLite`), so a crash in between never restores a row whose blob is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import mimetypes
import posixpath
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..config import DEFAULT_GC_GRACE_SECONDS
from ..errors import BucketHeadError, PreconditionFailed
from ..objectstore import ObjectStore, Progress, Source, iter_objects
from ..objectstore.base import copy_stream, sha256_file
from .base import Interface, prefix_range

DEFAULT_MIME = "application/octet-stream"
_BH_KEY = re.compile(r"^[0-9a-f]{64}$")
_COLUMNS = "bh_key, object_key, size, mime, filename, created_at, metadata"
_NAME_COLUMNS = "n.name, n.bh_key, n.size, n.content_type, n.created_at, n.modified_at, f.object_key"
_NAMES_FROM = "bh_file_names AS n LEFT JOIN filestore AS f ON f.bh_key = n.bh_key"
#: Blob locks are striped: a fixed set shared by hash, so memory stays constant however many blobs pass through.
_BLOB_LOCK_STRIPES = 64


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


@dataclass(frozen=True)
class NamedFile:
    """One row of ``bh_file_names``: a name, the blob it stands for, and the blob's bucket key."""

    name: str
    bh_key: str
    size: int
    content_type: str | None
    created_at: float
    modified_at: float
    object_key: str


class BlobSizeMismatch(BucketHeadError):
    """A downloaded blob is not the size its row records."""


class NameTaken(BucketHeadError, FileExistsError):
    """A name is already in use and the caller did not ask to replace it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the file name {name!r} is already in use; pass overwrite=True to replace it")
        self.name = name


class InvalidName(BucketHeadError, ValueError):
    """A file name that cannot be stored: not a relative, '/'-separated path."""


class FileStore(Interface):
    """Content-addressed file storage: blobs in the bucket, rows in ``filestore``, names in ``bh_file_names``."""

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
        self._blob_locks = tuple(threading.RLock() for _ in range(_BLOB_LOCK_STRIPES))
        self._doomed: list[str] = []
        self._doomed_lock = threading.Lock()
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
        self._change(
            """
            CREATE TABLE IF NOT EXISTS bh_file_names (
                name          TEXT PRIMARY KEY,
                bh_key        TEXT NOT NULL,
                size          INTEGER NOT NULL,
                content_type  TEXT,
                created_at    REAL NOT NULL,
                modified_at   REAL NOT NULL
            )
            """
        )
        self._change("CREATE INDEX IF NOT EXISTS idx_bh_file_names_bh_key ON bh_file_names(bh_key)")

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
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Store content from bytes, a path or a binary stream; returns its bh-key.

        Content already stored is not uploaded again. Streams are spooled to a
        temporary file while hashed, so memory use stays bounded. ``extra``
        (S3 upload parameters such as ``CacheControl``) applies to the upload
        only: a blob that is already stored keeps the parameters it was first
        uploaded with.
        """
        self._check_writable()
        if isinstance(src, Path) and filename is None:
            filename = src.name
        mime = mime or _guess_mime(filename)
        with _hashed(src) as (bh_key, size, content), self._blob_lock(bh_key):
            self._store_blob(bh_key, size, content, filename=filename, mime=mime, metadata=metadata, extra=extra)
        return bh_key

    def _store_blob(
        self,
        bh_key: str,
        size: int,
        content: Source,
        *,
        filename: str | None,
        mime: str,
        metadata: dict[str, Any] | None,
        extra: Mapping[str, Any] | None,
    ) -> bool:
        """Upload the blob unless it is stored, and record its row; True if the row is new.

        The caller holds the blob's lock, so no deletion of the same blob runs in between.
        """
        if self.head(bh_key) is not None:
            return False
        object_key = self.object_key(bh_key)
        existing = self._objects.head(object_key)
        if existing is None or existing.size != size:
            # PreconditionFailed: another writer stored the same content first.
            with contextlib.suppress(PreconditionFailed):
                self._objects.put(object_key, content, content_type=mime, if_none_match=existing is None, extra=extra)
        return (
            self._change(
                f"INSERT OR IGNORE INTO filestore ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bh_key, object_key, size, mime, filename, self._clock(), json.dumps(metadata) if metadata else None),
            )
            > 0
        )

    def delete(self, bh_key: str) -> bool:
        """Remove the blob, its row and every name that refers to it; True if the row existed.

        This is the bh-key level operation ("this content must go"). Use
        `delete_name` to remove one named file while other names keep the blob.
        The object itself is deleted once the next snapshot is in the bucket.
        """
        self._check_writable()
        with self._blob_lock(bh_key), self._transaction() as conn:
            row = conn.execute("SELECT object_key FROM filestore WHERE bh_key = ?", (bh_key,)).fetchone()
            conn.execute("DELETE FROM bh_file_names WHERE bh_key = ?", (bh_key,))
            conn.execute("DELETE FROM filestore WHERE bh_key = ?", (bh_key,))
            self._doom(row[0] if row else self.object_key(bh_key))
        return row is not None

    def _doom(self, object_key: str) -> None:
        """Schedule ``object_key`` for deletion once a snapshot without its row is in the bucket."""
        with self._doomed_lock:
            self._doomed.append(object_key)

    def pending_deletions(self) -> list[str]:
        """Blob objects whose rows are gone, waiting for a snapshot that records it."""
        with self._doomed_lock:
            return list(self._doomed)

    def delete_unreferenced(self, object_keys: list[str]) -> list[str]:
        """Delete these blob objects, except any that a row refers to again; returns those deleted.

        Call it only once a snapshot taken after `pending_deletions` returned
        ``object_keys`` is in the bucket. An object whose delete fails stays
        pending and is tried again after the next snapshot.
        """
        deleted: list[str] = []
        for object_key in object_keys:
            bh_key = object_key.removeprefix(self.prefix)
            lock = self._blob_lock(bh_key) if _BH_KEY.match(bh_key) else contextlib.nullcontext()
            with lock:
                if self._one("SELECT 1 FROM filestore WHERE object_key = ?", (object_key,)) is None:
                    self._objects.delete(object_key)
                    deleted.append(object_key)
                with self._doomed_lock:
                    self._doomed.remove(object_key)
        return deleted

    def _blob_lock(self, bh_key: str) -> contextlib.AbstractContextManager[bool]:
        """The lock that serialises storing and deleting the blob ``bh_key``."""
        return self._blob_locks[int(_checked(bh_key)[:8], 16) % _BLOB_LOCK_STRIPES]

    # -- names -------------------------------------------------------------------

    def save_name(
        self,
        name: str,
        src: Source,
        *,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> NamedFile:
        """Store content under ``name``; identical content under other names is stored once.

        An existing name raises `NameTaken` unless ``overwrite`` is true. The
        check runs before anything is read or uploaded, and again atomically
        when the name is recorded, so two concurrent saves cannot both win.
        Replacing a name deletes its previous blob when no other name uses it.
        ``content_type`` defaults to a guess from the name.
        """
        self._check_writable()
        name = validate_name(name)
        if not overwrite and self.name_exists(name):
            raise NameTaken(name)
        filename = posixpath.basename(name)
        mime = content_type or _guess_mime(filename)
        with _hashed(src) as (bh_key, size, content), self._blob_lock(bh_key):
            created = self._store_blob(
                bh_key, size, content, filename=filename, mime=mime, metadata=metadata, extra=extra
            )
            try:
                named, replaced = self._link(name, bh_key, size, mime, overwrite=overwrite)
            except NameTaken:
                if created:
                    self._collect(bh_key)
                raise
        if replaced is not None and replaced != bh_key:
            self._collect(replaced)
        return named

    def _link(
        self, name: str, bh_key: str, size: int, content_type: str, *, overwrite: bool
    ) -> tuple[NamedFile, str | None]:
        """Point ``name`` at a stored blob; returns the new row and the bh-key it replaced, if any."""
        now = self._clock()
        with self._transaction() as conn:
            old = conn.execute("SELECT bh_key, created_at FROM bh_file_names WHERE name = ?", (name,)).fetchone()
            if old is not None and not overwrite:
                raise NameTaken(name)
            (object_key,) = conn.execute("SELECT object_key FROM filestore WHERE bh_key = ?", (bh_key,)).fetchone()
            created_at = float(old[1]) if old else now
            conn.execute(
                "INSERT OR REPLACE INTO bh_file_names (name, bh_key, size, content_type, created_at, modified_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, bh_key, size, content_type, created_at, now),
            )
        named = NamedFile(name, bh_key, size, content_type, created_at, now, object_key)
        return named, (old[0] if old else None)

    def resolve(self, name: str) -> NamedFile | None:
        """The row for ``name``, or None."""
        row = self._one(f"SELECT {_NAME_COLUMNS} FROM {_NAMES_FROM} WHERE n.name = ?", (validate_name(name),))
        return None if row is None else self._named(row)

    def name_exists(self, name: str) -> bool:
        return self._one("SELECT 1 FROM bh_file_names WHERE name = ?", (validate_name(name),)) is not None

    def delete_name(self, name: str) -> bool:
        """Remove ``name``; its blob goes too when no other name uses it. True if the name existed."""
        name = validate_name(name)
        with self._transaction() as conn:
            row = conn.execute("SELECT bh_key FROM bh_file_names WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM bh_file_names WHERE name = ?", (name,))
        self._collect(row[0])
        return True

    def _collect(self, bh_key: str) -> bool:
        """Delete the blob and its row if no name refers to it; True if it was deleted.

        The decision and the row's removal are one transaction, and the blob's
        lock keeps a concurrent save of the same content out until the object
        is recorded. The object itself is deleted after the next snapshot (see
        `delete_unreferenced`), and not at all if the content is saved again first.
        """
        with self._blob_lock(bh_key), self._transaction() as conn:
            if conn.execute("SELECT 1 FROM bh_file_names WHERE bh_key = ? LIMIT 1", (bh_key,)).fetchone():
                return False
            row = conn.execute("SELECT object_key FROM filestore WHERE bh_key = ?", (bh_key,)).fetchone()
            conn.execute("DELETE FROM filestore WHERE bh_key = ?", (bh_key,))
            self._doom(row[0] if row else self.object_key(bh_key))
        return True

    def list_names(self, prefix: str = "") -> list[NamedFile]:
        """Rows whose name starts with ``prefix`` (every character literal), sorted by name."""
        where, params = prefix_range("n.name", prefix)
        rows = self._all(f"SELECT {_NAME_COLUMNS} FROM {_NAMES_FROM} WHERE {where} ORDER BY n.name", params)
        return [self._named(r) for r in rows]

    def listdir(self, directory: str = "") -> tuple[list[str], list[str]]:
        """The subdirectories and the names directly inside ``directory`` ('' is the top), each sorted.

        Directories are implied by names, as in a bucket: ``a/b.txt`` makes
        ``a`` a directory until the last name under it is deleted.
        """
        directory = directory.rstrip("/")
        prefix = validate_name(directory) + "/" if directory else ""
        where, params = prefix_range("n.name", prefix)
        dirs: set[str] = set()
        names: list[str] = []
        for (name,) in self._all(f"SELECT n.name FROM bh_file_names AS n WHERE {where} ORDER BY n.name", params):
            head, sep, _ = name[len(prefix) :].partition("/")
            if sep:
                dirs.add(head)
            else:
                names.append(head)
        return sorted(dirs), names

    def _named(self, row: tuple[Any, ...]) -> NamedFile:
        name, bh_key, size, content_type, created_at, modified_at, object_key = row
        object_key = object_key or self.prefix + bh_key
        return NamedFile(name, bh_key, int(size), content_type, float(created_at), float(modified_at), object_key)

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

    def get(
        self, bh_key: str, dest: Path | BinaryIO | None = None, *, progress: Progress | None = None
    ) -> bytes | Path | None:
        """The blob's content: as bytes (no ``dest``), written to a path, or copied into a stream.

        The size received is checked against the recorded size; a mismatch
        raises `BlobSizeMismatch` (and leaves no partial file at ``dest``).
        ``progress`` is called with the bytes received as a download to
        ``dest`` goes on.
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
                self._objects.get_to(object_key, part, progress=progress)
                _check_size(bh_key, expected, part.stat().st_size)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(part, dest)
            return dest
        counter = _CountingWriter(dest)
        self._objects.get_to(object_key, counter, progress=progress)  # type: ignore[arg-type]
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

    def gc(self, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS, *, dry_run: bool = False) -> GcReport:
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


def validate_name(name: str) -> str:
    """``name`` if it is a storable file name, else raise `InvalidName`.

    A name is a relative, '/'-separated path without empty, '.' or '..' parts
    and without NUL: the rules every object store and file system accepts, so
    a name can never be read as a path outside the store.
    """
    if not isinstance(name, str) or not name:
        raise InvalidName(f"file name {name!r} must be a non-empty str")
    if "\x00" in name or name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidName(f"file name {name!r} is not a relative '/'-separated path without empty, '.' or '..' parts")
    return name


def _guess_mime(filename: str | None) -> str:
    return (mimetypes.guess_type(filename)[0] if filename else None) or DEFAULT_MIME


@contextlib.contextmanager
def _hashed(src: Source) -> Iterator[tuple[str, int, Source]]:
    """The bh-key, size and re-readable content of ``src``; a stream is spooled to a temporary file."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        yield hashlib.sha256(data).hexdigest(), len(data), data
    elif isinstance(src, Path):
        yield (*sha256_file(src), src)
    else:
        with tempfile.TemporaryFile(prefix="buckethead-put-") as spool:
            digest = hashlib.sha256()
            size = copy_stream(src, spool, digests=(digest,))
            spool.seek(0)
            yield digest.hexdigest(), size, spool  # type: ignore[misc]


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


class _CountingWriter:
    """Pass writes through to a stream while counting bytes."""

    def __init__(self, dest: BinaryIO) -> None:
        self._dest = dest
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return self._dest.write(data)
