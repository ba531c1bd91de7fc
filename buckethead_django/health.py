"""How well the process's engine is doing, in one place for the health view, the admin and ``buckethead status``.

- ``ok``: flushes succeed (or nothing needed flushing yet).
- ``degraded``: the last flush failed. The site keeps working from memory and
  the change stays pending; the bucket holds the last good snapshot, whose
  age says how much a crash would lose now.
- ``failing``: this process was fenced off. Another writer took the bucket
  over, so this one will never flush again; it keeps serving from memory,
  but nothing it changes reaches the bucket. Only stopping it helps.

Everything here is read from the engine's memory: a health check costs no
request to the bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .engine import BucketSQLite

OK, DEGRADED, FAILING = "ok", "degraded", "failing"


@dataclass(frozen=True)
class EngineHealth:
    """The engine's state as a monitor or an operator needs it."""

    status: str
    #: Why this process stopped flushing (another writer took the bucket over), or None.
    fenced: str | None
    #: The error of the last failed flush (the fence, when fenced), or None.
    last_error: str | None
    #: The snapshot the bucket's current state is: the generation this engine last wrote, else the one it loaded.
    current_snapshot: str | None
    #: When the bucket last received a good snapshot of this engine's data (Unix time), or None.
    last_good_at: float | None
    #: When this engine last uploaded a snapshot (Unix time), or None.
    last_upload_at: float | None

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
        }


def engine_health(engine: BucketSQLite) -> EngineHealth:
    """``engine``'s health: `FAILING` when fenced, `DEGRADED` after a failed flush, else `OK`."""
    fenced = engine.fenced
    error = engine.last_error
    upload = engine.last_upload
    restored = engine.restored_from
    if upload is not None and upload.generation:
        current: str | None = upload.generation
    else:
        current = restored.name if restored is not None else None
    last_good_at = upload.at if upload is not None else (restored.created_at if restored is not None else None)
    if fenced is not None:
        status = FAILING
    elif error is not None:
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
    )
