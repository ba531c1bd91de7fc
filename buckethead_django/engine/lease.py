"""The writer lease: a small object in the bucket that says which process is the writer, and until when.

The running writer creates it at start, renews it while it runs, and deletes
it after its final flush, so any other process (a management command, the
admin of another deployment) can ask "is a live writer holding this bucket?"
before it changes anything. An expired lease means its holder died without
releasing it.

Taking and renewing are conditional writes on the version last read, so two
processes can never both believe they took it; a would-be writer waits up
to ``wait_seconds`` for the holder to release it, which is what lets a
rolling deploy hand the bucket over without losing a write.

Renewal is rare on purpose: a lease lasts ``lease_seconds`` (five minutes by
default) and is renewed when half of that has passed, so an idle writer
costs a handful of writes an hour rather than one per flush tick.

A writer keeps its lease through one `LeaseKeeper`: it takes the lease,
says when it is next due for renewal, renews it (backing off after a
failure) and releases it. A renewal refused because another process took
the lease over is reported to the writer, which fences itself off.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .config import DEFAULT_LEASE_SECONDS, DEFAULT_LEASE_WAIT
from .errors import NotStarted, ObjectNotFound, ObjectStoreError, PreconditionFailed, WriterConflict
from .objectstore import ObjectStore
from .objectstore.conditional import put_conditionally
from .processes import process_running, process_start_ticks
from .retry import backoff

logger = logging.getLogger("buckethead_django.engine")

LEASE_SUFFIX = ".lease"


@dataclass(frozen=True)
class WriterLease:
    """Who holds the bucket's writer lease, since when, and until when (Unix times)."""

    holder: str
    host: str
    pid: int
    started_at: float
    renewed_at: float
    expires_at: float
    #: Tells apart two engines of one process, and a restarted process that reused a pid.
    token: str = ""
    #: The host database this writer replicates (see `host.Host.token`): its other processes may take over.
    host_token: str = ""
    #: When the holder process started (clock ticks since boot), so a later process with its pid is not it.
    start_ticks: int = 0

    @property
    def live(self) -> bool:
        """True while the lease has not expired."""
        return self.expires_at > time.time()

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> WriterLease:
        raw = json.loads(data.decode("utf-8"))
        return cls(
            holder=str(raw["holder"]),
            host=str(raw["host"]),
            pid=int(raw["pid"]),
            started_at=float(raw["started_at"]),
            renewed_at=float(raw["renewed_at"]),
            expires_at=float(raw["expires_at"]),
            token=str(raw.get("token", "")),
            host_token=str(raw.get("host_token", "")),
            start_ticks=int(raw.get("start_ticks", 0)),
        )

    @classmethod
    def for_this_process(
        cls, lease_seconds: float, *, host_token: str = "", started_at: float | None = None, token: str | None = None
    ) -> WriterLease:
        now = time.time()
        host = socket.gethostname()
        pid = os.getpid()
        return cls(
            holder=f"{host}:{pid}",
            host=host,
            pid=pid,
            started_at=started_at or now,
            renewed_at=now,
            expires_at=now + lease_seconds,
            token=token or uuid.uuid4().hex[:12],
            host_token=host_token,
            start_ticks=process_start_ticks(pid),
        )

    def renewed(self, lease_seconds: float) -> WriterLease:
        return WriterLease.for_this_process(
            lease_seconds, host_token=self.host_token, started_at=self.started_at, token=self.token
        )

    @property
    def writer_id(self) -> str:
        """Who writes under this lease, as the current record and every object it writes name it."""
        return f"{self.holder}/{self.token}"

    def same_holder(self, other: WriterLease | None) -> bool:
        return other is not None and (other.holder, other.token) == (self.holder, self.token)


