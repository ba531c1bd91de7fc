"""The writer lease: a small object in the bucket that says which process is the writer, and until when.

The running writer creates it at start, renews it while it runs, and deletes
it after its final flush, so any other process (a management command, the
admin of another deployment) can ask "is a live writer holding this bucket?"
before it changes anything. An expired lease means its holder died without
releasing it.

Renewal is rare on purpose: a lease lasts ``lease_seconds`` (five minutes by
default) and is renewed when half of that has passed, so an idle writer
costs a handful of writes an hour rather than one per flush tick.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass

from .objectstore import ObjectStore

LEASE_SUFFIX = ".lease"
DEFAULT_LEASE_SECONDS = 300.0


@dataclass(frozen=True)
class WriterLease:
    """Who holds the bucket's writer lease, since when, and until when (Unix times)."""

    holder: str
    host: str
    pid: int
    started_at: float
    renewed_at: float
    expires_at: float

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
        )

    @classmethod
    def for_this_process(cls, lease_seconds: float, started_at: float | None = None) -> WriterLease:
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
        )


def held_by_another(lease: WriterLease | None) -> bool:
    """True if ``lease`` is live and belongs to another process that is still running.

    A lease of this host whose process no longer exists was left behind by a
    crash (SIGKILL, power loss): it holds nothing, whatever its expiry says.
    """
    if lease is None or not lease.live:
        return False
    if lease.host != socket.gethostname():
        return True
    if lease.pid == os.getpid():
        return False
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_key(snapshot_key: str) -> str:
    """The lease object's key, beside the snapshot it guards."""
    return snapshot_key + LEASE_SUFFIX


def read_lease(store: ObjectStore, snapshot_key: str) -> WriterLease | None:
    """The current lease of the bucket, live or expired, or None if no writer holds one.

    An unreadable lease object (damaged, or from a future version) counts as
    none: it cannot name a holder to wait for.
    """
    try:
        return WriterLease.from_json(store.get(lease_key(snapshot_key)))
    except KeyError:
        return None
    except (ValueError, TypeError):
        return None
