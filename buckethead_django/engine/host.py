"""The processes of one host that share a database: which one is the replicator, and who else is there.

Two OS file locks in the database's directory say it, and the kernel drops
both when a process dies, however it dies:

- ``replicator.lock``, held exclusively by the one process that talks to the
  bucket for the host (restores, ships changes, makes the final flush). Any
  other process of the site may take it over the moment it is free.
- ``members.lock``, held shared by every process using the database. The
  replicator holds it exclusively while it decides what the database must
  hold at the host's start (restore, or set a stale copy aside), so no
  process reads or writes before that; and a process that can take it
  exclusively at exit knows it is the last one on the host.

``replicator.json`` names the replicator for ``status`` and tells the others
when the database is ready; ``state.json`` records which generation of the
bucket the file holds and what it looked like then, so that a new replicator
(a takeover, or the host's next start) knows whether anything is unshipped.
Both are written by the replicator only, atomically. On a read replica's
host the replicator's role is the follower's (see `follower`), and
``follow.json`` records the point of the bucket's history the file holds.

The locks are ``flock`` locks on descriptors opened close-on-exec and closed
in a forked child, so a server that forks its workers never passes the role
on by accident.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .database import Fingerprint
from .history import POINT_SEPARATOR, generation_of
from .processes import process_running, process_start_ticks
from .wal import WalPosition

REPLICATOR_LOCK = "replicator.lock"
MEMBERS_LOCK = "members.lock"
REPLICATOR_FILE = "replicator.json"
#: The counters of `ReplicatorInfo`: carried on when a replicator announces itself without them.
COUNTERS = ("flushes", "flush_failures", "uploaded_bytes")
STATE_FILE = "state.json"
#: Where a read replica's follower records the point the file holds.
FOLLOW_FILE = "follow.json"
HOST_FILE = "host.json"
#: Touched by a process that wants the host's changes shipped now; the replicator's loop watches its time.
FLUSH_REQUEST_FILE = "flush.request"
#: Written by a process that waited in vain for another host's lease, so the host's others need not wait again.
CONFLICT_FILE = "conflict.json"

#: Locks of this process, closed in a forked child (the child is another process and must not hold them).
_open_locks: weakref.WeakSet[_FileLock] = weakref.WeakSet()


class _FileLock:
    """One ``flock`` lock on one file, taken and released without blocking."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.mode: int | None = None
        self._lock = threading.Lock()

    def acquire(self, mode: int) -> bool:
        """Take (or convert to) ``fcntl.LOCK_EX`` or ``LOCK_SH``, without waiting; True if now held."""
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                _open_locks.add(self)
            try:
                fcntl.flock(self._fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                # A failed conversion has dropped the lock already held (flock removes it first): none is held now.
                self._close()
                return False
            self.mode = mode
            return True

    def release(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
        self._fd = None
        self.mode = None

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptor (the parent's lock stays the parent's)."""
        self._close()


def _close_inherited_locks() -> None:
    for lock in list(_open_locks):
        lock.forget_after_fork()


os.register_at_fork(after_in_child=_close_inherited_locks)


@dataclass(frozen=True)
class ReplicatorInfo:
    """Which process of the host is its replicator, since when, whether the database is ready, and how it fares.

    The other processes of the host report the replicator's health from it.
    """

    host: str
    pid: int
    started_at: float
    ready: bool
    #: The process's start time in clock ticks since boot: tells it apart from a later process with its pid.
    start_ticks: int = 0
    #: Why this host no longer ships (another host took the bucket over), or None.
    fenced: str | None = None
    #: The error of the last failed flush, or None.
    last_error: str | None = None
    #: When a generation was last committed (Unix time), or None.
    last_upload_at: float | None = None
    #: The generation the last commit made, else the one the database was restored from.
    current_snapshot: str | None = None
    #: When the bucket's writer lease this host holds expires (Unix time), or None.
    lease_expires_at: float | None = None
    #: The host's flushes that uploaded something, the ones that failed, and the bytes they uploaded: counted since
    #: the host's database was made, across replicators (a takeover carries them on), for monitoring.
    flushes: int = 0
    flush_failures: int = 0
    uploaded_bytes: int = 0
    #: On a read replica: when the writer flushed the point the file holds, and when the follower last found the
    #: bucket had nothing newer (Unix times), or None.
    applied_at: float | None = None
    checked_at: float | None = None

    @property
    def running(self) -> bool:
        return process_running(self.pid, self.start_ticks)


@dataclass(frozen=True)
class Shipped:
    """A point of the bucket's history the host's file equalled: what a new replicator continues from.

    ``point`` is ``<generation>+<deltas>``; ``digest`` the SHA-256 its next
    delta names as parent; ``position`` how far the WAL had been read for
    it (None: unknown, so the next flush writes a new base).
    """

    point: str
    digest: str = ""
    position: WalPosition | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "digest": self.digest,
            "position": None if self.position is None else self.position.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any] | str | None) -> Shipped | None:
        if raw is None:
            return None
        if isinstance(raw, str):  # a version without deltas recorded the generation's name alone
            return cls(point=raw if POINT_SEPARATOR in raw else f"{raw}{POINT_SEPARATOR}0")
        position = raw.get("position")
        return cls(
            point=str(raw["point"]),
            digest=str(raw.get("digest", "")),
            position=None if position is None else WalPosition.from_json(position),
        )


@dataclass(frozen=True)
class HostState:
    """What the host's database holds, as its replicator last recorded it.

    ``shipped`` is the bucket's point the file equalled when it was
    restored or last shipped (None: the bucket had none); ``fingerprint``
    is how the file looked then, at ``recorded_at``. While a flush is being
    committed, ``shipping`` names its point and ``shipping_fingerprint`` is
    how the file looked when it was read: a replicator that dies between
    the commit and the next record leaves that said. ``bucket`` names the
    bucket and key.
    """

    bucket: str
    shipped: Shipped | None
    fingerprint: Fingerprint
    recorded_at: float
    shipping: Shipped | None = None
    shipping_fingerprint: Fingerprint | None = None

    @property
    def point(self) -> str | None:
        """The point the file equalled."""
        return self.shipped.point if self.shipped is not None else None

    @property
    def generation(self) -> str | None:
        """The generation of that point."""
        return generation_of(self.point)

    def find(self, point: str | None) -> tuple[Shipped, Fingerprint] | None:
        """The record of ``point`` and how the file looked then, if the file ever equalled it by this record."""
        if self.shipped is not None and point == self.shipped.point:
            return self.shipped, self.fingerprint
        if self.shipping is not None and self.shipping_fingerprint is not None and point == self.shipping.point:
            return self.shipping, self.shipping_fingerprint
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "shipped": None if self.shipped is None else self.shipped.to_json(),
            "fingerprint": self.fingerprint.to_list(),
            "recorded_at": self.recorded_at,
            "shipping": None if self.shipping is None else self.shipping.to_json(),
            "shipping_fingerprint": None if self.shipping_fingerprint is None else self.shipping_fingerprint.to_list(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HostState:
        shipping_fingerprint = raw.get("shipping_fingerprint")
        return cls(
            bucket=str(raw["bucket"]),
            shipped=Shipped.from_json(raw.get("shipped", raw.get("generation"))),
            fingerprint=Fingerprint.from_list(raw["fingerprint"]),
            recorded_at=float(raw.get("recorded_at", 0)),
            shipping=Shipped.from_json(raw.get("shipping")),
            shipping_fingerprint=None if shipping_fingerprint is None else Fingerprint.from_list(shipping_fingerprint),
        )


class Host:
    """This process's membership of the host whose database lives in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._replicator = _FileLock(self.directory / REPLICATOR_LOCK)
        self._members = _FileLock(self.directory / MEMBERS_LOCK)

    # -- the replicator role ---------------------------------------------------------------

    @property
    def is_replicator(self) -> bool:
        return self._replicator.mode is not None

    def try_become_replicator(self) -> bool:
        """Take the replicator lock if no live process holds it; True if this process is now the replicator.

        The new replicator announces itself as not ready at once, so no
        process mistakes it for one that has finished starting.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.is_replicator:
            return True
        if not self._replicator.acquire(fcntl.LOCK_EX):
            return False
        self.announce(ready=False)
        return True

    def announce(self, *, ready: bool, **health: Any) -> None:
        """Write ``replicator.json``: this process is the replicator, whether the database is ready, and
        ``health`` (the other fields of `ReplicatorInfo`)."""
        previous = self.replicator()
        carried = {name: getattr(previous, name) for name in COUNTERS} if previous is not None else {}
        info = ReplicatorInfo(
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=previous.started_at if previous is not None and previous.pid == os.getpid() else time.time(),
            ready=ready,
            start_ticks=process_start_ticks(os.getpid()),
            **{**carried, **health},
        )
        _write_json(self.directory / REPLICATOR_FILE, asdict(info))

    def replicator(self) -> ReplicatorInfo | None:
        """The process ``replicator.json`` names (it may have died since; see `ReplicatorInfo.running`)."""
        raw = _read_json(self.directory / REPLICATOR_FILE)
        if raw is None:
            return None
        try:
            return ReplicatorInfo(
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                started_at=float(raw["started_at"]),
                ready=bool(raw["ready"]),
                start_ticks=int(raw.get("start_ticks", 0)),
                fenced=raw.get("fenced"),
                last_error=raw.get("last_error"),
                last_upload_at=raw.get("last_upload_at"),
                current_snapshot=raw.get("current_snapshot"),
                lease_expires_at=raw.get("lease_expires_at"),
                applied_at=raw.get("applied_at"),
                checked_at=raw.get("checked_at"),
                **{name: int(raw.get(name, 0)) for name in COUNTERS},
            )
        except (KeyError, TypeError, ValueError):
            return None

    def give_up_replicator(self) -> None:
        self._replicator.release()

    def record_conflict(self, message: str) -> None:
        """Note that another host kept the bucket's lease past this process's wait (its `WriterConflict`)."""
        with contextlib.suppress(OSError):
            _write_json(self.directory / CONFLICT_FILE, {"message": message, "at": time.time()})

    def recent_conflict(self, within: float) -> str | None:
        """The message of a lease conflict noted less than ``within`` seconds ago, else None."""
        raw = _read_json(self.directory / CONFLICT_FILE)
        if raw is None or time.time() - float(raw.get("at", 0)) > within:
            return None
        return str(raw.get("message", ""))

    def forget_conflict(self) -> None:
        (self.directory / CONFLICT_FILE).unlink(missing_ok=True)

    def request_flush(self) -> float:
        """Ask the replicator to ship now; returns the time of the request, on the clock `HostState.recorded_at`
        is on (a file's time may lag it by a clock tick, so it only tells the replicator that a request came)."""
        asked = time.time()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / FLUSH_REQUEST_FILE).touch()
        return asked

    def flush_requested_at(self) -> float:
        """When a process last asked for a flush (0 if none ever did)."""
        try:
            return (self.directory / FLUSH_REQUEST_FILE).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    # -- membership ----------------------------------------------------------------------------

    def claim_alone(self) -> bool:
        """Hold the members lock exclusively, if no other process is a member now; True if so."""
        return self._members.acquire(fcntl.LOCK_EX)

    def join(self) -> bool:
        """Hold the members lock shared (or turn this process's exclusive hold into a shared one).

        False while a replicator holds it exclusively, deciding what the database must hold.
        """
        return self._members.acquire(fcntl.LOCK_SH)

    def leave(self) -> None:
        self._members.release()
        self._replicator.release()

    # -- what the database holds ---------------------------------------------------------------

    def state(self) -> HostState | None:
        raw = _read_json(self.directory / STATE_FILE)
        if raw is None:
            return None
        try:
            return HostState.from_json(raw)
        except (KeyError, TypeError, ValueError):
            return None

    def record(self, state: HostState) -> None:
        _write_json(self.directory / STATE_FILE, state.to_json())

    def following(self) -> dict[str, Any] | None:
        """What a read replica's follower last recorded of the point the file holds (see `follower`)."""
        return _read_json(self.directory / FOLLOW_FILE)

    def record_following(self, following: dict[str, Any]) -> None:
        _write_json(self.directory / FOLLOW_FILE, following)

    def token(self) -> str:
        """This host's database's identity: made once with the directory, the same for all its processes."""
        path = self.directory / HOST_FILE
        raw = _read_json(path)
        if raw is not None and isinstance(raw.get("token"), str):
            return str(raw["token"])
        token = uuid.uuid4().hex[:12]
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"token": token}, f)
        raw = _read_json(path)
        return str(raw["token"]) if raw is not None else token


def _write_json(path: Path, body: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(body, sort_keys=True), "utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None