def held_by_another(lease: WriterLease | None, host_token: str = "") -> bool:
    """True if ``lease`` is live and belongs to a running process that is not of this host's database.

    The lease of this host's own replicator (``host_token``) is this host's
    to take over: the host's processes hand the role to each other. A lease
    of this machine whose process no longer runs was left behind by a crash
    (SIGKILL, power loss): it holds nothing, whatever its expiry says; nor
    does a killed process its parent has not reaped yet (a zombie), nor a
    later process that was given the same pid.
    """
    if lease is None or not lease.live:
        return False
    if host_token and lease.host_token == host_token:
        return False
    if lease.host != socket.gethostname():
        return True
    if lease.pid == os.getpid():
        return False
    return process_running(lease.pid, lease.start_ticks)


def lease_key(snapshot_key: str) -> str:
    """The lease object's key, beside the snapshot it guards."""
    return snapshot_key + LEASE_SUFFIX


def read_lease(store: ObjectStore, snapshot_key: str) -> WriterLease | None:
    """The current lease of the bucket, live or expired, or None if no writer holds one."""
    return read_versioned(store, snapshot_key)[0]


def read_versioned(store: ObjectStore, snapshot_key: str) -> tuple[WriterLease | None, str | None]:
    """The lease and the ETag of its object (None, None when there is none).

    An unreadable lease object (damaged, or from a future version) holds
    nothing: it cannot name a holder to wait for, and its ETag lets it be
    replaced.
    """
    info = store.head(lease_key(snapshot_key))
    if info is None:
        return None, None
    try:
        return WriterLease.from_json(store.get(lease_key(snapshot_key))), info.etag
    except ObjectNotFound:
        return None, None
    except (ValueError, TypeError, KeyError):
        return None, info.etag


