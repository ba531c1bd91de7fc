"""``manage.py buckethead status``: where the state lives, its snapshots, writer, replicator and database."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import CommandError, CommandParser

from ... import runtime
from ...engine import BucketHeadError, BucketSQLite, SnapshotConfig, SnapshotEntry, WriterLease
from ...engine.database import LocalDir
from ...engine.host import ReplicatorInfo
from ...engine.record import LEGACY
from ...health import DEGRADED, LAGGING, EngineHealth, ReplicaHealth, engine_health
from .. import display
from ..bucket import Bucket, database_path, holder
from .base import Options, Subcommand, SubparsersAction, add_parser
from .describe import counted, entry_data, latest_snapshot, lease_data


class Status(Subcommand):
    """`manage.py buckethead status`: where the state lives, its snapshots, writer, replicator and database."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        add_parser(
            commands,
            parser,
            "status",
            "Where the state lives, the current snapshot and retention, the live writer, the host's replicator and "
            "database, copies set aside, and this process's role and health.",
            self.status,
        )

    def status(self, options: Options) -> None:
        """The configuration without secrets, the bucket's snapshots and writer, the host, and this process."""
        bucket = self._bucket()
        config = bucket.config
        latest, unreadable = latest_snapshot(bucket)  # first: an unreachable bucket fails here, at once
        kept = sum(1 for g in bucket.history.generations() if g.has_record)
        retention = bucket.snapshot_config()
        found = bucket.lease()
        engine, detached = self._status_engine(bucket)
        lease = bucket.lease() if engine is not None else found
        expired = found if found is not None and not found.live and found != lease else None
        host = bucket.host_engine()
        info = host.replicator_info()
        local = host.local
        set_aside = host.set_aside
        decision = runtime.decision()
        attached = engine is not None and not engine.read_only
        stats = engine.stats() if engine is not None else None
        health = engine_health(engine) if engine is not None and (attached or engine.replica) else None
        data = {
            "backend": "local" if config.is_local else "s3",
            "location": bucket.describe(),
            "bucket": config.bucket or None,
            "local_path": str(config.local_path) if config.local_path else None,
            "endpoint_url": config.endpoint_url,
            "region": config.region,
            "snapshot_key": config.key,
            "files_prefix": config.files_prefix,
            "latest_snapshot": None if latest is None else entry_data(latest),
            "latest_snapshot_error": unreadable,
            "generations": {
                "count": kept,
                "keep_snapshots": retention.keep_snapshots,
                "keep_snapshots_max_age": retention.keep_max_age_seconds,
                "keep_every_flush": retention.keep_every_flush_seconds,
                "keep_daily": retention.keep_daily,
                "keep_previous": retention.keep_previous,
            },
            "writer": None if lease is None else lease_data(lease, bucket),
            "expired_lease": None if expired is None else lease_data(expired, bucket),
            "replicator": None if info is None else _replicator_data(info, this_process=_is_replicator(engine)),
            "host_database": {
                "path": str(database_path(local)),
                "directory": str(local.path),
                "filesystem": local.filesystem,
                "ram_backed": local.ram_backed,
                "reason": local.reason,
            },
            "set_aside": [{"path": path, "why": why} for path, why in set_aside],
            "health": None if health is None else health.as_json(),
            "process": {
                "pid": os.getpid(),
                "role": None if engine is None else engine.role,
                "reason": decision.reason if decision else None,
                "not_attached": detached,
                "writes": attached,
            },
            "database": stats,
        }
        this_process = _is_replicator(engine)
        lines = [
            ("Backend", data["backend"]),
            ("Bucket", bucket.describe() + (f" (region {config.region})" if config.region else "")),
            ("Snapshot key", config.key),
            ("Files prefix", config.files_prefix),
            *_latest_lines(latest, unreadable),
            ("Generations", _retention_line(kept, retention)),
            ("Writer", _writer_line(bucket, lease, expired)),
            ("Follower" if bucket.replica else "Replicator", _replicator_line(info, this_process=this_process)),
        ]
        if health is not None and health.replica is not None:
            lines.append(("Read replica", _replica_line(health.replica)))
        if health is not None:
            lines.append(("Health", _health_line(health)))
        lines.append(("This process", _process_line(engine, detached, decision.reason if decision else None)))
        lines += [
            ("Host database", str(database_path(local))),
            ("", _local_line(local)),
        ]
        if stats is not None:
            copy = ""
            if engine is not None and engine.replica:
                copy = " (the replica's copy, which follows the bucket)"
            elif engine is not None and engine.read_only:
                copy = " (a read-only copy of the latest snapshot)"
            lines.append(
                (
                    "Database",
                    f"{display.size(stats['database_bytes'])}, {stats['kv_entries']} KV entries, "
                    f"{stats['files']} files{copy}",
                )
            )
        text = [f"{label:<17}{value}".rstrip() for label, value in lines]
        if set_aside:
            text += [self.style.ERROR(line) for line in _set_aside_lines(set_aside)]
        self._emit(options, data, text)

    def _status_engine(self, bucket: Bucket) -> tuple[BucketSQLite | None, str | None]:
        """This process's engine, attached to the host's database as any process is; or None and why not.

        While a writer on another host holds the bucket, this host is not the
        writer host and nothing is attached; a bucket no engine can start on
        (its current snapshot fails verification) is reported, not raised.
        """
        lease = None if bucket.replica else bucket.other_host_writer()
        if lease is not None:
            return None, (
                f"a live writer on another host holds the bucket ({lease.holder}): changes from this host are "
                "refused, and reads show a copy of the latest snapshot"
            )
        try:
            return bucket.attach(), None
        except CommandError:
            raise
        except BucketHeadError as exc:
            return None, str(exc)


