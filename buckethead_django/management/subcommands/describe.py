"""What several subcommands of ``manage.py buckethead`` say alike: snapshots, leases, counts, advice."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from ...engine import BucketSQLite, SnapshotCorrupt, SnapshotEntry, WriterLease
from ...engine.history import LATEST
from ...engine.snapshot import validate
from .. import display
from ..bucket import Bucket, as_of

#: The Django database backend on the host's database.
DATABASE_BACKEND = "buckethead_django.db"
_BH_KEY = re.compile(r"^[0-9a-f]{64}$")
RESTORE_INSTEAD = (
    "Run this command on that host (its processes share the database its replicator ships), or restore from "
    "the Django admin that host serves (BucketHead > Snapshots > Restore), or stop the server there and run this "
    "command again."
)
CHANGE_INSTEAD = (
    "Run this command on that host, or make the change through the site it serves, or stop the server there and "
    "run this command again."
)


@dataclasses.dataclass(frozen=True)
class Damage:
    """The current snapshot a restore had to replace without loading it: its generation, the object at fault, why."""

    name: str | None
    key: str
    reason: str


def check_sqlite_file(path: Path) -> str:
    """Describe ``path`` if it is a whole SQLite database that passes integrity_check, else refuse."""
    try:
        validate(path, str(path))
        size = path.stat().st_size
    except SnapshotCorrupt as exc:
        raise CommandError(f"{path} is not a valid SQLite database ({exc.reason}). Nothing was changed.") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}. Nothing was changed.") from None
    return f"the file {path} ({display.size(size)})"


def latest_snapshot(bucket: Bucket) -> tuple[SnapshotEntry | None, str | None]:
    """The snapshot a writer would start from (None: none yet), or why the bucket's current record is unreadable."""
    try:
        bucket.history.current()
    except SnapshotCorrupt as exc:
        return None, str(exc)
    try:
        return bucket.history.find(LATEST), None
    except KeyError:
        return None, None


def as_of_clause(engine: BucketSQLite) -> str:
    moment = as_of(engine)
    return f" as of the snapshot written {display.when(moment)}" if moment else ""


def entry_line(entry: SnapshotEntry) -> str:
    return f"snapshot {entry.name!r}, {display.size(entry.size)}, written {display.when(entry.last_modified)}"


def lease_data(lease: WriterLease, bucket: Bucket) -> dict[str, Any]:
    return {
        "holder": lease.holder,
        "host": lease.host,
        "pid": lease.pid,
        "started_at": display.utc(lease.started_at),
        "renewed_at": display.utc(lease.renewed_at),
        "expires_at": display.utc(lease.expires_at),
        "live": lease.live,
        "this_process": bucket.is_own(lease),
        "this_host": bucket.is_this_host(lease),
    }


def counted(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def entry_data(entry: SnapshotEntry) -> dict[str, Any]:
    """A snapshot as ``--json`` shows it."""
    return {
        "name": entry.name,
        "kind": entry.kind,
        "current": entry.current,
        "key": entry.key,
        "size": entry.size,
        "last_modified": entry.last_modified,
        "signed": entry.signed,
        "sha256": entry.sha256 or None,
        "writer": entry.record.writer or None,
    }


def json_entries(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its SnapshotEntry values as dicts, for json.dumps."""
    return {k: entry_data(v) if isinstance(v, SnapshotEntry) else v for k, v in data.items()}
