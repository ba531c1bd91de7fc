"""``manage.py buckethead files``: inspect stored files and collect unreferenced blobs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from ...engine import FileInfo, FileStore
from ...engine.config import DEFAULT_GC_GRACE_SECONDS
from .. import display
from ..bucket import as_of, refuse
from .base import Options, Subcommand, SubparsersAction, add_parser, non_negative_float, positive_int, subcommand_group
from .describe import as_of_clause


class Files(Subcommand):
    """`manage.py buckethead files`: inspect stored files and collect unreferenced blobs."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        files = add_parser(commands, parser, "files", "Inspect stored files and collect unreferenced blobs.")
        files_commands = subcommand_group(files, "files_command")
        files_list = add_parser(
            files_commands, files, "list", "Stored blobs, newest first, with their names.", self.files_list
        )
        files_list.add_argument("--limit", type=positive_int, default=100, metavar="N", help="At most N files (100).")
        files_get = add_parser(files_commands, files, "get", "Download one stored file.", self.files_get)
        files_get.add_argument("bh_key", metavar="BH_KEY", help="The file's bh-key (or its storage name).")
        files_get.add_argument("dest", type=Path, metavar="DEST", help="A new file, or a directory to put it in.")
        gc = add_parser(files_commands, files, "gc", "Delete blobs that no stored file refers to.", self.files_gc)
        gc.add_argument("--dry-run", action="store_true", help="Only report what would be deleted.")
        gc.add_argument(
            "--grace-seconds",
            type=non_negative_float,
            default=DEFAULT_GC_GRACE_SECONDS,
            metavar="N",
            help="Keep unreferenced blobs younger than N seconds, which a writer may not have recorded yet "
            f"({DEFAULT_GC_GRACE_SECONDS:g}).",
        )

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
                f"there is no stored file with bh-key or name {options['bh_key']!r}{as_of_clause(engine)}"
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


#: A bh-key: the SHA-256 of a file's content, in hex.
_BH_KEY = re.compile(r"^[0-9a-f]{64}$")


def _find_file(files: FileStore, ref: str) -> FileInfo | None:
    """The stored file with bh-key ``ref``, or the one the storage name ``ref`` stands for."""
    if _BH_KEY.match(ref):
        return files.head(ref)
    named = next((n for n in files.list_names(ref) if n.name == ref), None)
    return files.head(named.bh_key) if named else None
