"""How well the host's database is doing, in one place for the health view, the admin and ``buckethead status``.

- ``ok``: flushes succeed (or nothing needed flushing yet).
- ``degraded``: the last flush failed, or copies of the host's database were
  set aside when the replicator started (they hold changes the bucket does
  not have: an operator must look at them). The site keeps working from the
  host's database and the change stays pending; the bucket holds the last
  good snapshot, whose age says how much losing the host would lose now.
- ``failing``: this host was fenced off. Another host took the bucket over,
  so this one will never ship again; it keeps serving from its database,
  but nothing it changes reaches the bucket. Only stopping its processes
  helps.
- ``lagging`` (a read replica only): its follower has not confirmed for
  longer than ``REPLICA_MAX_LAG`` that it holds the bucket's newest flush
  (the bucket is unreachable, or every poll fails). It keeps serving what
  it has; a load balancer should send its readers elsewhere meanwhile. A
  failed poll within that time is ``degraded``.

Every process of the host reports the same: the replicator from its memory,
the others (members) from what the replicator announces in ``LOCAL_DIR``
(``replicator.json``). A health check costs no request to the bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .engine import BucketSQLite

OK, DEGRADED, FAILING, LAGGING = "ok", "degraded", "failing", "lagging"
#: The statuses a load balancer should take the host out of rotation for (the health view answers 503).
UNAVAILABLE = (FAILING, LAGGING)


@dataclass(frozen=True)
class ReplicaHealth:
    """How a read replica follows the bucket: the point its file holds, and how fresh that is."""

    #: The point of the bucket's history the file holds, or None before the follower's first look.
    point: str | None
    #: When the writer flushed that point (Unix time), or None.
    flushed_at: float | None
    #: Seconds since the follower last found the bucket held nothing newer, or None before its first look.
    lag_seconds: float | None
    #: The lag past which the replica reports `LAGGING`.
    max_lag_seconds: float
    poll_seconds: float

    @property
    def rounded_lag(self) -> float | None:
        return None if self.lag_seconds is None else round(self.lag_seconds, 3)

    def as_json(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "flushed_age_seconds": None if self.flushed_at is None else round(time.time() - self.flushed_at, 3),
            "lag_seconds": self.rounded_lag,
            "max_lag_seconds": self.max_lag_seconds,
            "poll_seconds": self.poll_seconds,
        }


@dataclass(frozen=True)
class EngineHealth:
    """The engine's state as a monitor or an operator needs it."""

    status: str
    #: Why this host stopped shipping (another host took the bucket over), or None.
    fenced: str | None
    #: The error of the last failed flush (the fence, when fenced), or None.
    last_error: str | None
    #: The snapshot the bucket's current state is: the generation the host last shipped, else the one it loaded.
    current_snapshot: str | None
    #: When the bucket last held everything of the host's data (Unix time), or None.
    last_good_at: float | None
    #: When the host last uploaded a snapshot (Unix time), or None.
    last_upload_at: float | None
    #: This process on its host: ``replicator``, ``member`` or ``read-only``.
    role: str = "replicator"
    #: The host's replicator, as it announced itself: ``(host name, pid)``; None for a read-only view.
    replicator: tuple[str, int] | None = None
    #: Copies of the host's database set aside when the replicator started: ``(path, why)``.
    set_aside: tuple[tuple[str, str], ...] = ()
    #: On a read replica: how it follows the bucket (see `ReplicaHealth`); None elsewhere.
    replica: ReplicaHealth | None = None

    @property
    def last_good_age_seconds(self) -> float | None:
        return None if self.last_good_at is None else round(time.time() - self.last_good_at, 3)

    @property
    def last_upload_age_seconds(self) -> float | None:
        return None if self.last_upload_at is None else round(time.time() - self.last_upload_at, 3)

    def as_json(self) -> dict[str, Any]:
        """The fields the health view and ``buckethead status --json`` report."""
        return {
            "status": self.status,
            "fenced": self.fenced,
            "last_error": self.last_error,
            "current_snapshot": self.current_snapshot,
            "last_upload_age_seconds": self.last_upload_age_seconds,
            "last_good_snapshot_age_seconds": self.last_good_age_seconds,
            "replica_lag_seconds": None if self.replica is None else self.replica.rounded_lag,
            "role": self.role,
            "replicator": None if self.replicator is None else dict(zip(("host", "pid"), self.replicator, strict=True)),
            "set_aside": [{"path": path, "reason": why} for path, why in self.set_aside],
            "replica": None if self.replica is None else self.replica.as_json(),
        }


def engine_health(engine: BucketSQLite) -> EngineHealth:
    """``engine``'s health: `FAILING` when fenced, `DEGRADED` after a failed flush or with copies set aside, else
    `OK`."""
    fenced = engine.fenced
    error = engine.last_error
    upload = engine.last_upload
    restored = engine.restored_from
    info = engine.replicator_info()
    set_aside = tuple(engine.set_aside)
    last_good_at = upload.at if upload is not None else (restored.created_at if restored is not None else None)
    if upload is not None and upload.generation:
        current: str | None = upload.generation
    elif restored is not None:
        current = restored.name
    else:
        current = None
    if engine.replica and info is not None:
        current = info.current_snapshot  # the point the replica's file holds, as its follower announced
    elif engine.role == "member" and info is not None:
        # What the host's replicator announced: the generation it restored or last shipped, and when the host's
        # database last equalled the bucket's copy (state.json), if it has not uploaded since it started.
        current = info.current_snapshot or current
        if last_good_at is None:
            state = engine.host.state()
            last_good_at = state.recorded_at if state is not None and state.generation == current else None
    replica = _replica_health(engine)
    if fenced is not None:
        status = FAILING
    elif replica is not None and (replica.lag_seconds is None or replica.lag_seconds > replica.max_lag_seconds):
        status = LAGGING
    elif error is not None or set_aside:
        status = DEGRADED
    else:
        status = OK
    return EngineHealth(
        status=status,
        fenced=None if fenced is None else str(fenced),
        last_error=None if error is None else str(error),
        current_snapshot=current,
        last_good_at=last_good_at,
        last_upload_at=upload.at if upload is not None else None,
        role=engine.role,
        replicator=None if info is None else (info.host, info.pid),
        set_aside=set_aside,
        replica=replica,
    )


def _replica_health(engine: BucketSQLite) -> ReplicaHealth | None:
    if not engine.replica:
        return None
    info = engine.replicator_info()
    return ReplicaHealth(
        point=info.current_snapshot if info is not None else None,
        flushed_at=info.applied_at if info is not None else None,
        lag_seconds=engine.replica_lag,
        max_lag_seconds=engine.max_lag,
        poll_seconds=engine.poll_seconds,
    )