def _latest_lines(latest: SnapshotEntry | None, unreadable: str | None) -> list[tuple[str, str]]:
    if unreadable is not None:
        return [("Latest snapshot", f"cannot be read: {unreadable}")]
    if latest is None:
        return [("Latest snapshot", "none yet: nothing has been flushed to this bucket")]
    if latest.kind == LEGACY:
        what = f"{latest.name}: a buckethead 0.4.x snapshot, which the next writer adopts"
    else:
        what = f"generation {latest.name}" + (" (current)" if latest.current else "")
    proof = "signed" if latest.signed else "unsigned"
    return [
        ("Latest snapshot", f"{what}, {display.size(latest.size)}, written {display.when(latest.last_modified)}"),
        ("", proof + (f", sha256 {latest.sha256}" if latest.sha256 else "")),
    ]


def _retention_line(kept: int, config: SnapshotConfig) -> str:
    rule = f"retention keeps the newest {config.generations_kept}"
    if config.keep_max_age_seconds is not None:
        rule += f", any younger than {display.duration(config.keep_max_age_seconds)}"
    if config.keep_daily:
        rule += f", the newest of each of {config.keep_daily} days"
    every = config.keep_every_flush_seconds
    points = "every flush a point" if every is None else f"every flush of the last {display.duration(every)} a point"
    return f"{kept} in the bucket; {rule} ({points}, and every labelled snapshot)"


def _health_line(health: EngineHealth) -> str:
    if health.fenced is not None:
        return f"FENCED: {health.fenced}"
    if health.status == LAGGING and health.replica is not None:
        error = f" (its last poll failed: {health.last_error})" if health.last_error else ""
        return (
            f"lagging: the follower has not found the bucket's newest flush for more than "
            f"{display.duration(health.replica.max_lag_seconds)}{error}; it serves what it has"
        )
    if health.status == DEGRADED:
        age = (
            f"the bucket's copy is from {display.relative(health.last_good_at)}"
            if health.last_good_at is not None
            else "nothing has reached the bucket yet"
        )
        return f"degraded: the last flush failed ({health.last_error}); {age}"
    return "ok"


