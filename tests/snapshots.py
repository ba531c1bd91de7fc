"""Reading snapshots back from a bucket in tests, through the engine's own catalogue."""

from __future__ import annotations

import tempfile
from pathlib import Path

from buckethead_django.engine import generations
from buckethead_django.engine.objectstore import ObjectStore
from buckethead_django.engine.record import SnapshotRecord

KEY = "bucketsqlite/snap.db"


def snapshot_bytes(store: ObjectStore, name: str = generations.LATEST, key: str = KEY) -> bytes:
    """The database image of the snapshot called ``name``, after every check but the signature."""
    entry = generations.find_snapshot(store, key, name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.db"
        generations.fetch(store, entry.record, path, keys=())
        return path.read_bytes()


def current_record(store: ObjectStore, key: str = KEY) -> SnapshotRecord | None:
    """The committed generation's record, or None before the first flush."""
    current = generations.read_current(store, key)
    return current.record if current is not None else None
