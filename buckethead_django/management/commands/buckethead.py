"""``manage.py buckethead <subcommand>``: see, snapshot, restore, import and inspect BucketHead's state.

stdout carries the answer — text for a person, or JSON with ``--json`` — and
stderr carries notes (how old the data shown is), prompts and progress bars,
so the answer can be piped. Every failure is one line and a non-zero exit
status, and leaves the bucket as it was. The command is a process of the
site like any other: on the writer host it reads and writes the host's
database, and changes follow the rule of `buckethead_django.management.bucket`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from django.conf import settings as django_settings
from django.core.management.base import BaseCommand, CommandError, CommandParser, DjangoHelpFormatter
from django.core.serializers.json import DjangoJSONEncoder

from ... import runtime
from ...engine import (
    BucketHeadError,
    BucketSQLite,
    CurrentSnapshotCorrupt,
    FileInfo,
    FileStore,
    PreconditionFailed,
    SnapshotConfig,
    SnapshotCorrupt,
    SnapshotEntry,
    WriterConflict,
    WriterLease,
)
from ...engine.config import DEFAULT_GC_GRACE_SECONDS
from ...engine.database import LocalDir
from ...engine.history import LATEST, timestamped_label, validate_label
from ...engine.host import ReplicatorInfo
from ...engine.record import LABELLED, LEGACY
from ...engine.snapshot import validate
from ...health import DEGRADED, EngineHealth, engine_health
from .. import display, importing
from ..bucket import WRITER_RUNNING, Bucket, as_of, database_path, holder, refuse
from ..progress import ProgressBar

Options = dict[str, Any]
Handler = Callable[[Options], None]

#: Exit status of a command line that argparse cannot make sense of.
USAGE_ERROR = 2
#: The Django database backend on the host's database.
DATABASE_BACKEND = "buckethead_django.db"
_BH_KEY = re.compile(r"^[0-9a-f]{64}$")
_RESTORE_INSTEAD = (
    "Run this command on that host (its processes share the database its replicator ships), or restore from "
    "the Django admin that host serves (BucketHead > Snapshots > Restore), or stop the server there and run this "
    "command again."
)
_CHANGE_INSTEAD = (
    "Run this command on that host, or make the change through the site it serves, or stop the server there and "
    "run this command again."
)


@dataclasses.dataclass(frozen=True)
class Damage:
    """The current snapshot a restore had to replace without loading it: its generation, the object at fault, why."""

    name: str | None
    key: str
    reason: str


class TerseParser(CommandParser):
    """Report a usage mistake in one line that points at ``--help``, instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        if not self.called_from_command_line:
            super().error(message)  # raises CommandError, as for every command run through call_command()
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}. Run `{self.prog} --help` for usage.\n")


