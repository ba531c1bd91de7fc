"""``manage.py buckethead <subcommand>``: see, snapshot, restore and inspect BucketHead's state.

stdout carries the answer — text for a person, or JSON with ``--json`` — and
stderr carries notes (how old the data shown is), prompts and progress bars,
so the answer can be piped. Every failure is one line and a non-zero exit
status, and leaves the bucket as it was. Changes follow the writer rules of
`buckethead_django.management.bucket`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

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
from ...engine.history import LATEST, timestamped_label, validate_label
from ...engine.record import LABELLED, LEGACY
from ...engine.snapshot import validate
from ...health import DEGRADED, EngineHealth, engine_health
from .. import display
from ..bucket import WRITER_RUNNING, Bucket, as_of, holder, refuse
from ..progress import ProgressBar

Options = dict[str, Any]
Handler = Callable[[Options], None]

#: Exit status of a command line that argparse cannot make sense of.
USAGE_ERROR = 2
_BH_KEY = re.compile(r"^[0-9a-f]{64}$")
_RESTORE_INSTEAD = (
    "Stop the server and run this command again, or restore from the Django admin (BucketHead > Snapshots > "
    "Restore), which runs inside the writer."
)
_CHANGE_INSTEAD = "Make the change through the running site, or stop the server and run this command again."


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
        "Operate BucketHead: status, snapshot, history, restore, and inspect KV entries and files. "
        "Run `manage.py buckethead <subcommand> --help` for each."
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
            "Where the state lives, the current snapshot and retention, the live writer, and this process's role "
            "and health.",
            self.status,
        )
        snapshot = _add(
            commands,
            parser,
            "snapshot",
            "Take a point-in-time snapshot now. In the writer it flushes; while a server is the writer it keeps a "
            "labelled copy of the latest durable snapshot instead. Labelled snapshots are never removed.",
            self.snapshot,
        )
        snapshot.add_argument("--label", metavar="NAME", help="Keep the snapshot under this name.")
        _add(
            commands,
            parser,
            "history",
            "Every restorable snapshot: the generations, newest first (the current one marked), then labelled ones.",
            self.history,
        )
        restore = _add(
            commands,
            parser,
            "restore",
            "Make a snapshot (or a local SQLite file) the live state, or download one with --to-file. The state it "
            "replaces is kept as a labelled snapshot. Refused while a server is the writer.",
            self.restore,
        )
        restore.add_argument(
            "snapshot", nargs="?", metavar="SNAPSHOT", help="A name shown by `history`, or latest or previous."
        )
        restore.add_argument("--file", type=Path, metavar="PATH", help="Restore this local SQLite file instead.")
        restore.add_argument(
            "--to-file",
            type=Path,
            metavar="PATH",
            help="Only download SNAPSHOT (default: latest) to a new SQLite file, for offline inspection.",
        )
        restore.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

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

    # -- status and history ----------------------------------------------------------------

    def status(self, options: Options) -> None:
        """Configuration without secrets, the current snapshot and retention, the writer lease, this process."""
        bucket = Bucket.open()
        config = bucket.config
        latest, unreadable = _latest(bucket)
        kept = sum(1 for g in bucket.history.generations() if g.has_record)
        retention = bucket.snapshot_config()
        lease = bucket.lease()
        decision = runtime.decision()
        stats = bucket.own.stats() if bucket.own is not None else None
        health = engine_health(bucket.own) if bucket.own is not None else None
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
                "keep_previous": retention.keep_previous,
            },
            "writer": None if lease is None else _lease_data(lease, this_process=bucket.is_own(lease)),
            "health": None if health is None else health.as_json(),
            "process": {
                "pid": os.getpid(),
                "role": str(runtime.role()),
                "reason": decision.reason if decision else None,
                "writes": bucket.own is not None,
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
            ("Writer", _writer_line(bucket, lease)),
        ]
        if health is not None:
            lines.append(("Health", _health_line(health)))
        role = str(runtime.role()) + (f" ({decision.reason})" if decision else "")
        lines.append(("This process", f"pid {os.getpid()}, {role}"))
        if stats is not None:
            lines.append(
                (
                    "Database",
                    f"{display.size(stats['database_bytes'])}, {stats['kv_entries']} KV entries, "
                    f"{stats['files']} files",
                )
            )
        self._emit(options, data, (f"{label:<17}{value}".rstrip() for label, value in lines))

    def history(self, options: Options) -> None:
        """Every restorable snapshot: generations newest first (the current one marked), labels, a 0.4.x one."""
        bucket = Bucket.open()
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

    # -- snapshot --------------------------------------------------------------------------

    def snapshot(self, options: Options) -> None:
        """Flush in the writer; elsewhere keep a labelled copy of the latest durable snapshot."""
        label: str | None = options["label"]
        if label is not None:
            try:
                validate_label(label)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        bucket = Bucket.open()
        if label is not None:
            self._refuse_existing_label(bucket, label)
        if bucket.own is not None:
            size = bucket.own.stats()["database_bytes"]
            with ProgressBar(self.stderr, "Uploading the snapshot", size) as bar:
                entry = bucket.own.snapshot(label, progress=bar)
            lines = [f"Flushed the live state to {bucket.describe()}: {_entry_line(entry)}."]
            data = {"snapshot": entry, "flushed": True, "source": None, "writer": None}
        else:
            lease = bucket.live_writer()
            try:
                source = bucket.history.find(LATEST)
            except KeyError:
                raise CommandError(
                    f"there is no snapshot in {bucket.describe()} yet, so there is nothing to copy; "
                    "the writer's first flush makes one"
                ) from None
            entry = _copy_to_label(bucket, source, label or _default_label())
            if lease is not None:
                why = (
                    f"A live writer holds the bucket ({lease.holder}), and this process must not overwrite its "
                    f"data: the copy is of the latest durable snapshot, {source.name}, written "
                    f"{display.relative(source.last_modified)}. Changes the writer has not flushed since then are "
                    "not in it."
                )
            else:
                why = (
                    f"No writer is running, so the latest durable snapshot, {source.name}, written "
                    f"{display.relative(source.last_modified)}, is the current state."
                )
            lines = [why, f"Kept it as {_entry_line(entry)}."]
            data = {
                "snapshot": entry,
                "flushed": False,
                "source": source,
                "writer": None if lease is None else _lease_data(lease, this_process=False),
            }
        self._emit(options, _json_entries(data), lines)

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
        """Replace the live state with a snapshot or a local file; or, with --to-file, only download one."""
        name: str | None = options["snapshot"]
        file: Path | None = options["file"]
        if options["to_file"] is not None:
            if file is not None:
                raise CommandError("--to-file downloads a snapshot from the bucket; it cannot be used with --file")
            self._download(options, name or LATEST, options["to_file"])
            return
        if (name is None) == (file is None):
            raise CommandError("give either the name of a snapshot (see `manage.py buckethead history`) or --file PATH")
        bucket = Bucket.open()
        source: str | Path
        if file is not None:
            described = _check_sqlite_file(file)
            source, total = file, 0
        else:
            entry = self._find_snapshot(bucket, name or "")
            described = _describe(name or "", entry)
            source, total = entry.name, entry.size  # the name resolved now: `previous` must not move meanwhile
        refusal = refuse(f"restore {described}", _RESTORE_INSTEAD)
        bucket.refuse_if_writer_running(refusal)  # before asking: the answer would not matter
        if not options["yes"]:
            self._confirm(
                options,
                f"Restore {described} as the live state of {bucket.describe()}?\n"
                "The state it replaces is kept first as a labelled snapshot, so this can be undone.",
            )
        damaged: Damage | None = None
        kept: SnapshotEntry | None = None
        with ProgressBar(self.stderr, f"Downloading {source}", total) as bar:
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
        lines = [
            self.style.SUCCESS(f"Restored {described} as the live state of {bucket.describe()}."),
            after,
            f"The current generation is now {current.name}: the next writer starts from it.",
        ]
        data = {
            "restored": str(source),
            "from": "file" if file is not None else "snapshot",
            "kept": kept,
            "current": current,
            "latest_was_damaged": damaged is not None,
            "damaged": None if damaged is None else dataclasses.asdict(damaged),
        }
        self._emit(options, _json_entries(data), lines)

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
        bucket = Bucket.open()
        entry = self._find_snapshot(bucket, name)
        if entry.current and (lease := bucket.live_writer()) is not None:
            self._note(
                options,
                f"A live writer holds the bucket ({lease.holder}): its changes since then are not in this file.",
            )
        _, keys = bucket.signing_keys()
        with ProgressBar(self.stderr, f"Downloading {name}", entry.size) as bar:
            try:
                bucket.history.fetch(entry.record, dest, keys=keys, progress=bar)
            except SnapshotCorrupt as exc:
                raise CommandError(
                    f"snapshot {name!r} failed verification ({exc.reason}); nothing was written to {dest}"
                ) from None
        lines = [f"Downloaded {_describe(name, entry)} to {dest}.", f"Inspect it with: sqlite3 {dest}"]
        self._emit(options, {"snapshot": _entry_data(entry), "path": str(dest)}, lines)

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
                raise CommandError(
                    f"the value of {key!r} is not UTF-8 text ({display.size(len(value))}); "
                    "show it with --hex, --base64 or --bytes"
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
        bucket = Bucket.open()
        with bucket.writer(refuse(f"set KV key {key!r}", _CHANGE_INSTEAD)) as engine:
            engine.kv.set(key, value, ttl=ttl)
            expires_at = _expires_at(engine, key)
        expiry = f", expires {display.relative(expires_at)}" if expires_at else ""
        size = len(value.encode("utf-8"))
        line = f"Set {key!r} ({display.size(size)}{expiry}) and flushed it to {bucket.describe()}."
        data = {"key": key, "size": size, "expires_at": expires_at}
        self._emit(options, data, [self.style.SUCCESS(line)])

    def kv_delete(self, options: Options) -> None:
        key = options["key"]
        bucket = Bucket.open()
        with bucket.writer(refuse(f"delete KV key {key!r}", _CHANGE_INSTEAD)) as engine:
            if not engine.kv.delete(key):
                raise CommandError(f"there is no KV key {key!r} in {bucket.describe()}; nothing was changed")
        line = f"Deleted {key!r} and flushed the change to {bucket.describe()}."
        self._emit(options, {"key": key, "deleted": True}, [self.style.SUCCESS(line)])

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
        if dest.exists():
            raise CommandError(f"{dest} already exists; choose another path or remove it first. Nothing was written.")
        with ProgressBar(self.stderr, f"Downloading {dest.name}", info.size) as bar:
            engine.files.get(info.bh_key, dest=dest, progress=bar)
        line = f"Wrote {info.bh_key} ({display.size(info.size)}) to {dest}."
        self._emit(options, {"bh_key": info.bh_key, "size": info.size, "path": str(dest)}, [line])

    def files_gc(self, options: Options) -> None:
        grace, dry_run = options["grace_seconds"], options["dry_run"]
        if dry_run:
            report = self._reader(options).files.gc(grace, dry_run=True)
        else:
            refusal = refuse(
                "delete unreferenced blobs",
                "Run `manage.py buckethead files gc --dry-run` to see what would go, or stop the server and run "
                "this command again.",
                why="It may refer to blobs its last snapshot does not record yet; deleting them would lose files.",
            )
            with Bucket.open().writer(refusal) as engine:
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
        self._emit(options, {"dry_run": dry_run, **dataclasses.asdict(report)}, lines)

    # -- shared ----------------------------------------------------------------------------

    def _reader(self, options: Options) -> BucketSQLite:
        """The engine to read from, with a note saying how old its data is when it is not the live state."""
        engine = Bucket.open().reader()
        if engine.read_only:
            if engine.restored_from is None:
                self._note(options, "The bucket holds no snapshot yet: there is nothing to show.")
            else:
                self._note(
                    options,
                    f"As of the latest snapshot, written {display.when(engine.restored_from.last_modified)}; "
                    "changes a running server has not flushed yet are not shown.",
                )
        return engine

    def _note(self, options: Options, text: str) -> None:
        """A remark for the person at the terminal; scripts reading --json get the same facts as fields."""
        if not options["json"]:
            self.stderr.write(text, style_func=self.style.NOTICE)

    def _emit(self, options: Options, data: Any, lines: Iterable[str]) -> None:
        if options["json"]:
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
        else:
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
    return parser


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
        rule += f" and any younger than {display.duration(config.keep_max_age_seconds)}"
    return f"{kept} in the bucket; {rule} (and every labelled snapshot)"


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


def _writer_line(bucket: Bucket, lease: WriterLease | None) -> str:
    if lease is None:
        return "none: no process holds the writer lease"
    if not lease.live:
        return (
            f"none live: the lease of {lease.holder} expired {display.relative(lease.expires_at)} without being "
            "released (that process stopped abruptly)"
        )
    return ("this process: " if bucket.is_own(lease) else "") + holder(lease)


def _lease_data(lease: WriterLease, *, this_process: bool) -> dict[str, Any]:
    return {
        "holder": lease.holder,
        "host": lease.host,
        "pid": lease.pid,
        "started_at": display.utc(lease.started_at),
        "renewed_at": display.utc(lease.renewed_at),
        "expires_at": display.utc(lease.expires_at),
        "live": lease.live,
        "this_process": this_process,
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