def _writer_line(bucket: Bucket, lease: WriterLease | None, expired: WriterLease | None) -> str:
    if lease is None or not lease.live:
        gone = expired or lease
        if gone is None:
            return "none: no process holds the writer lease"
        return (
            f"none live: the lease of {gone.holder} expired {display.relative(gone.expires_at)} without being "
            "released (that process stopped abruptly)"
        )
    if bucket.is_own(lease):
        who = "this process (the host's replicator): "
    elif bucket.is_this_host(lease):
        who = "this host's replicator: "
    else:
        who = "another host: "
    line = who + holder(lease)
    if expired is not None:
        line += (
            f"; it took over the lease of {expired.holder}, which had expired {display.relative(expired.expires_at)}"
            " without being released (that process stopped abruptly)"
        )
    return line


def _replica_line(replica: ReplicaHealth) -> str:
    if replica.point is None or replica.lag_seconds is None:
        return f"following the bucket, every {display.duration(replica.poll_seconds)}; no look at it yet"
    flushed = "" if replica.flushed_at is None else f", flushed by the writer {display.relative(replica.flushed_at)}"
    return (
        f"holds {replica.point}{flushed}; lag {replica.lag_seconds:.1f}s (the follower looks every "
        f"{display.duration(replica.poll_seconds)}; past {display.duration(replica.max_lag_seconds)} the health "
        "check answers lagging)"
    )


def _is_replicator(engine: BucketSQLite | None) -> bool:
    return engine is not None and (engine.role == "replicator" or engine.follower is not None)


def _replicator_data(info: ReplicatorInfo, *, this_process: bool) -> dict[str, Any]:
    return {
        "host": info.host,
        "pid": info.pid,
        "started_at": display.utc(info.started_at),
        "running": info.running,
        "ready": info.ready,
        "this_process": this_process,
    }


def _replicator_line(info: ReplicatorInfo | None, *, this_process: bool) -> str:
    if info is None:
        return "none yet: no process of the site has run on this host"
    who = f"{info.host}:{info.pid}"
    if not info.running:
        return (
            f"none running: the last was {who}, started {display.when(info.started_at)}; the next process of the "
            "site to start here takes the role"
        )
    state = "" if info.ready else ", still making the database ready"
    return f"{who}{' (this process)' if this_process else ''}, running since {display.when(info.started_at)}{state}"


def _process_line(engine: BucketSQLite | None, detached: str | None, reason: str | None) -> str:
    how = f" ({reason})" if reason else ""
    if engine is None:
        return f"pid {os.getpid()}, not attached to the host's database{how}: {detached}"
    role = engine.role
    what = {
        "replicator": "no other process of the site runs on this host, so this one restores and ships the "
        "database until it exits",
        "member": "it shares the host's database; the replicator ships what it changes",
        "read-only": "it reads a copy of the latest snapshot and changes nothing",
        "replica": "it reads the host's copy, which follows what the writer flushes; writes are refused",
    }[role]
    return f"pid {os.getpid()}, {role}{how}: {what}"


def _local_line(local: LocalDir) -> str:
    where = "in RAM" if local.ram_backed else "on disk, not in RAM (`manage.py check` says how to move it)"
    return f"{local.filesystem}, {where}; chosen: {local.reason}"


#: Why a copy was set aside, from the first word of its name, for copies the replicator that is running did not make.


def _set_aside_lines(set_aside: list[tuple[str, str]]) -> list[str]:
    lines = [
        f"{'SET ASIDE':<17}{counted(len(set_aside), 'copy', 'copies')} of the host's database, kept when the "
        "bucket's generation was restored in their place:"
    ]
    lines += [f"{'':<17}{path}: {why}" for path, why in set_aside]
    lines.append(
        f"{'':<17}Compare a copy with the bucket's state, and restore it (`manage.py buckethead restore --file "
        "PATH`) if it holds what you need; remove it once it is not needed."
    )
    return lines
