"""The host's database: one SQLite file in WAL mode, in a RAM-backed directory, shared by every process of the site.

Every process on the host — each server worker, ``migrate``, ``shell``, a
task worker — opens this one file with ordinary SQLite connections. WAL mode
lets readers keep a consistent view while a writer commits, so taking a
snapshot never stalls a request, and commits from any process are seen by
all. The bucket is the durable copy; the file is its working copy, kept in
``/dev/shm`` where the host has it so that reads and writes run at memory
speed.

The pragmas, and why:

- ``journal_mode=WAL``: concurrent readers and one writer across processes;
  a snapshot is a read transaction that blocks nobody.
- ``synchronous=NORMAL``: the WAL is synced only at checkpoints. On tmpfs a
  sync costs nothing and protects nothing (a power loss empties RAM
  anyway); on a disk directory it keeps the file uncorrupted across a power
  loss, which ``OFF`` would not. A process crash loses nothing either way:
  committed pages are in the OS's page cache.
- ``busy_timeout``: writers of all processes queue for the write lock
  instead of failing with "database is locked".
- ``mmap_size``: reads of the main file are memory accesses instead of
  ``read()`` calls, which is most of what reading from tmpfs costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import BucketHeadError
from .snapshot import page_size_of
from .wal import WalPosition, current_position

DATABASE_NAME = "buckethead.sqlite3"
#: Where copies of the database that had to make way for the bucket's are kept, beside it.
SET_ASIDE_DIR = "set-aside"
#: Where RAM-backed directories are, on Linux.
SHM_ROOT = Path("/dev/shm")  # noqa: S108 - shared, so the directory is made private and its owner checked
#: A RAM-backed directory with less free space than this is not chosen by default (Docker's default is 64 MB).
MIN_FREE_BYTES = 256 * 1024 * 1024
#: Reads of up to this much of the main file are memory-mapped (per process, address space only).
MMAP_BYTES = 1024 * 1024 * 1024
#: Filesystem types SQLite's WAL cannot be shared on: its ``-shm`` index needs one host's shared memory.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
        "ocfs2", "gfs2", "davfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.glusterfs",
        "fuse.ceph", "virtiofs",
    }
)  # fmt: skip
RAM_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


class LocalDirError(BucketHeadError):
    """The host's database directory cannot hold the database: not writable, too small, or on a network."""


@dataclass(frozen=True)
class LocalDir:
    """Where the host's database lives, and why there."""

    path: Path
    #: The filesystem type of ``path`` (``tmpfs`` for /dev/shm), as the mount table says.
    filesystem: str
    #: How it was chosen, for ``status``: configured, RAM-backed default, or the fallback directory.
    reason: str

    @property
    def ram_backed(self) -> bool:
        return self.filesystem in RAM_FILESYSTEMS


def identity(*parts: str) -> str:
    """A short, stable name for one bucket and snapshot key: the directory of their host database."""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:16]


def host_identity(bucket: str, *, replica: bool = False) -> str:
    """The name of the host database's directory for the bucket ``bucket`` (its `BucketConfig.identity`): a read
    replica's differs from the writer's, so that both can run on one machine."""
    return identity(bucket, "replica") if replica else identity(bucket)


def choose_local_dir(configured: Path | None, name: str, fallback: Path) -> LocalDir:
    """The host database's directory: ``configured``, else ``/dev/shm/buckethead-<name>`` if it has room, else
    ``fallback/<name>``."""
    if configured is not None:
        return LocalDir(Path(configured), filesystem_of(Path(configured)), "configured (LOCAL_DIR)")
    shm = SHM_ROOT / f"buckethead-{name}"
    if SHM_ROOT.is_dir() and os.access(SHM_ROOT, os.W_OK):
        free = free_bytes(SHM_ROOT)
        if free >= MIN_FREE_BYTES or shm.exists():
            return LocalDir(shm, filesystem_of(SHM_ROOT), f"RAM-backed {SHM_ROOT} ({_mib(free)} free)")
        why = f"{SHM_ROOT} has only {_mib(free)} free (less than {_mib(MIN_FREE_BYTES)})"
    else:
        why = f"{SHM_ROOT} does not exist or is not writable"
    path = fallback / name
    return LocalDir(path, filesystem_of(fallback), f"fallback directory: {why}")


