"""A read replica's database: a SQLite file its processes read while the host's follower writes pages into it.

On a replica host nothing but the follower (see `follower`) ever writes the
file, and it writes raw pages (a writer's deltas), not SQL. SQLite's WAL
index cannot be kept right from outside SQLite, so the file uses SQLite's
rollback journal mode instead, where the database file alone is the state
and one lock guards it:

- Readers open the file read-only (``mode=ro``, ``query_only``) and read as
  in any SQLite database: each read transaction holds SQLite's SHARED lock.
- The follower takes SQLite's EXCLUSIVE lock (``BEGIN EXCLUSIVE``), which
  waits for running read transactions to end and holds new ones back, then
  writes the pages, sizes the file and bumps the file change counter, and
  releases the lock. Each reader therefore sees the state before or after
  a delta, never a mix; the bumped counter makes every connection drop its
  page cache; a changed schema cookie makes statements prepare again.
- Page 1 is written last. Before the first other page is touched, its
  b-tree is marked invalid and its schema cookie moved, so every reader's
  next statement is refused ("database disk image is malformed") while
  SQLite's locks still work on the file. A follower killed half-way thus
  leaves a file no reader can misread, and the next follower (see
  `damaged`) brings it back whole from the bucket, under the same lock.

Memory-mapped reads are off: a page the follower shrinks the file under
must never be reached through an old mapping.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .database import HostDatabase
from .delta import FILE_FORMAT_OFFSET, ROLLBACK_JOURNAL_FORMAT, Delta, net_effect
from .snapshot import SQLITE_HEADER, page_size_of

#: Offsets in page 1: the file change counter, the size in pages, the schema cookie, the version the size is
#: valid for, and the type of page 1's b-tree page (right after the 100-byte file header).
CHANGE_COUNTER_OFFSET = 24
SIZE_OFFSET = 28
SCHEMA_COOKIE_OFFSET = 40
VERSION_VALID_FOR_OFFSET = 92
BTREE_TYPE_OFFSET = 100
#: The b-tree page types page 1 may have (a table's interior or leaf page); 0 marks a file being written.
TABLE_PAGE_TYPES = (0x05, 0x0D)
HEADER_BYTES = BTREE_TYPE_OFFSET + 1


class ReplicaDatabase(HostDatabase):
    """The replica host's file: opened read-only by every process, rewritten page by page by its follower."""

    #: Nothing but the follower writes a replica's file, and it writes pages, not SQL.
    open_mode = "ro"

    def __init__(self, directory: Path, *, busy_timeout: float) -> None:
        super().__init__(directory, busy_timeout=busy_timeout)
        self._fd: int | None = None
        self._lock_conn: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()

    @staticmethod
    def configure(conn: sqlite3.Connection, *, read_only: bool = True) -> None:
        """Read-only whatever is asked, and no memory map (see the module's docstring); also for connections Django
        opens."""
        conn.execute("PRAGMA mmap_size = 0")
        conn.execute("PRAGMA query_only = ON")

    def replace_file(self, image: Path) -> None:
        """Make the file from the verified database ``image`` by renaming it into place (no process has the
        file open: the host's start). The image is left in rollback journal mode."""
        self.prepare()
        _set_rollback_format(image)
        for part in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), Path(f"{self.path}-journal")):
            part.unlink(missing_ok=True)
        os.replace(image, self.path)

    def damaged(self) -> bool:
        """True if the file is missing, or a follower stopped half-way through writing it (see the module)."""
        try:
            with open(self.path, "rb") as f:
                header = f.read(HEADER_BYTES)
        except FileNotFoundError:
            return True
        return (
            len(header) < HEADER_BYTES
            or not header.startswith(SQLITE_HEADER)
            or header[FILE_FORMAT_OFFSET : FILE_FORMAT_OFFSET + 2] != ROLLBACK_JOURNAL_FORMAT
            or header[BTREE_TYPE_OFFSET] not in TABLE_PAGE_TYPES
        )

    def apply(self, deltas: Sequence[Delta]) -> int:
        """Write what ``deltas``, in order, change, as one step readers see whole; the pages written."""
        if not deltas:
            return 0
        pages, db_pages, shrink_to = net_effect(deltas)
        page_size = deltas[-1].header.page_size
        return self._write(pages.items(), page_size=page_size, db_pages=db_pages, shrink_to=shrink_to)

    def apply_image(self, image: Path) -> int:
        """Make the file equal the verified database ``image`` while readers use it, writing only the pages that
        differ; the pages written. Its page size must be the file's (a base of the same site)."""
        page_size = page_size_of(image)
        if not self.damaged() and page_size_of(self.path) != page_size:
            raise ValueError(f"the image's pages are {page_size} bytes, the replica's {page_size_of(self.path)}")
        db_pages = os.path.getsize(image) // page_size
        differing = list(self._differing_pages(image, page_size, db_pages))
        with open(image, "rb") as source:
            changed = ((n, os.pread(source.fileno(), page_size, (n - 1) * page_size)) for n in differing)
            return self._write(changed, page_size=page_size, db_pages=db_pages, shrink_to=0)

    def _differing_pages(self, image: Path, page_size: int, db_pages: int) -> Iterator[int]:
        """The page numbers whose content differs between ``image`` and the file (read without a lock: only the
        follower, this process, writes the file)."""
        with open(image, "rb") as new, open(self.path, "rb") as old:
            for number in range(1, db_pages + 1):
                if new.read(page_size) != old.read(page_size) or number == 1:
                    yield number

    def _write(
        self,
        pages: Iterable[tuple[int, bytes]],
        *,
        page_size: int,
        db_pages: int,
        shrink_to: int,
    ) -> int:
        """Write ``pages`` and size the file to ``db_pages`` under SQLite's EXCLUSIVE lock, page 1 last (always,
        for its change counter); the pages written."""
        with self._write_lock:
            conn, fd = self._open_for_writing()
            conn.execute("BEGIN EXCLUSIVE")  # waits (busy_timeout) for running read transactions to end
            try:
                current = os.pread(fd, HEADER_BYTES, 0)
                counter = (struct.unpack_from(">I", current, CHANGE_COUNTER_OFFSET)[0] + 1) & 0xFFFFFFFF
                # From here until page 1 is written whole, any reader is refused the file instead of misreading it.
                os.pwrite(fd, _marked_invalid(current, counter=counter), 0)
                if shrink_to and shrink_to * page_size < os.fstat(fd).st_size:
                    os.ftruncate(fd, shrink_to * page_size)
                first: bytes | None = None
                written = 0
                for number, page in pages:
                    if number > db_pages:
                        continue
                    if number == 1:
                        first = page
                    else:
                        os.pwrite(fd, page, (number - 1) * page_size)
                    written += 1
                os.ftruncate(fd, db_pages * page_size)
                if first is None:
                    first = current + os.pread(fd, page_size, 0)[HEADER_BYTES:]
                os.pwrite(fd, _page_one(first, counter=counter, db_pages=db_pages), 0)
            finally:
                conn.execute("COMMIT")
            return written

    def _open_for_writing(self) -> tuple[sqlite3.Connection, int]:
        """The follower's lock connection and raw descriptor, opened once and kept: closing a descriptor of the
        file would drop every POSIX lock this process's SQLite connections hold on it."""
        if self._lock_conn is None or self._fd is None:
            self._lock_conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
            )
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        return self._lock_conn, self._fd

    def close_writer(self) -> None:
        """Close the follower's descriptor and lock connection (the follower stops)."""
        with self._write_lock:
            if self._lock_conn is not None:
                self._lock_conn.close()
                self._lock_conn = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _marked_invalid(header: bytes, *, counter: int) -> bytes:
    """Page 1's header as a file being written has it: a new change counter (so page caches are dropped), a new
    schema cookie (so statements prepare again, reading page 1) and an invalid b-tree type (so that fails)."""
    out = bytearray(header)
    struct.pack_into(">I", out, CHANGE_COUNTER_OFFSET, counter)
    struct.pack_into(">I", out, VERSION_VALID_FOR_OFFSET, counter)
    cookie = struct.unpack_from(">I", out, SCHEMA_COOKIE_OFFSET)[0]
    struct.pack_into(">I", out, SCHEMA_COOKIE_OFFSET, (cookie + 1) & 0xFFFFFFFF)
    out[BTREE_TYPE_OFFSET] = 0
    return bytes(out)


def _page_one(page: bytes, *, counter: int, db_pages: int) -> bytes:
    """``page`` as page 1 of a replica: rollback journal mode, the new change counter, the size valid for it."""
    out = bytearray(page)
    out[FILE_FORMAT_OFFSET : FILE_FORMAT_OFFSET + 2] = ROLLBACK_JOURNAL_FORMAT
    struct.pack_into(">I", out, CHANGE_COUNTER_OFFSET, counter)
    struct.pack_into(">I", out, SIZE_OFFSET, db_pages)
    struct.pack_into(">I", out, VERSION_VALID_FOR_OFFSET, counter)
    return bytes(out)


def _set_rollback_format(image: Path) -> None:
    with open(image, "r+b") as f:
        os.pwrite(f.fileno(), ROLLBACK_JOURNAL_FORMAT, FILE_FORMAT_OFFSET)