class Command(BaseCommand):
    help = (
        "Operate BucketHead: status, flush, snapshot, history, restore, import an existing SQLite database, and "
        "inspect KV entries and files. Run `manage.py buckethead <subcommand> --help` for each."
    )
    # It must run on a project whose checks fail, to show what is wrong; BucketHead's settings are checked here.
    requires_system_checks: list[str] = []  # noqa: RUF012 - Django's own attribute, declared as in Django
    stealth_options = ("stdin",)

    # -- the command line ----------------------------------------------------------------

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = TerseParser  # Django builds the parser itself; only how it reports errors differs
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        commands = _subcommands(parser, "subcommand")
        _add(
            commands,
            parser,
            "status",
            "Where the state lives, the current snapshot and retention, the live writer, the host's replicator and "
            "database, copies set aside, and this process's role and health.",
            self.status,
        )
        snapshot = _add(
            commands,
            parser,
            "snapshot",
            "Take a point-in-time snapshot now. On the writer host it flushes the host's database; while a writer on "
            "another host holds the bucket it keeps a labelled copy of the latest durable snapshot instead. "
            "Labelled snapshots are never removed.",
            self.snapshot,
        )
        snapshot.add_argument(
            "--label", metavar="NAME", help="Keep the snapshot under this name (default: manual-<UTC time>)."
        )
        _add(
            commands,
            parser,
            "flush",
            "Make the host's replicator (the running server's, or this process when no server runs) ship what "
            "changed to the bucket now, whatever the flush interval, and report what it did.",
            self.flush,
        )
        history = _add(
            commands,
            parser,
            "history",
            "Every restorable snapshot: the generations, newest first (the current one marked), then labelled ones.",
            self.history,
        )
        history.add_argument(
            "--points",
            action="store_true",
            help="List every restorable point instead: each generation's base and each flush after it.",
        )
        restore = _add(
            commands,
            parser,
            "restore",
            "Make a snapshot (or a local SQLite file) the live state of the host's database, or download one with "
            "--to-file. The state it replaces is kept as a labelled snapshot. Refused while a writer on another host "
            "holds the bucket.",
            self.restore,
        )
        restore.add_argument(
            "snapshot", nargs="?", metavar="SNAPSHOT", help="A name shown by `history`, or latest or previous."
        )
        restore.add_argument("--file", type=Path, metavar="PATH", help="Restore this local SQLite file instead.")
        restore.add_argument(
            "--at",
            metavar="TIME",
            help="Restore the newest point flushed at or before TIME: an ISO 8601 time (UTC unless it names a "
            "zone), or an age such as --at=-90s, --at=-10m, --at=-2h or --at=-1d.",
        )
        restore.add_argument(
            "--to-file",
            type=Path,
            metavar="PATH",
            help="Only download SNAPSHOT (default: latest) to a new SQLite file, for offline inspection.",
        )
        _add_yes(restore)
        imports = _add(
            commands,
            parser,
            "import-database",
            "Copy every table of an existing SQLite database (the db.sqlite3 of a site that used Django's sqlite3 "
            "backend: schema, rows, indexes, triggers, views) into the host's database, and flush it to the bucket.",
            self.import_database,
        )
        imports.add_argument("path", type=Path, metavar="PATH", help="The SQLite database file to import.")
        imports.add_argument(
            "--replace",
            action="store_true",
            help="Overwrite tables (and indexes, triggers, views) of the same name that already hold rows in the "
            "host's database. Without it the import is refused, naming them.",
        )
        imports.add_argument(
            "--include-buckethead-tables",
            action="store_true",
            help="Also import BucketHead's own tables (bh_kv, filestore, bh_file_names) found in PATH; they are "
            "left out by default. To make a whole BucketHead database the live state, use `restore --file`.",
        )
        _add_yes(imports)

        kv = _add(commands, parser, "kv", "Inspect and change KV entries.")
        kv_commands = _subcommands(kv, "kv_command")
        kv_list = _add(kv_commands, kv, "list", "Keys, their sizes and expiry times, sorted.", self.kv_list)
        kv_list.add_argument("--prefix", default="", help="Only keys starting with this text.")
        kv_list.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="At most N keys (100).")
        kv_get = _add(kv_commands, kv, "get", "Print one value (as UTF-8 text unless told otherwise).", self.kv_get)
        kv_get.add_argument("key", metavar="KEY")
        encoding = kv_get.add_mutually_exclusive_group()
        for name, what in (("bytes", "raw bytes"), ("hex", "hexadecimal"), ("base64", "base64")):
            encoding.add_argument(
                f"--{name}", dest="encoding", action="store_const", const=name, help=f"Print the value as {what}."
            )
        kv_set = _add(kv_commands, kv, "set", "Set a key to a text value and flush.", self.kv_set)
        kv_set.add_argument("key", metavar="KEY")
        kv_set.add_argument("value", metavar="VALUE")
        kv_set.add_argument("--ttl", type=_positive_float, metavar="SECONDS", help="Expire after SECONDS.")
        kv_delete = _add(kv_commands, kv, "delete", "Delete a key and flush.", self.kv_delete)
        kv_delete.add_argument("key", metavar="KEY")

        files = _add(commands, parser, "files", "Inspect stored files and collect unreferenced blobs.")
        files_commands = _subcommands(files, "files_command")
        files_list = _add(
            files_commands, files, "list", "Stored blobs, newest first, with their names.", self.files_list
        )
        files_list.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="At most N files (100).")
        files_get = _add(files_commands, files, "get", "Download one stored file.", self.files_get)
        files_get.add_argument("bh_key", metavar="BH_KEY", help="The file's bh-key (or its storage name).")
        files_get.add_argument("dest", type=Path, metavar="DEST", help="A new file, or a directory to put it in.")
        gc = _add(files_commands, files, "gc", "Delete blobs that no stored file refers to.", self.files_gc)
        gc.add_argument("--dry-run", action="store_true", help="Only report what would be deleted.")
        gc.add_argument(
            "--grace-seconds",
            type=_non_negative_float,
            default=DEFAULT_GC_GRACE_SECONDS,
            metavar="N",
            help="Keep unreferenced blobs younger than N seconds, which a writer may not have recorded yet "
            f"({DEFAULT_GC_GRACE_SECONDS:g}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._opened: list[Bucket] = []
        logs = logging.getLogger("buckethead_django")
        level = logs.level
        if options["verbosity"] == 0:
            # Only warnings and errors: on the command line for the rest of the run, its final flush at exit too.
            logs.setLevel(max(logging.WARNING, level))
        try:
            options["handler"](options)
        except CurrentSnapshotCorrupt as exc:  # no engine can load the current snapshot; the message says what to do
            raise CommandError(str(exc)) from exc
        except SnapshotCorrupt as exc:
            raise CommandError(
                f"{exc} To restore a good snapshot with this command: `manage.py buckethead history`, then "
                "`manage.py buckethead restore NAME`."
            ) from exc
        except WriterConflict as exc:  # a writer took the lease between the command's check and its start
            raise CommandError(str(exc), returncode=WRITER_RUNNING) from exc
        except BucketHeadError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:  # a local file or directory that cannot be read or written
            raise CommandError(str(exc)) from exc
        finally:
            for bucket in self._opened:
                bucket.close()
            if not self._called_from_command_line:
                logs.setLevel(level)

    def _bucket(self) -> Bucket:
        """The bucket, and the host this process is on; what it opened is closed when the subcommand ends."""
        bucket = Bucket.open()
        self._opened.append(bucket)
        return bucket

    # -- status and history ----------------------------------------------------------------

    def status(self, options: Options) -> None:
        """The configuration without secrets, the bucket's snapshots and writer, the host, and this process."""
        bucket = self._bucket()
        config = bucket.config
        latest, unreadable = _latest(bucket)  # first: an unreachable bucket fails here, at once
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
        health = engine_health(engine) if attached else None
        data = {
            "backend": "local" if config.is_local else "s3",
            "location": bucket.describe(),
            "bucket": config.bucket or None,
            "local_path": str(config.local_path) if config.local_path else None,
            "endpoint_url": config.endpoint_url,
            "region": config.region,
            "snapshot_key": config.key,
            "files_prefix": config.files_prefix,
            "latest_snapshot": None if latest is None else _entry_data(latest),
            "latest_snapshot_error": unreadable,
            "generations": {
                "count": kept,
                "keep_snapshots": retention.keep_snapshots,
                "keep_snapshots_max_age": retention.keep_max_age_seconds,
                "keep_every_flush": retention.keep_every_flush_seconds,
                "keep_daily": retention.keep_daily,
                "keep_previous": retention.keep_previous,
            },
            "writer": None if lease is None else _lease_data(lease, bucket),
            "expired_lease": None if expired is None else _lease_data(expired, bucket),
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
        lines = [
            ("Backend", data["backend"]),
            ("Bucket", bucket.describe() + (f" (region {config.region})" if config.region else "")),
            ("Snapshot key", config.key),
            ("Files prefix", config.files_prefix),
            *_latest_lines(latest, unreadable),
            ("Generations", _retention_line(kept, retention)),
            ("Writer", _writer_line(bucket, lease, expired)),
            ("Replicator", _replicator_line(info, this_process=_is_replicator(engine))),
        ]
        if health is not None:
            lines.append(("Health", _health_line(health)))
        lines.append(("This process", _process_line(engine, detached, decision.reason if decision else None)))
        lines += [
            ("Host database", str(database_path(local))),
            ("", _local_line(local)),
        ]
        if stats is not None:
            copy = " (a read-only copy of the latest snapshot)" if engine is not None and engine.read_only else ""
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
        lease = bucket.other_host_writer()
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

    def history(self, options: Options) -> None:
        """Every restorable snapshot: generations newest first (the current one marked), labels, a 0.4.x one."""
        bucket = Bucket.open()
        if options["points"]:
            self._points(options, bucket)
            return
        entries = bucket.history.snapshots()
        if not entries:
            lines = [f"No snapshots yet in {bucket.describe()}."]
        else:
            rows = [
                (
                    e.name,
                    "current" if e.current else e.kind,
                    display.size(e.size),
                    display.when(e.last_modified),
                    e.sha256[:12] or "-",
                    "signed" if e.signed else "unsigned",
                )
                for e in entries
            ]
            lines = display.table(("NAME", "KIND", "SIZE", "WRITTEN", "SHA256", "SIGNATURE"), rows)
            self._note(
                options,
                "`latest` names the current generation and `previous` the one before it; restore any of these "
                "with `manage.py buckethead restore NAME`.",
            )
        self._emit(options, [_entry_data(e) for e in entries], lines)

    def _points(self, options: Options, bucket: Bucket) -> None:
        points = bucket.history.points()
        rows = [
            (
                p.name,
                "current" if p.current else ("base" if p.deltas == 0 else "flush"),
                display.when(display.utc(p.at)),
            )
            for p in points
        ]
        lines = (
            display.table(("POINT", "KIND", "WRITTEN"), rows) if rows else [f"No snapshots yet in {bucket.describe()}."]
        )
        if rows:
            self._note(
                options,
                "Restore a point with `manage.py buckethead restore POINT`, or the newest one at or before a time "
                "with `manage.py buckethead restore --at TIME`.",
            )
        data = [
            {
                "name": p.name,
                "generation": p.generation.name,
                "deltas": p.deltas,
                "at": display.utc(p.at),
                "current": p.current,
            }
            for p in points
        ]
        self._emit(options, data, lines)

    # -- snapshot --------------------------------------------------------------------------

    def snapshot(self, options: Options) -> None:
        """Flush the host's database on the writer host; else keep a labelled copy of the latest durable snapshot."""
        label: str | None = options["label"]
        if label is not None:
            try:
                validate_label(label)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        bucket = self._bucket()
        if label is not None:
            self._refuse_existing_label(bucket, label)
        lease = bucket.other_host_writer()
        if lease is None:
            engine = bucket.attach()
            if engine.read_only:
                raise CommandError(f"{engine.read_only_reason} Nothing was changed.")
            if _latest(bucket) == (None, None) and not engine.dirty:
                raise CommandError(
                    f"there is no snapshot in {bucket.describe()} yet, and nothing has been written to the host's "
                    "database: there is nothing to snapshot"
                )
            size = engine.stats()["database_bytes"]
            with self._progress(options, "Uploading the snapshot", size) as bar:
                entry = engine.snapshot(label or _default_label(), progress=bar)
            source = bucket.history.find(LATEST)
            lines = [
                f"Flushed the host's database to {bucket.describe()} as generation {source.name}, and kept it as "
                f"{_entry_line(entry)}."
            ]
            data = {"snapshot": entry, "flushed": True, "source": source, "writer": None}
        else:
            try:
                source = bucket.history.find(LATEST)
            except KeyError:
                raise CommandError(
                    f"there is no snapshot in {bucket.describe()} yet, so there is nothing to copy; "
                    "the writer's first flush makes one"
                ) from None
            entry = _copy_to_label(bucket, source, label or _default_label())
            why = (
                f"A live writer on another host holds the bucket ({lease.holder}), and this process must not "
                f"overwrite its data: the copy is of the latest durable snapshot, {source.name}, written "
                f"{display.relative(source.last_modified)}. Changes the writer has not flushed since then are "
                "not in it."
            )
            lines = [why, f"Kept it as {_entry_line(entry)}."]
            data = {
                "snapshot": entry,
                "flushed": False,
                "source": source,
                "writer": _lease_data(lease, bucket),
            }
        self._emit(options, _json_entries(data), lines, report=True)

    def flush(self, options: Options) -> None:
        """Ship the host's changes now: asked of the server's replicator when one runs, else done here."""
        bucket = self._bucket()
        bucket.refuse_if_other_host(refuse("flush this host's database", _CHANGE_INSTEAD))
        engine = bucket.attach()
        if engine.read_only:
            raise CommandError(f"{engine.read_only_reason} Nothing was flushed.")
        result = engine.force_flush()
        where = bucket.describe()
        if result.uploaded:
            size = f" ({display.size(result.bytes)})" if result.bytes else ""
            line = f"Flushed the host's changes{size} to {where}: its newest point is now {result.point}."
        else:
            line = f"Nothing to flush: {where} already holds every change of the host's database ({result.point})."
        data = {"uploaded": result.uploaded, "reason": result.reason, "bytes": result.bytes, "point": result.point,
                "generation": result.generation, "at": result.at}  # fmt: skip
        self._emit(options, data, [self.style.SUCCESS(line)], report=True)

    def _refuse_existing_label(self, bucket: Bucket, label: str) -> None:
        """A label names one snapshot for good: never replace it silently."""
        try:
            existing = bucket.history.find(label)
        except KeyError:
            return
        raise CommandError(
            f"a snapshot labelled {label!r} already exists (written {display.when(existing.last_modified)}); "
            "choose another label. Nothing was changed."
        )

    # -- restore -------------------------------------------------------------------------

    def restore(self, options: Options) -> None:
        """Replace the host's database with a snapshot or a local file; or, with --to-file, only download one."""
        name: str | None = options["snapshot"]
        file: Path | None = options["file"]
        if options["at"] is not None:
            if name is not None or file is not None:
                raise CommandError("give a snapshot's name, --at TIME or --file PATH, not several")
            name = self._point_at(self._bucket(), options["at"])
        if options["to_file"] is not None:
            if file is not None:
                raise CommandError("--to-file downloads a snapshot from the bucket; it cannot be used with --file")
            self._download(options, name or LATEST, options["to_file"])
            return
        if (name is None) == (file is None):
            raise CommandError("give either the name of a snapshot (see `manage.py buckethead history`) or --file PATH")
        bucket = self._bucket()
        source: str | Path
        if file is not None:
            described = _check_sqlite_file(file)
            source, total = file, 0
        else:
            entry = self._find_snapshot(bucket, name or "")
            described = _describe(name or "", entry)
            source, total = entry.name, entry.size  # the name resolved now: `previous` must not move meanwhile
        refusal = refuse(f"restore {described}", _RESTORE_INSTEAD)
        bucket.refuse_if_other_host(refusal)  # before asking: the answer would not matter
        if not options["yes"]:
            self._confirm(
                options,
                f"Restore {described} as the live state of {bucket.describe()}?\n"
                "Every process of this host sees it from its next transaction. The state it replaces is kept "
                "first as a labelled snapshot, so this can be undone.",
            )
        damaged: Damage | None = None
        kept: SnapshotEntry | None = None
        with self._progress(options, f"Downloading {source}", total) as bar:
            try:
                with bucket.writer(refusal) as engine:
                    kept = engine.restore(source, progress=bar)
            except CurrentSnapshotCorrupt as damage:
                # No engine can start over the damaged current snapshot, so none can keep it first either.
                damaged = self._recover(bucket, source, described, damage, progress=bar)
            except SnapshotCorrupt as exc:
                raise CommandError(
                    f"{described} cannot be restored: it failed verification ({exc.reason}). Nothing was changed."
                ) from None
        current = bucket.history.find(LATEST)
        if kept is not None:
            after = (
                f"The state it replaced is kept as snapshot {kept.name!r}; to undo: "
                f"manage.py buckethead restore {kept.name}"
            )
        else:
            gone = damaged or Damage(None, "", "")
            after = (
                f"The current snapshot{_named(gone.name)} could not be loaded ({gone.reason}), so it could not be "
                "kept first; it stays in the bucket until retention prunes it."
            )
        then = (
            "the next process of the site to start on this host restores it"
            if damaged is not None
            else "every process of this host reads it from its next transaction"
        )
        lines = [
            self.style.SUCCESS(f"Restored {described} as the live state of {bucket.describe()}."),
            after,
            f"The current generation is now {current.name}: {then}.",
        ]
        data = {
            "restored": str(source),
            "from": "file" if file is not None else "snapshot",
            "kept": kept,
            "current": current,
            "latest_was_damaged": damaged is not None,
            "damaged": None if damaged is None else dataclasses.asdict(damaged),
        }
        self._emit(options, _json_entries(data), lines, report=True)

    def _recover(
        self,
        bucket: Bucket,
        source: str | Path,
        described: str,
        damage: CurrentSnapshotCorrupt,
        *,
        progress: ProgressBar,
    ) -> Damage:
        """Make ``source`` the current generation of a bucket whose current snapshot fails verification."""
        try:
            current = bucket.history.current()
        except SnapshotCorrupt:
            current = None
        name = current.record.name if current is not None and current.record is not None else None
        try:
            bucket.stopped_writer().recover(source, progress=progress)
        except SnapshotCorrupt as exc:
            raise CommandError(
                f"{described} cannot be restored either: it failed verification ({exc.reason}). Nothing was changed."
            ) from None
        return Damage(name, damage.key, damage.reason)

    def _download(self, options: Options, name: str, dest: Path) -> None:
        """Download a snapshot to a new local file; it is verified there and removed if it does not verify."""
        if dest.exists():
            raise CommandError(f"{dest} already exists; choose another path or remove it first. Nothing was written.")
        bucket = self._bucket()
        entry = self._find_snapshot(bucket, name)
        if entry.current and (lease := _live_lease(bucket)) is not None:
            self._note(
                options,
                f"A live writer holds the bucket ({lease.holder}): changes it has not flushed yet are not in this "
                "file.",
            )
        _, keys = bucket.signing_keys()
        with self._progress(options, f"Downloading {name}", entry.size) as bar:
            try:
                bucket.history.fetch(entry.record, dest, keys=keys, progress=bar, deltas=entry.deltas)
            except SnapshotCorrupt as exc:
                raise CommandError(
                    f"snapshot {name!r} failed verification ({exc.reason}); nothing was written to {dest}"
                ) from None
        lines = [f"Downloaded {_describe(name, entry)} to {dest}.", f"Inspect it with: sqlite3 {dest}"]
        self._emit(options, {"snapshot": _entry_data(entry), "path": str(dest)}, lines, report=True)

    def _point_at(self, bucket: Bucket, text: str) -> str:
        """The name of the newest restorable point flushed at or before the time ``text`` gives."""
        try:
            when = display.parse_when(text, now=time.time())
        except ValueError as exc:
            raise CommandError(f"--at {exc}") from None
        try:
            return bucket.history.find_at(when).name
        except KeyError:
            raise CommandError(
                f"no restorable point of {bucket.describe()} was flushed at or before "
                f"{display.when(display.utc(when))}; "
                "`manage.py buckethead history --points` lists them"
            ) from None

    def _find_snapshot(self, bucket: Bucket, name: str) -> SnapshotEntry:
        try:
            return bucket.history.find(name)
        except KeyError:
            names = [e.name for e in bucket.history.snapshots()]
            known = f"restorable snapshots: {', '.join(names)}" if names else "it holds no snapshots yet"
            raise CommandError(f"there is no snapshot named {name!r} in {bucket.describe()}; {known}") from None

    def _confirm(self, options: Options, question: str) -> None:
        """Ask on the terminal; anything but "yes" (or a closed stdin) cancels, changing nothing."""
        stdin = options.get("stdin") or sys.stdin
        self.stderr.write(f"{question}\nType 'yes' to continue: ", style_func=self.style.WARNING, ending="")
        self.stderr.flush()
        try:
            answer = stdin.readline()
        except KeyboardInterrupt:
            answer = ""
        if not (answer and stdin.isatty()):
            self.stderr.write(answer.strip())  # a terminal echoes the answer and the newline; elsewhere, do it here
        if not answer:
            raise CommandError(
                "no confirmation (standard input is closed): nothing was changed. Pass --yes to skip it."
            )
        if answer.strip().lower() not in ("yes", "y"):
            raise CommandError("cancelled: nothing was changed.")

    # -- import-database -----------------------------------------------------------------------

    def import_database(self, options: Options) -> None:
        """Copy every table of an existing SQLite database into the host's database, then flush it."""
        path: Path = options["path"]
        replace: bool = options["replace"]
        include: bool = options["include_buckethead_tables"]
        described = _check_sqlite_file(path)
        bucket = self._bucket()
        refusal = refuse(f"import {described}", _CHANGE_INSTEAD)
        bucket.refuse_if_other_host(refusal)  # before anything is attached or asked
        with bucket.writer(refusal) as engine:
            if path.resolve() == engine.database.path.resolve():
                raise CommandError(f"{path} is the host's database itself: there is nothing to import")
            done = self._import(options, engine, path, described, replace=replace, include=include)
        # The writer's block flushed on leaving it: the imported tables are in the bucket's current generation.
        current = bucket.history.find(LATEST)
        lines = self._import_lines(path, bucket, done, current)
        self._emit(options, _import_data(path, done, current), lines, report=True)

    def _import(
        self, options: Options, engine: BucketSQLite, path: Path, described: str, *, replace: bool, include: bool
    ) -> importing.Plan:
        """Plan, ask, and import in one transaction; on any refusal or error nothing was changed."""
        conn = engine.connect(autocommit=True)
        try:
            importing.attach(conn, path)
            try:
                planned = importing.plan(conn, include_buckethead=include)
                if not planned.tables:
                    left_out = (
                        f" (BucketHead's own tables are left out unless --include-buckethead-tables: "
                        f"{', '.join(planned.left_out)})"
                        if planned.left_out
                        else ""
                    )
                    raise CommandError(f"{path} holds no tables to import{left_out}. Nothing was changed.")
                if planned.conflicts and not replace:
                    raise CommandError(_import_refusal(path, planned.conflicts))
                if not options["yes"]:
                    question = (
                        f"Import {_count(len(planned.tables), 'table')} ({_count(planned.rows, 'row')}) of "
                        f"{described} into the host's database ({engine.database.path}), and flush it to "
                        f"{engine.store.describe()}?"
                    )
                    if planned.conflicts:
                        overwritten = ", ".join(c.describe() for c in planned.conflicts)
                        question += f"\nThese are overwritten with the file's: {overwritten}."
                    self._confirm(options, question)
                try:
                    done = importing.run(conn, replace=replace, include_buckethead=include)
                except importing.ImportRefused as exc:  # another process wrote those tables meanwhile
                    raise CommandError(_import_refusal(path, exc.conflicts)) from None
                done.foreign_key_problems = importing.foreign_key_problems(conn, [t.name for t in done.tables])
            finally:
                importing.detach(conn)
        except sqlite3.Error as exc:
            raise CommandError(f"could not import {path}: {exc}. Nothing was changed.") from None
        finally:
            conn.close()
        return done

    def _import_lines(self, path: Path, bucket: Bucket, done: importing.Plan, current: SnapshotEntry) -> list[str]:
        lines = [
            self.style.SUCCESS(
                f"Imported {_count(len(done.tables), 'table')} ({_count(done.rows, 'row')}), "
                f"{_count(done.count('index'), 'index', 'indexes')}, {_count(done.count('trigger'), 'trigger')} "
                f"and {_count(done.count('view'), 'view')} of {path} into the host's database, and flushed it to "
                f"{bucket.describe()}: {_entry_line(current)}."
            )
        ]
        if done.conflicts:
            lines.append(
                "Overwritten with the file's: " + ", ".join(c.describe() for c in done.conflicts) + " (as they were)."
            )
        if done.left_out:
            lines.append(
                self.style.WARNING(
                    f"Left out BucketHead's own tables of {path}: {', '.join(done.left_out)}. Pass "
                    "--include-buckethead-tables to import them too, or restore the whole file with "
                    "`manage.py buckethead restore --file`."
                )
            )
        if done.foreign_key_problems:
            lines.append(
                self.style.WARNING(
                    "Some imported rows refer to rows that do not exist (PRAGMA foreign_key_check): "
                    + ", ".join(done.foreign_key_problems)
                    + "."
                )
            )
        if not any(db.get("ENGINE") == DATABASE_BACKEND for db in django_settings.DATABASES.values()):
            lines.append(
                f'Next: set DATABASES = {{"default": {{"ENGINE": "{DATABASE_BACKEND}"}}}} so that Django uses '
                "the host's database."
            )
        return lines

    # -- kv ----------------------------------------------------------------------------------

    def kv_list(self, options: Options) -> None:
        engine = self._reader(options)
        keys = engine.kv.keys(options["prefix"])
        shown = keys[: options["limit"]]
        values = engine.kv.get_many_bytes(shown)
        entries = [
            {"key": key, "size": len(values.get(key, b"")), "expires_at": _expires_at(engine, key)} for key in shown
        ]
        rows = [
            (e["key"], display.size(e["size"]), display.relative(e["expires_at"]) if e["expires_at"] else "never")
            for e in entries
        ]
        lines = display.table(("KEY", "SIZE", "EXPIRES"), rows) if rows else []
        more = " (use --limit to see more)" if len(keys) > len(shown) else ""
        lines.append(f"{len(shown)} of {len(keys)} keys{more}")
        data = {"as_of": as_of(engine), "prefix": options["prefix"], "total": len(keys), "keys": entries}
        self._emit(options, data, lines)

    def kv_get(self, options: Options) -> None:
        key: str = options["key"]
        encoding: str = options["encoding"] or "text"
        if encoding == "bytes" and options["json"]:
            raise CommandError("--bytes prints the raw value and cannot be combined with --json; use --base64")
        engine = self._reader(options)
        value = engine.kv.get_bytes(key)
        if value is None:
            raise CommandError(f"there is no KV key {key!r}{_as_of_clause(engine)}")
        if encoding == "bytes":
            self._write_bytes(value)
            return
        if encoding == "text":
            try:
                shown = value.decode("utf-8")
            except UnicodeDecodeError:
                if options["json"]:  # a script gets every value: one that is not text comes as base64, and says so
                    encoding = "base64"
                    shown = base64.b64encode(value).decode("ascii")
                else:
                    raise CommandError(
                        f"the value of {key!r} is not UTF-8 text ({display.size(len(value))}); "
                        "show it with --hex, --base64 or --bytes (with --json it comes base64-encoded)"
                    ) from None
        else:
            shown = value.hex() if encoding == "hex" else base64.b64encode(value).decode("ascii")
        data = {
            "key": key,
            "value": shown,
            "encoding": encoding,
            "size": len(value),
            "expires_at": _expires_at(engine, key),
            "as_of": as_of(engine),
        }
        self._emit(options, data, [shown])

    def _write_bytes(self, value: bytes) -> None:
        buffer = getattr(self.stdout, "buffer", None)  # OutputWrapper passes attributes through to its stream
        if buffer is None:
            raise CommandError("--bytes needs a binary standard output; use --base64 or --hex")
        self.stdout.flush()
        buffer.write(value)
        buffer.flush()

    def kv_set(self, options: Options) -> None:
        key, value, ttl = options["key"], options["value"], options["ttl"]
        bucket = self._bucket()
        with bucket.writer(refuse(f"set KV key {key!r}", _CHANGE_INSTEAD)) as engine:
            engine.kv.set(key, value, ttl=ttl)
            expires_at = _expires_at(engine, key)
        expiry = f", expires {display.relative(expires_at)}" if expires_at else ""
        size = len(value.encode("utf-8"))
        line = f"Set {key!r} ({display.size(size)}{expiry}) and flushed it to {bucket.describe()}."
        data = {"key": key, "size": size, "expires_at": expires_at}
        self._emit(options, data, [self.style.SUCCESS(line)], report=True)

    def kv_delete(self, options: Options) -> None:
        key = options["key"]
        bucket = self._bucket()
        with bucket.writer(refuse(f"delete KV key {key!r}", _CHANGE_INSTEAD)) as engine:
            if not engine.kv.delete(key):
                raise CommandError(f"there is no KV key {key!r} in {bucket.describe()}; nothing was changed")
        line = f"Deleted {key!r} and flushed the change to {bucket.describe()}."
        self._emit(options, {"key": key, "deleted": True}, [self.style.SUCCESS(line)], report=True)

    # -- files ---------------------------------------------------------------------------------

    def files_list(self, options: Options) -> None:
        engine = self._reader(options)
        files = engine.files
        infos = files.list(limit=options["limit"])
        names: dict[str, list[str]] = {}
        for named in files.list_names():
            names.setdefault(named.bh_key, []).append(named.name)
        total = len(files)
        entries = [
            {
                "bh_key": f.bh_key,
                "size": f.size,
                "mime": f.mime,
                "filename": f.filename,
                "created_at": display.utc(f.created_at),
                "names": names.get(f.bh_key, []),
            }
            for f in infos
        ]
        rows = [
            (
                e["bh_key"],
                display.size(e["size"]),
                e["mime"] or "-",
                display.when(e["created_at"]),
                ", ".join(e["names"]) or e["filename"] or "-",
            )
            for e in entries
        ]
        lines = display.table(("BH_KEY", "SIZE", "TYPE", "CREATED", "NAMES"), rows) if rows else []
        more = " (use --limit to see more)" if total > len(entries) else ""
        lines.append(f"{len(entries)} of {total} files{more}")
        self._emit(options, {"as_of": as_of(engine), "total": total, "files": entries}, lines)

    def files_get(self, options: Options) -> None:
        engine = self._reader(options)
        info = _find_file(engine.files, options["bh_key"])
        if info is None:
            raise CommandError(
                f"there is no stored file with bh-key or name {options['bh_key']!r}{_as_of_clause(engine)}"
            )
        dest: Path = options["dest"]
        if dest.is_dir():
            dest = dest / Path(info.filename or info.bh_key).name
        elif not dest.parent.is_dir():
            raise CommandError(
                f"the directory {dest.parent} does not exist; create it first, or give an existing directory or a "
                "new file in one. Nothing was written."
            )
        if dest.exists():
            raise CommandError(f"{dest} already exists; choose another path or remove it first. Nothing was written.")
        with self._progress(options, f"Downloading {dest.name}", info.size) as bar:
            engine.files.get(info.bh_key, dest=dest, progress=bar)
        line = f"Wrote {info.bh_key} ({display.size(info.size)}) to {dest}."
        self._emit(options, {"bh_key": info.bh_key, "size": info.size, "path": str(dest)}, [line], report=True)

    def files_gc(self, options: Options) -> None:
        grace, dry_run = options["grace_seconds"], options["dry_run"]
        if dry_run:
            report = self._reader(options).files.gc(grace, dry_run=True)
        else:
            refusal = refuse(
                "delete unreferenced blobs",
                "Run `manage.py buckethead files gc --dry-run` to see what would go, or run this command on that host.",
                why="Its database may refer to blobs its last snapshot does not record yet; deleting them would lose "
                "files.",
            )
            with self._bucket().writer(refusal) as engine:
                report = engine.files.gc(grace)
        verb = "Would delete" if dry_run else "Deleted"
        lines = [f"{verb} {len(report.deleted)} unreferenced blobs.", *(f"  {key}" for key in report.deleted)]
        if report.kept_recent:
            lines.append(f"Kept {len(report.kept_recent)} unreferenced blobs younger than {grace:g} seconds.")
        if report.missing_objects:
            lines.append(
                f"{len(report.missing_objects)} stored files have no blob in the bucket (they need a decision; "
                "nothing was done about them):"
            )
            lines += (f"  {key}" for key in report.missing_objects)
        self._emit(options, {"dry_run": dry_run, **dataclasses.asdict(report)}, lines, report=not dry_run)

    # -- shared ----------------------------------------------------------------------------

    def _reader(self, options: Options) -> BucketSQLite:
        """The engine to read from, with a note saying how old its data is when it is not the live state."""
        engine = self._bucket().reader()
        if engine.read_only:
            if engine.restored_from is None:
                self._note(options, "The bucket holds no snapshot yet: there is nothing to show.")
            else:
                self._note(
                    options,
                    f"As of the latest snapshot, written {display.when(engine.restored_from.last_modified)}: a "
                    "writer on another host holds the bucket, and changes it has not flushed yet are not shown.",
                )
        return engine

    def _note(self, options: Options, text: str) -> None:
        """A remark for the person at the terminal; scripts reading --json get the same facts as fields."""
        if not options["json"] and options["verbosity"] > 0:
            self.stderr.write(text, style_func=self.style.NOTICE)

    def _progress(self, options: Options, label: str, total: int) -> ProgressBar:
        """A progress bar on the terminal's stderr; none with ``-v 0``."""
        return ProgressBar(self.stderr, label, total, quiet=options["verbosity"] == 0)

    def _emit(self, options: Options, data: Any, lines: Iterable[str], *, report: bool = False) -> None:
        """The result: ``data`` as JSON with ``--json``, else ``lines``. A ``report`` of what a change did is
        left out with ``-v 0``, as Django's own commands do; data that was asked for is always printed."""
        if options["json"]:
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
        elif not (report and options["verbosity"] == 0):
            for line in lines:
                self.stdout.write(line)


# -- argument parsing ------------------------------------------------------------------------


def _subcommands(parser: CommandParser, dest: str) -> argparse._SubParsersAction[TerseParser]:
    return parser.add_subparsers(dest=dest, metavar="SUBCOMMAND", required=True, parser_class=TerseParser)


def _add(
    commands: argparse._SubParsersAction[TerseParser],
    parent: CommandParser,
    name: str,
    summary: str,
    handler: Handler | None = None,
) -> TerseParser:
    """One subcommand; a leaf (one with a handler) also takes ``--json``."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        formatter_class=DjangoHelpFormatter,
        # Django < 5.1 does not hand this down to subparsers; without it their errors would raise tracebacks.
        called_from_command_line=parent.called_from_command_line,
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
        parser.add_argument("--json", action="store_true", help="Print the result as JSON, for scripts.")
        _add_django_options(parser)
    return parser


def _add_django_options(parser: CommandParser) -> None:
    """Django's common options, also after the subcommand, as every Django command takes them anywhere.

    Not given, they leave the value given before the subcommand (or Django's default) as it is.
    """
    keep = argparse.SUPPRESS
    parser.add_argument(
        "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=keep,
        help="Verbosity level; 0: only errors and the data asked for, 1: normal output.",
    )  # fmt: skip
    parser.add_argument("--settings", default=keep, help="A settings module, as for every Django command.")
    parser.add_argument("--pythonpath", default=keep, help="A directory to add to the Python path.")
    parser.add_argument("--traceback", action="store_true", default=keep, help="Raise on CommandError exceptions.")
    parser.add_argument("--no-color", action="store_true", default=keep, help="Don't colorize the command output.")
    parser.add_argument("--force-color", action="store_true", default=keep, help="Force colorization of the output.")


def _add_yes(parser: CommandParser) -> None:
    parser.add_argument(
        "--yes", "--noinput", "--no-input", dest="yes", action="store_true", help="Do not ask for confirmation."
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


# -- pieces of output --------------------------------------------------------------------------


def _check_sqlite_file(path: Path) -> str:
    """Describe ``path`` if it is a whole SQLite database that passes integrity_check, else refuse."""
    try:
        validate(path, str(path))
        size = path.stat().st_size
    except SnapshotCorrupt as exc:
        raise CommandError(f"{path} is not a valid SQLite database ({exc.reason}). Nothing was changed.") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}. Nothing was changed.") from None
    return f"the file {path} ({display.size(size)})"


def _copy_to_label(bucket: Bucket, source: SnapshotEntry, label: str) -> SnapshotEntry:
    """Keep ``source`` under ``label`` by server-side copies, signed by this process; the live data is untouched.

    The source's signature is checked first, so a copy never vouches for a
    snapshot this project did not write; its content is checked whenever
    the copy is loaded, against the digests the copy's record carries.
    """
    signing_key, keys = bucket.signing_keys()
    if source.kind != LEGACY:
        source.record.verify_signature(keys)
    try:
        record = bucket.history.copy(
            source.record,
            label,
            LABELLED,
            seq=source.record.seq,
            writer=f"{socket.gethostname()}:{os.getpid()} (manage.py buckethead snapshot)",
            signing_key=signing_key,
            keys=keys,
            deltas=source.deltas,
        )
    except (FileExistsError, PreconditionFailed):
        raise CommandError(f"a snapshot labelled {label!r} already exists; choose another label") from None
    return bucket.history.find(record.name)


def _latest(bucket: Bucket) -> tuple[SnapshotEntry | None, str | None]:
    """The snapshot a writer would start from (None: none yet), or why the bucket's current record is unreadable."""
    try:
        bucket.history.current()
    except SnapshotCorrupt as exc:
        return None, str(exc)
    try:
        return bucket.history.find(LATEST), None
    except KeyError:
        return None, None


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
    if health.status == DEGRADED:
        age = (
            f"the bucket's copy is from {display.relative(health.last_good_at)}"
            if health.last_good_at is not None
            else "nothing has reached the bucket yet"
        )
        return f"degraded: the last flush failed ({health.last_error}); {age}"
    return "ok"


def _describe(name: str, entry: SnapshotEntry) -> str:
    """``snapshot 'previous' (0000000041-..., 36.0 KB, written ...)``: what the operator named, and what it is."""
    resolved = f"{entry.name}, " if entry.name != name else ""
    return f"snapshot {name!r} ({resolved}{display.size(entry.size)}, written {display.when(entry.last_modified)})"


def _named(name: str | None) -> str:
    return f" ({name})" if name else ""


def _find_file(files: FileStore, ref: str) -> FileInfo | None:
    """The stored file with bh-key ``ref``, or the one the storage name ``ref`` stands for."""
    if _BH_KEY.match(ref):
        return files.head(ref)
    named = next((n for n in files.list_names(ref) if n.name == ref), None)
    return files.head(named.bh_key) if named else None


def _expires_at(engine: BucketSQLite, key: str) -> dt.datetime | None:
    try:
        ttl = engine.kv.ttl(key)
    except KeyError:  # expired a moment ago
        return None
    return None if ttl is None else display.utc(time.time() + ttl)


def _as_of_clause(engine: BucketSQLite) -> str:
    moment = as_of(engine)
    return f" as of the snapshot written {display.when(moment)}" if moment else ""


def _default_label() -> str:
    return timestamped_label("manual")


def _entry_line(entry: SnapshotEntry) -> str:
    return f"snapshot {entry.name!r}, {display.size(entry.size)}, written {display.when(entry.last_modified)}"


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


def _lease_data(lease: WriterLease, bucket: Bucket) -> dict[str, Any]:
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


def _live_lease(bucket: Bucket) -> WriterLease | None:
    lease = bucket.lease()
    return lease if lease is not None and lease.live else None


def _is_replicator(engine: BucketSQLite | None) -> bool:
    return engine is not None and engine.role == "replicator"


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
    }[role]
    return f"pid {os.getpid()}, {role}{how}: {what}"


def _local_line(local: LocalDir) -> str:
    where = "in RAM" if local.ram_backed else "on disk, not in RAM (`manage.py check` says how to move it)"
    return f"{local.filesystem}, {where}; chosen: {local.reason}"


#: Why a copy was set aside, from the first word of its name, for copies the replicator that is running did not make.


def _set_aside_lines(set_aside: list[tuple[str, str]]) -> list[str]:
    lines = [
        f"{'SET ASIDE':<17}{_count(len(set_aside), 'copy', 'copies')} of the host's database, kept when the "
        "bucket's generation was restored in their place:"
    ]
    lines += [f"{'':<17}{path}: {why}" for path, why in set_aside]
    lines.append(
        f"{'':<17}Compare a copy with the bucket's state, and restore it (`manage.py buckethead restore --file "
        "PATH`) if it holds what you need; remove it once it is not needed."
    )
    return lines


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _import_refusal(path: Path, conflicts: list[importing.Conflict]) -> str:
    return (
        f"refusing to import {path}: these already exist in the host's database and hold what the import would "
        f"overwrite: {', '.join(c.describe() for c in conflicts)}. Pass --replace to overwrite them with the file's "
        "(the host's other tables are kept). Nothing was changed."
    )


def _import_data(path: Path, done: importing.Plan, current: SnapshotEntry) -> dict[str, Any]:
    return {
        "path": str(path),
        "tables": [{"name": t.name, "rows": t.rows, "replaced_rows": t.existing_rows} for t in done.tables],
        "rows": done.rows,
        "indexes": [o.name for o in done.objects if o.kind == "index"],
        "triggers": [o.name for o in done.objects if o.kind == "trigger"],
        "views": [o.name for o in done.objects if o.kind == "view"],
        "overwritten": [{"kind": c.kind, "name": c.name, "rows": c.rows} for c in done.conflicts],
        "left_out": done.left_out,
        "foreign_key_problems": done.foreign_key_problems,
        "snapshot": _entry_data(current),
    }


def _entry_data(entry: SnapshotEntry) -> dict[str, Any]:
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


def _json_entries(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its SnapshotEntry values as dicts, for json.dumps."""
    return {k: _entry_data(v) if isinstance(v, SnapshotEntry) else v for k, v in data.items()}
