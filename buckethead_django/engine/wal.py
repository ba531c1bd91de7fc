"""The pages each commit changed, read from SQLite's write-ahead log: what a delta ships.

In WAL mode every commit appends the pages it changed to ``<db>-wal`` as
frames; the WAL-index (``<db>-shm``, shared memory every connection maps)
says how many frames are committed (``mxFrame``) and how many pages the
database has after the last commit (``nPage``). Both formats are SQLite's
documented, stable file formats (https://www.sqlite.org/walformat.html and
https://www.sqlite.org/fileformat2.html#walformat).

A `WalPosition` says how far the WAL has been read: the WAL's salts (they
change when a writer restarts the WAL from its start, after a complete
checkpoint) and a frame count. `read_changes` returns the latest version of
every page committed after a position. Only frames the WAL-index counts as
committed are read, so a transaction still being written is never seen
half-way; the frames read are checked to belong to the WAL the index
describes, and the read is repeated if a restart raced it.

Frames stay in the WAL until a writer restarts it, which SQLite only does
once every frame is checkpointed and no reader uses the WAL. The replicator
holds a read transaction open while it ships (see `replicator`), so a WAL it
has not read yet is never restarted under it.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
WAL_MAGICS = (0x377F0682, 0x377F0683)
#: The WAL-index header is written twice, one copy after the other; a reader trusts it when both agree.
INDEX_HEADER_BYTES = 48
#: Attempts at a consistent read while a writer changes the WAL-index or restarts the WAL.
READ_ATTEMPTS = 100


class WalError(Exception):
    """The WAL or its index could not be read consistently (a writer kept changing it)."""


@dataclass(frozen=True)
class WalPosition:
    """How far the WAL has been read: its salts (b"" when there is no WAL) and the committed frames read."""

    salts: bytes = b""
    frame: int = 0

    def to_json(self) -> dict[str, object]:
        return {"salts": self.salts.hex(), "frame": self.frame}

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> WalPosition:
        return cls(salts=bytes.fromhex(str(raw["salts"])), frame=int(raw["frame"]))  # type: ignore[call-overload]


@dataclass(frozen=True)
class WalChanges:
    """What was committed after a position: the latest version of each changed page, and where the read ended."""

    pages: dict[int, bytes]
    #: The database's size in pages after the last commit read (0: nothing was committed, size unknown).
    db_pages: int
    page_size: int
    end: WalPosition
    #: True when the WAL was restarted since the position: frames of the old WAL after it cannot be read any more.
    restarted: bool

    @property
    def bytes(self) -> int:
        return len(self.pages) * self.page_size


@dataclass(frozen=True)
class _Index:
    salts: bytes
    max_frame: int
    db_pages: int


def wal_path(database: Path) -> Path:
    return Path(f"{database}-wal")


def current_position(database: Path) -> WalPosition:
    """Where the WAL of ``database`` ends now (all committed frames)."""
    index = _read_index(database)
    return WalPosition() if index is None else WalPosition(index.salts, index.max_frame)


def read_changes(database: Path, after: WalPosition) -> WalChanges:
    """The pages committed to ``database``'s WAL after ``after``, newest version of each.

    When the WAL's salts differ from ``after``'s, it was restarted (or
    created) since: every committed frame of the new WAL is read, and
    ``restarted`` tells the caller, which alone knows whether the old WAL's
    tail had been read before.
    """
    for _ in range(READ_ATTEMPTS):
        index = _read_index(database)
        if index is None or index.max_frame == 0:
            salts = index.salts if index is not None else after.salts
            restarted = salts != after.salts and after.frame > 0
            return WalChanges({}, 0, 0, WalPosition(salts, 0), restarted=restarted)
        restarted = index.salts != after.salts
        start = 0 if restarted else after.frame
        if start > index.max_frame:
            raise WalError(
                f"the WAL of {database} holds {index.max_frame} committed frames, fewer than the {start} already read"
            )
        changes = _read_frames(database, index, start)
        if changes is not None:
            return WalChanges(
                changes[0], index.db_pages, changes[1], WalPosition(index.salts, index.max_frame), restarted
            )
        time.sleep(0.001)  # the WAL was restarted while it was read: read the new one
    raise WalError(f"the WAL of {database} kept changing while it was read")


def _read_frames(database: Path, index: _Index, start: int) -> tuple[dict[int, bytes], int] | None:
    """Frames ``start + 1`` to ``index.max_frame``; None when they no longer belong to the WAL ``index`` describes."""
    try:
        fd = os.open(wal_path(database), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        header = os.pread(fd, WAL_HEADER_BYTES, 0)
        if len(header) < WAL_HEADER_BYTES or header[16:24] != index.salts:
            return None
        magic, _version, page_size = struct.unpack(">III", header[:12])
        if magic not in WAL_MAGICS:
            return None
        frame_bytes = FRAME_HEADER_BYTES + page_size
        pages: dict[int, bytes] = {}
        for frame in range(start, index.max_frame):
            data = os.pread(fd, frame_bytes, WAL_HEADER_BYTES + frame * frame_bytes)
            if len(data) < frame_bytes or data[8:16] != index.salts:
                return None
            pages[struct.unpack(">I", data[:4])[0]] = data[FRAME_HEADER_BYTES:]
        return pages, page_size
    finally:
        os.close(fd)


#: Descriptors of WAL-index files this process reads, by path: (descriptor, inode). Never closed while the
#: file is in use: closing any descriptor of a file drops every POSIX lock this process holds on it, SQLite's
#: own included, and another process would then take the WAL-index for unused and reset it under us.
_index_files: dict[str, tuple[int, int]] = {}
_index_files_lock = threading.Lock()


def _index_fd(database: Path) -> int | None:
    """A descriptor of ``database``'s WAL-index file, opened once per file (see `_index_files`)."""
    path = f"{database}-shm"
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return None
    with _index_files_lock:
        known = _index_files.get(path)
        if known is not None and known[1] == inode:
            return known[0]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if known is not None:
            os.close(known[0])  # a file since replaced: no lock of SQLite's is on that one any more
        _index_files[path] = (fd, os.fstat(fd).st_ino)
        return fd


def _read_index(database: Path) -> _Index | None:
    """The WAL-index header (both copies equal, initialised), or None when there is no WAL-index yet."""
    fd = _index_fd(database)
    if fd is None:
        return None
    for _ in range(READ_ATTEMPTS):
        raw = os.pread(fd, 2 * INDEX_HEADER_BYTES, 0)
        if len(raw) < 2 * INDEX_HEADER_BYTES:
            return None
        first, second = raw[:INDEX_HEADER_BYTES], raw[INDEX_HEADER_BYTES:]
        if first == second:
            # Native byte order: the WAL-index is shared memory, never moved between machines.
            _version, _unused, _change, is_init, _big_endian, _page, max_frame, db_pages = struct.unpack(
                "=IIIBBHII", first[:24]
            )
            if not is_init:
                return None
            return _Index(salts=first[32:40], max_frame=max_frame, db_pages=db_pages)
        time.sleep(0.0005)
    raise WalError(f"the WAL-index of {database} kept changing while it was read ({sys.byteorder}-endian host)")