def problems(local: LocalDir, *, needed_bytes: int = 0) -> list[str]:
    """What is wrong with ``local`` for the database, each with the fix; empty when it will do."""
    found = []
    if local.filesystem in NETWORK_FILESYSTEMS or local.filesystem.startswith("fuse."):
        found.append(
            f"LOCAL_DIR {str(local.path)!r} is on a {local.filesystem} filesystem: SQLite's WAL needs a local "
            "filesystem shared by this host's processes only. Point LOCAL_DIR at a local directory (or leave it "
            "unset to use /dev/shm)."
        )
    existing = _existing_parent(local.path)
    if not existing.is_dir():
        found.append(
            f"LOCAL_DIR {str(local.path)!r} cannot be made: {str(existing)!r} is a file, not a directory. "
            "Remove the file, or point LOCAL_DIR at a directory."
        )
    elif not os.access(existing, os.W_OK):
        found.append(
            f"LOCAL_DIR {str(local.path)!r} cannot be created or written by this process (uid {os.getuid()}): "
            f"make {str(existing)!r} writable, or point LOCAL_DIR elsewhere."
        )
    else:
        held = database_bytes(local.path / DATABASE_NAME)
        free = free_bytes(existing)
        if needed_bytes > held + free:
            found.append(
                f"LOCAL_DIR {str(local.path)!r} has {_mib(free)} free, but the database needs {_mib(needed_bytes)}: "
                "give it more room (for Docker, `--shm-size=1g`; for Compose, `shm_size: 1g`) or point LOCAL_DIR "
                "at a larger local directory."
            )
    return found


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` (or its nearest existing parent) is on, from the mount table."""
    target = str(_existing_parent(path).resolve())
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, fields[2]
    return kind


def free_bytes(path: Path) -> int:
    stat = os.statvfs(_existing_parent(path))
    return stat.f_bavail * stat.f_frsize


def database_bytes(path: Path) -> int:
    """The size of the database file at ``path`` with its WAL (0 if there is none)."""
    total = 0
    for part in (path, Path(f"{path}-wal")):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            total += part.stat().st_size
    return total


def _existing_parent(path: Path) -> Path:
    """``path`` or its nearest ancestor that this process can see exists."""
    while not os.path.exists(path) and path != path.parent:
        path = path.parent
    return path


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MiB"


# -- the database file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """What the file looked like when a snapshot was taken: if it still looks so, nothing was written since.

    A commit appends to the WAL and a checkpoint writes the main file, so
    either moves a size or a modification time. A checkpoint of already
    shipped pages moves them too: the test errs on the side of shipping.
    """

    database: tuple[int, int, int]
    wal: tuple[int, int, int]

    def to_list(self) -> list[list[int]]:
        return [list(self.database), list(self.wal)]

    @classmethod
    def from_list(cls, raw: list[list[int]]) -> Fingerprint:
        database, wal = raw
        return cls(
            database=(int(database[0]), int(database[1]), int(database[2])), wal=(int(wal[0]), int(wal[1]), int(wal[2]))
        )


class HostDatabase:
    """The SQLite file in ``directory`` and the connections every process opens on it."""

    #: How connections open the file (an SQLite URI ``mode``): read and write, never created by accident.
    open_mode = "rw"

    def __init__(self, directory: Path, *, busy_timeout: float) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DATABASE_NAME
        self.busy_timeout = busy_timeout

    def exists(self) -> bool:
        return self.path.is_file()

    def prepare(self) -> None:
        """Make the directory, private to this user; refuse one that another user owns or that is a symlink.

        ``/dev/shm`` is shared by every user of the host: a directory someone
        else made there in advance could be read or swapped under us.
        """
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.directory.lstat()
        except OSError as exc:
            raise LocalDirError(
                f"cannot create the database directory {str(self.directory)!r}: {exc}. Make its parent writable, "
                "or point LOCAL_DIR at a writable local directory."
            ) from exc
        if not os.path.isdir(self.directory) or os.path.islink(self.directory) or st.st_uid != os.getuid():
            raise LocalDirError(
                f"the database directory {str(self.directory)!r} is not a directory of this user (uid {os.getuid()}):"
                " remove it, or point LOCAL_DIR elsewhere."
            )

    def connect(
        self, *, check_same_thread: bool = True, autocommit: bool = False, read_only: bool = False
    ) -> sqlite3.Connection:
        """A new connection to the file, configured; the file must exist (it is never created by accident)."""
        conn = sqlite3.connect(
            f"file:{self.path}?mode={self.open_mode}",
            uri=True,
            timeout=self.busy_timeout,
            check_same_thread=check_same_thread,
            isolation_level=None if autocommit else "DEFERRED",
        )
        self.configure(conn, read_only=read_only)
        return conn

    @staticmethod
    def configure(conn: sqlite3.Connection, *, read_only: bool = False) -> None:
        """Apply the per-connection pragmas (see the module's docstring); also for connections Django opens."""
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")

    def check_room(self, needed_bytes: int) -> None:
        """Raise `LocalDirError`, saying what to do, unless the directory has room for ``needed_bytes`` more."""
        free = free_bytes(self.directory)
        if needed_bytes > free:
            raise LocalDirError(
                f"the database directory {str(self.directory)!r} has {_mib(free)} free, but the database needs "
                f"{_mib(needed_bytes)}: give it more room (for Docker, `--shm-size=1g`; for Compose, "
                "`shm_size: 1g`) or point LOCAL_DIR at a larger local directory. Nothing was changed."
            )

    def create(self, source: Path | None) -> None:
        """Make the file, from the verified database at ``source`` (None: empty), atomically.

        It is built under a temporary name and renamed into place, so no
        other process ever opens a half-restored database.
        """
        self.install(None if source is None else lambda building: copy_database_file(source, building))

    def install(self, write: Callable[[Path], None] | None) -> None:
        """Make the file from what ``write(path)`` puts at a path beside it (a whole, verified SQLite file; None:
        an empty database), atomically: it is renamed into place once it is in WAL mode, so no other process
        ever opens a half-restored database. A download written there directly is never copied again."""
        self.prepare()
        building = self.directory / f".{DATABASE_NAME}.{uuid.uuid4().hex}.building"
        try:
            if write is not None:
                write(building)
            conn = sqlite3.connect(building, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            finally:
                conn.close()
            for leftover in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                leftover.unlink(missing_ok=True)
            os.replace(building, self.path)
        finally:
            for part in (building, Path(f"{building}-wal"), Path(f"{building}-shm")):
                part.unlink(missing_ok=True)

    def use_wal(self) -> None:
        """Put the file in WAL mode (a file made elsewhere may not be); nobody else may have it open."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()

    def replace_with(self, source: Path) -> None:
        """Replace the content of the live file with the verified database at ``source``, in one transaction.

        Other processes keep their connections and see the new content at
        their next transaction.
        """
        conn = self.connect(autocommit=True)
        try:
            live = int(conn.execute("PRAGMA page_size").fetchone()[0])
            if page_size_of(source) == live:
                copy_database(source, conn)
                return
            # A WAL database cannot take pages of another size: convert a copy first.
            with temporary_copy_path("buckethead-page-size-") as converted:
                out = sqlite3.connect(converted, isolation_level=None)
                try:
                    copy_database(source, out)
                    out.execute(f"PRAGMA page_size = {live}")
                    out.execute("VACUUM")
                finally:
                    out.close()
                copy_database(converted, conn)
        finally:
            conn.close()

    def capture(self, conn: sqlite3.Connection, dest: Path) -> WalPosition:
        """Copy the database, as of one read transaction on ``conn``, to a new plain SQLite file ``dest``.

        Writers in every process go on meanwhile (WAL); the copy holds
        whole transactions only. ``conn`` must be in autocommit mode.
        Returns a position of the WAL at or before the copy: every frame
        after it that is not in the copy is newer than the copy.
        """
        before = current_position(self.path)
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            during = current_position(self.path)
            out = sqlite3.connect(dest, isolation_level=None)
            try:
                conn.backup(out)
                # A plain database file, as every snapshot is: not marked for WAL like the file it was copied from.
                out.execute("PRAGMA journal_mode = DELETE")
            finally:
                out.close()
        finally:
            conn.execute("COMMIT")
        # Replaying frames the copy holds already is harmless; frames of a WAL restarted meanwhile are all newer.
        return before if before.salts == during.salts else WalPosition(during.salts, 0)

    def set_aside(self, reason: str, why: str) -> Path:
        """Copy the live file beside it as ``set-aside/<reason>-<time>.sqlite3``, with ``why`` in a ``.why`` file
        next to it, and return its path. It stays until the operator removes it (see `set_aside_copies`)."""
        folder = self.directory / SET_ASIDE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{reason}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}.sqlite3"
        Path(f"{dest}.why").write_text(why, "utf-8")
        try:
            conn = self.connect(autocommit=True)
            try:
                self.capture(conn, dest)
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            # Too damaged for SQLite to copy: keep the files as they are, for whatever can be saved from them.
            dest.unlink(missing_ok=True)
            for suffix in ("", "-wal"):
                with contextlib.suppress(FileNotFoundError):
                    shutil.copyfile(f"{self.path}{suffix}", f"{dest}{suffix}")
        return dest

    def set_aside_copies(self) -> list[tuple[str, str]]:
        """Every copy in ``set-aside/``, oldest first, and why it was set aside."""
        copies = []
        for copy in sorted((self.directory / SET_ASIDE_DIR).glob("*.sqlite3")):
            try:
                why = Path(f"{copy}.why").read_text("utf-8")
            except OSError:
                why = copy.name.split("-", 1)[0]
            copies.append((str(copy), why))
        return copies

    def quick_check(self) -> list[str]:
        """SQLite's quick integrity check of the file: ``[]`` when it is whole, else what is wrong."""
        try:
            conn = self.connect(autocommit=True)
            try:
                rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(20)")]
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        return [] if rows == ["ok"] else rows

    def fingerprint(self) -> Fingerprint:
        wal = _stat(Path(f"{self.path}-wal"))
        # An empty WAL holds nothing: the one the last connection's close deletes, and the next one creates, are alike.
        return Fingerprint(database=_stat(self.path), wal=wal if wal[1] else (0, 0, 0))

    def size_bytes(self) -> int:
        return database_bytes(self.path)

    def remove(self) -> None:
        """Delete the file with its WAL and index (a throwaway database, or one that failed its check)."""
        for part in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            part.unlink(missing_ok=True)


def copy_database_file(source: Path, dest: Path) -> None:
    """Copy the database file at ``source`` to a new file ``dest`` through SQLite (a consistent copy)."""
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        copy_database(source, conn)
    finally:
        conn.close()


def copy_database(source: Path, into: sqlite3.Connection) -> None:
    """Replace the database behind ``into`` with the one at ``source`` (SQLite's backup API)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        src.backup(into)
    finally:
        src.close()


def _stat(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def temporary_copy_path(prefix: str) -> Iterator[Path]:
    """A path for a temporary database copy in the system's temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp) / "copy.sqlite3"
