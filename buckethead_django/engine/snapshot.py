"""Snapshots: a consistent copy of the in-memory database, uploaded and restored.

The format is the one the PyPI ``buckethead`` 0.4.x package writes — a plain
SQLite database file at one object key, the copy it replaced at ``<key>.prev``
— so buckets move freely between the two. A snapshot is only ever loaded after
it has proved to be a whole, valid SQLite database: a damaged object raises
`SnapshotCorrupt` naming it, and never turns into an empty database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import SnapshotCorrupt
from .objectstore import ObjectInfo, ObjectStore, Progress, iter_objects

SQLITE_HEADER = b"SQLite format 3\x00"
CONTENT_TYPE = "application/vnd.sqlite3"
PREVIOUS_SUFFIX = ".prev"


@dataclass(frozen=True)
class Capture:
    """A point-in-time image of the database and the version it reflects."""

    data: bytes
    data_version: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def capture(conn: sqlite3.Connection) -> Capture:
    """Copy the whole database inside one read transaction.

    Holding the read lock for the copy means no commit can land halfway
    through, so the image is consistent even while other threads write; the
    ``data_version`` read in the same transaction says exactly which commits
    it includes. ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        data = conn.serialize()
    finally:
        conn.execute("COMMIT")
    return Capture(data=data, data_version=version)


def upload(
    store: ObjectStore, key: str, image: Capture, *, keep_previous: bool, progress: Progress | None = None
) -> ObjectInfo:
    """Write ``image`` at ``key``, first keeping the snapshot it replaces at ``<key>.prev``."""
    if keep_previous and store.head(key) is not None:
        store.copy(key, key + PREVIOUS_SUFFIX)
    return store.put(key, image.data, content_type=CONTENT_TYPE, metadata={"sha256": image.sha256}, progress=progress)


def restore(store: ObjectStore, key: str, into: sqlite3.Connection) -> ObjectInfo | None:
    """Load the snapshot at ``key`` into the (empty) database behind ``into``.

    Returns the object's info, or None when there is no snapshot yet. The
    object is downloaded to a temporary file and validated there before a
    single page reaches ``into``.
    """
    if store.head(key) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="buckethead-restore-") as tmp:
        path = Path(tmp) / "snapshot.db"
        info = store.get_to(key, path)
        validate(path, key)
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            src.backup(into)
        finally:
            src.close()
    return info


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


# -- the catalogue of restorable snapshots ----------------------------------------------

LABEL_INFIX = ".label."
LATEST, PREVIOUS = "latest", "previous"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class SnapshotEntry:
    """One restorable snapshot: ``latest``, ``previous`` (``<key>.prev``) or a label (``<key>.label.<name>``)."""

    name: str
    kind: str
    key: str
    size: int
    last_modified: dt.datetime
    etag: str


def label_key(key: str, label: str) -> str:
    """The object key of the snapshot labelled ``label``."""
    return key + LABEL_INFIX + validate_label(label)


def validate_label(label: str) -> str:
    """``label`` if it can name a snapshot: letters, digits, '.', '_' and '-', at most 100, not a reserved name."""
    if not isinstance(label, str) or not _LABEL.match(label) or label in (LATEST, PREVIOUS):
        raise ValueError(
            f"snapshot label {label!r} is not valid: use 1 to 100 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit, and not {LATEST!r} or {PREVIOUS!r}"
        )
    return label


def timestamped_label(prefix: str) -> str:
    """``<prefix>-<UTC time>``, e.g. ``pre-restore-20261127T230437Z``: a label that sorts by time."""
    return validate_label(f"{prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")


def replace_latest(store: ObjectStore, key: str, path: Path) -> SnapshotEntry:
    """Put the valid SQLite file ``path`` in place of a latest snapshot that no engine can load.

    No engine can start on a damaged latest snapshot, so none can restore
    over it in place: this writes the file as a flush would, after keeping
    the damaged object as ``damaged-<UTC time>`` (returned). ``previous`` is
    left as it is.
    """
    validate(path, str(path))
    kept = copy_to_label(store, key, timestamped_label("damaged"))
    upload(store, key, Capture(path.read_bytes(), data_version=0), keep_previous=False)
    return kept


def list_snapshots(store: ObjectStore, key: str) -> list[SnapshotEntry]:
    """Every restorable snapshot: the latest, the previous one, then labelled ones, newest first."""
    entries = []
    for name, kind, object_key in ((LATEST, LATEST, key), (PREVIOUS, PREVIOUS, key + PREVIOUS_SUFFIX)):
        info = store.head(object_key)
        if info is not None:
            entries.append(_entry(name, kind, info))
    labelled = [
        _entry(info.key[len(key) + len(LABEL_INFIX) :], "labelled", info)
        for info in iter_objects(store, key + LABEL_INFIX)
    ]
    return entries + sorted(labelled, key=lambda e: e.last_modified, reverse=True)


def find_snapshot(store: ObjectStore, key: str, name: str) -> SnapshotEntry:
    """The snapshot called ``name`` (``latest``, ``previous`` or a label); KeyError if there is none."""
    if name == LATEST:
        object_key, kind = key, LATEST
    elif name == PREVIOUS:
        object_key, kind = key + PREVIOUS_SUFFIX, PREVIOUS
    else:
        try:
            object_key, kind = label_key(key, name), "labelled"
        except ValueError:
            raise KeyError(name) from None
    info = store.head(object_key)
    if info is None:
        raise KeyError(name)
    return _entry(name, kind, info)


def copy_to_label(store: ObjectStore, key: str, label: str) -> SnapshotEntry:
    """Keep the latest durable snapshot under ``label`` (a server-side copy); KeyError if there is none yet."""
    target = label_key(key, label)
    if store.head(key) is None:
        raise KeyError(LATEST)
    return _entry(label, "labelled", store.copy(key, target))


def write_label(store: ObjectStore, key: str, label: str, image: Capture) -> SnapshotEntry:
    """Store ``image`` as the snapshot labelled ``label``."""
    info = store.put(label_key(key, label), image.data, content_type=CONTENT_TYPE, metadata={"sha256": image.sha256})
    return _entry(label, "labelled", info)


def download(store: ObjectStore, object_key: str, dest: Path, *, progress: Progress | None = None) -> ObjectInfo:
    """Download a snapshot to ``dest`` and validate it there; nothing is left at ``dest`` if it is not valid."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    try:
        info = store.get_to(object_key, part, progress=progress)
        validate(part, object_key)
        part.replace(dest)
        return info
    finally:
        part.unlink(missing_ok=True)


def _entry(name: str, kind: str, info: ObjectInfo) -> SnapshotEntry:
    return SnapshotEntry(
        name=name, kind=kind, key=info.key, size=info.size, last_modified=info.last_modified, etag=info.etag
    )
