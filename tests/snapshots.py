"""Reading snapshots back from a bucket in tests, through the engine's own catalogue."""

from __future__ import annotations

import tempfile
from pathlib import Path

from buckethead_django.engine import History
from buckethead_django.engine.history import LATEST
from buckethead_django.engine.objectstore import ObjectStore
from buckethead_django.engine.record import SnapshotRecord

KEY = "bucketsqlite/snap.db"


def snapshot_bytes(store: ObjectStore, name: str = LATEST, key: str = KEY) -> bytes:
    """The database image of the snapshot called ``name``, after every check but the signature."""
    history = History(store, key)
    entry = history.find(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.db"
        history.fetch(entry.record, path, keys=(), deltas=entry.deltas)
        return path.read_bytes()


def current_record(store: ObjectStore, key: str = KEY) -> SnapshotRecord | None:
    """The committed generation's record, or None before the first flush."""
    current = History(store, key).current()
    return current.record if current is not None else None