def acquire(
    store: ObjectStore,
    snapshot_key: str,
    lease_seconds: float,
    *,
    wait_seconds: float = 0.0,
    host_token: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[WriterLease, str]:
    """Take the bucket's lease, waiting up to ``wait_seconds`` while another live process holds it.

    Returns the lease and its object's ETag (for `renew`). Raises
    `WriterConflict`, naming the holder and saying what to do, when the wait
    runs out.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        etag = wait_until_free(
            store, snapshot_key, max(0.0, deadline - time.monotonic()), host_token=host_token, sleep=sleep
        )
        try:
            mine = WriterLease.for_this_process(lease_seconds, host_token=host_token)
            return _write(store, snapshot_key, mine, etag)
        except PreconditionFailed:
            continue  # someone else took it between our look and our write: look again


def wait_until_free(
    store: ObjectStore,
    snapshot_key: str,
    wait_seconds: float,
    *,
    host_token: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Wait up to ``wait_seconds`` until no other live process holds the lease; change nothing.

    Returns the ETag of the free (expired, released or abandoned) lease
    object, None if there is none. Raises `WriterConflict` when the wait
    runs out.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        current, etag = read_versioned(store, snapshot_key)
        if not held_by_another(current, host_token):
            return etag
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _conflict(store, current, wait_seconds)  # type: ignore[arg-type]
        sleep(min(1.0, remaining))


def renew(store: ObjectStore, snapshot_key: str, lease: WriterLease, etag: str) -> tuple[WriterLease, str]:
    """Extend this process's lease; `PreconditionFailed` if another process has taken it since."""
    return _write(store, snapshot_key, lease.renewed(lease.expires_at - lease.renewed_at), etag)


def release(store: ObjectStore, snapshot_key: str, lease: WriterLease) -> None:
    """Delete the lease, unless another process has taken it since."""
    current = read_lease(store, snapshot_key)
    if current is None or lease.same_holder(current):
        store.delete(lease_key(snapshot_key))


class LeaseKeeper:
    """This process's hold on the bucket's writer lease: taken once, renewed at half its life, released at the end.

    It keeps what renewal needs (the version of the lease object it last
    wrote, and when to try again after a failure), so the writer only asks
    `due` and calls `renew`. It never fences: a renewal refused because
    another process has taken the lease raises `PreconditionFailed`, and the
    writer fences itself off.
    """

    def __init__(
        self,
        store: ObjectStore,
        snapshot_key: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float = DEFAULT_LEASE_WAIT,
        host_token: str = "",
    ) -> None:
        self.store = store
        self.snapshot_key = snapshot_key
        #: The host database this process belongs to: a lease of another process of it is not in the way.
        self.host_token = host_token
        self.lease_seconds = lease_seconds
        #: How long `take` (and `wait_until_free`) wait for another live process to let go.
        self.wait_seconds = wait_seconds
        #: The lease this process holds, or None.
        self.lease: WriterLease | None = None
        self._etag = ""
        self._retry_at = 0.0
        self._failures = 0

    def wait_until_free(self, *, wait: bool = True) -> None:
        """Wait up to ``wait_seconds`` (not at all with ``wait=False``) until no other live process holds the
        lease, changing nothing.

        `WriterConflict` when the wait runs out.
        """
        seconds = self.wait_seconds if wait else 0.0
        wait_until_free(self.store, self.snapshot_key, seconds, host_token=self.host_token)

    def take(self, *, wait: bool = True) -> WriterLease:
        """Take the lease, waiting up to ``wait_seconds`` for its holder (not at all with ``wait=False``).

        `WriterConflict`, naming the holder, when another live process keeps it.
        """
        self.lease, self._etag = acquire(
            self.store,
            self.snapshot_key,
            self.lease_seconds,
            wait_seconds=self.wait_seconds if wait else 0.0,
            host_token=self.host_token,
        )
        return self.lease

    def due(self) -> float:
        """When (monotonic) the lease next needs renewing: at half its life, or at the next retry.

        Infinity while no lease is held.
        """
        if self.lease is None:
            return float("inf")
        due = time.monotonic() + (self.lease.renewed_at + self.lease_seconds / 2 - time.time())
        return max(due, self._retry_at)

    def renew(self) -> WriterLease:
        """Extend the lease now.

        Raises `PreconditionFailed` when another process has taken it over
        (the caller is fenced off), and any other `ObjectStoreError` after
        scheduling a retry with backoff (`due` says when).
        """
        if self.lease is None:
            raise NotStarted("this process holds no writer lease to renew: take() it first")
        try:
            self.lease, self._etag = renew(self.store, self.snapshot_key, self.lease, self._etag)
        except PreconditionFailed:
            raise
        except ObjectStoreError:
            self._failures += 1
            self._retry_at = time.monotonic() + backoff(self._failures, cap=self.lease_seconds / 8)
            raise
        self._failures = 0
        return self.lease

    def release(self) -> None:
        """Delete the lease (after the final flush), unless another process has taken it since; forget it.

        A failure is logged, not raised: the lease then expires on its own.
        """
        if self.lease is None:
            return
        try:
            release(self.store, self.snapshot_key, self.lease)
        except Exception:
            logger.exception("BucketSQLite could not release its writer lease on %s", self.store.describe())
        self.lease = None


def _write(store: ObjectStore, snapshot_key: str, lease: WriterLease, etag: str | None) -> tuple[WriterLease, str]:
    info = put_conditionally(
        store,
        lease_key(snapshot_key),
        lease.to_json(),
        writer=lease.writer_id,
        if_match=etag,
        content_type="application/json",
    )
    return lease, info.etag


def _conflict(store: ObjectStore, holder: WriterLease, waited: float) -> WriterConflict:
    waited_text = f"after waiting {waited:g}s for it to be released" if waited > 0 else "at once"
    return WriterConflict(
        f"{store.describe()} is held by another writer, {holder.holder} (running since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(holder.started_at))}, lease valid for "
        f"{max(0, round(holder.expires_at - time.time()))} more seconds); this process gave up {waited_text}. "
        "One host writes a bucket (all of its processes share its database): stop the other host's processes "
        "first (a rolling deploy waits for them with LEASE_WAIT), give this host the same LOCAL_DIR if it is "
        "the same machine, or let this host serve a read-only copy (LEASE_CONFLICT = 'read-only')."
    )
