"""``manage.py buckethead export``: copy the site's rows, cache entries and files onto standard servers.

The command line only: the copying is in `buckethead_django.export`, one
module per part. The order of work: every target is checked first (alias,
kind, reachable, migrated), then the latest snapshot is read into a private
copy, then the parts run one after the other (rows, cache entries, files),
each with a progress bar on a terminal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser, OutputWrapper

from ...engine import BucketSQLite
from ...export import cache_entries, files, rows, source
from ...export.source import ExportError
from .. import display
from ..progress import ProgressBar
from .base import Options, Subcommand, SubparsersAction, add_parser, positive_int
from .describe import counted

#: Row and entry counts below these draw no bar: the part is over before one would help.
MIN_ROWS = 20_000
MIN_ENTRIES = 2_000
PARTS = ("database", "cache", "files")
#: What to give for each part, in the line that says it was skipped.
OPTION = {"database": "--database", "cache": "--cache", "files": "--storage"}


class CountBar(ProgressBar):
    """A progress bar of things counted (rows, entries) rather than bytes."""

    def __init__(self, out: OutputWrapper, label: str, total: int, unit: str, *, minimum: int, quiet: bool) -> None:
        super().__init__(out, label, total, min_bytes=minimum, quiet=quiet)
        self.unit = unit

    def _draw(self, percent: int) -> None:
        filled = 30 * percent // 100
        bar = "#" * filled + "." * (30 - filled)
        line = f"\r{self.label} [{bar}] {percent:3d}%  {self.done:,} of {self.total:,} {self.unit}"
        self.out.write(line, style_func=lambda s: s, ending="")
        self.out.flush()


@dataclass
class Targets:
    """Where each part goes; a part without a target is skipped."""

    database: str | None
    from_database: str | None
    routes: list[cache_entries.Route] = field(default_factory=list)
    storage: str | None = None

    def skipped(self) -> list[str]:
        given = {"database": self.database, "cache": self.routes, "files": self.storage}
        return [part for part in PARTS if not given[part]]


class Export(Subcommand):
    """`manage.py buckethead export`: copy the site's state into other database, cache and S3 aliases."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        export = add_parser(
            commands,
            parser,
            "export",
            "Copy the site's rows, cache entries and files into another Django database, cache and S3 storage "
            "(PostgreSQL, Redis, S3), to move the site off BucketHead. It reads a private copy of the latest "
            "snapshot and writes nothing to the bucket or the host's database; running it again completes an "
            "interrupted export and duplicates nothing.",
            self.export,
        )
        export.add_argument(
            "--database",
            metavar="ALIAS",
            help="Copy every model's rows into this settings.DATABASES alias (PostgreSQL first), in one "
            "transaction. It must be migrated (`manage.py migrate --database ALIAS`).",
        )
        export.add_argument(
            "--from-database",
            metavar="ALIAS",
            help="The BucketHead database to copy from (default: the alias whose ENGINE is buckethead_django.db, "
            "'default' first).",
        )
        export.add_argument(
            "--migrate",
            action="store_true",
            help="Run `migrate --database ALIAS` first if the target lacks migrations.",
        )
        export.add_argument(
            "--cache",
            action="append",
            default=[],
            metavar="[SOURCE=]ALIAS",
            help="Copy the live entries of BucketHead cache SOURCE (the site's only one when left out) into this "
            "settings.CACHES alias, each with the time it has left. Repeat it for each BucketHead cache.",
        )
        export.add_argument(
            "--storage",
            metavar="ALIAS",
            help="Upload every file of BucketHeadStorage into this settings.STORAGES alias (a "
            "storages.backends.s3.S3Storage), under the same name.",
        )
        export.add_argument(
            "--jobs",
            type=positive_int,
            default=files.DEFAULT_JOBS,
            metavar="N",
            help=f"Files transferred at once ({files.DEFAULT_JOBS}).",
        )
        export.add_argument(
            "--dry-run",
            action="store_true",
            help="Only report what would be copied (rows per model, cache entries and files, with sizes); write "
            "nothing anywhere.",
        )

    def export(self, options: Options) -> None:
        try:
            self._export(options)
        except ExportError as exc:
            raise CommandError(str(exc)) from None

    def _export(self, options: Options) -> None:
        started = time.monotonic()
        dry_run: bool = options["dry_run"]
        targets = self._targets(options)
        bucket = self._bucket()
        storage = files.target_storage(targets.storage, bucket.config) if targets.storage else None
        # Every target is checked before the snapshot is read: a mistake costs seconds, not a download.
        if targets.database:
            rows.connect(targets.database)
        for route in targets.routes:
            cache_entries.reach(route.target)
        if storage is not None and targets.storage:
            files.reach(storage, targets.storage)
        if targets.database and not dry_run:
            self._migrated(options, targets.database)
        with source.opened(bucket) as engine:
            self._say_what_is_read(options, engine)
            row_plan = rows.plan(targets.from_database or "", targets.database) if targets.database else None
            cache_plan = cache_entries.plan(engine, targets.routes) if targets.routes else None
            file_plan = (
                files.plan(engine, storage, targets.storage, jobs=options["jobs"])
                if storage is not None and targets.storage
                else None
            )
            data = self._data(targets, engine, row_plan, cache_plan, file_plan, dry_run=dry_run)
            if dry_run:
                self._emit(options, data, self._dry_run_lines(targets, row_plan, cache_plan, file_plan))
                return
            rows_done = self._copy_rows(options, row_plan) if row_plan is not None else None
            cache_done = self._copy_cache(options, engine, cache_plan) if cache_plan is not None else None
            files_done = (
                self._copy_files(options, engine, storage, file_plan)
                if storage is not None and file_plan is not None
                else None
            )
        seconds = time.monotonic() - started
        data.update(
            seconds=round(seconds, 3),
            database=_rows_result(rows_done) if rows_done else data["database"],
            cache=_cache_result(cache_done) if cache_done else data["cache"],
            files=_files_result(files_done) if files_done else data["files"],
        )
        lines = self._done_lines(targets, rows_done, cache_done, files_done, seconds)
        self._emit(options, data, lines, report=True)

    # -- what goes where ---------------------------------------------------------------------------

    def _targets(self, options: Options) -> Targets:
        """Check the aliases given (no connection yet): each exists, is of the right kind, is not BucketHead's."""
        targets = Targets(options["database"], options["from_database"], storage=options["storage"])
        if not (targets.database or options["cache"] or targets.storage):
            raise CommandError(
                "nothing to export to: give --database ALIAS, --cache ALIAS and/or --storage ALIAS (the "
                "settings aliases of the new database, cache and S3 storage; docs/outgrow.md shows them)"
            )
        if targets.database:
            if targets.from_database is None:
                found = source.buckethead_databases()
                if not found:
                    raise ExportError(
                        "no database in settings.DATABASES has ENGINE 'buckethead_django.db', so there are no rows "
                        "to copy: run the export with the site's BucketHead settings (or pass --from-database ALIAS)"
                    )
                targets.from_database = "default" if "default" in found else found[0]
            rows.check_aliases(targets.from_database, targets.database)
        targets.routes = cache_entries.parse_routes(options["cache"])
        return targets

    def _migrated(self, options: Options, alias: str) -> None:
        """Refuse an unmigrated target, or migrate it with --migrate."""
        if options["migrate"] and rows.unapplied_migrations(alias):
            self._note(options, f"Migrating database {alias!r} first (`migrate --database {alias}`).")
            quiet = options["verbosity"] == 0 or options["json"]
            call_command("migrate", database=alias, interactive=False, verbosity=0 if quiet else 1, stdout=self.stderr)
        rows.require_migrated(alias)

    def _say_what_is_read(self, options: Options, engine: BucketSQLite) -> None:
        record = engine.restored_from
        if not engine.read_only:
            return  # a test run's or a server's own engine: its database is the state
        if record is None:
            self._note(options, "The bucket holds no snapshot yet: there is nothing to export.")
            return
        self._note(
            options,
            f"Exporting the latest snapshot ({record.name}, written {display.when(record.last_modified)}), read "
            "into a private copy: changes a running server has not flushed yet are not in it.",
        )

    # -- the parts -------------------------------------------------------------------------------------

    def _bar(self, options: Options, label: str, total: int, unit: str | None, minimum: int) -> ProgressBar:
        if unit is None:
            return self._progress(options, label, total)
        return CountBar(self.stderr, label, total, unit, minimum=minimum, quiet=options["verbosity"] == 0)

    def _copy_rows(self, options: Options, plan: rows.RowsPlan) -> rows.RowsResult:
        with self._bar(options, f"Copying rows into {plan.target!r}", plan.rows, "rows", MIN_ROWS) as bar:
            return rows.copy(plan, progress=bar)

    def _copy_cache(
        self, options: Options, engine: BucketSQLite, plan: cache_entries.CachePlan
    ) -> cache_entries.CacheResult:
        with self._bar(options, "Copying cache entries", plan.entries, "entries", MIN_ENTRIES) as bar:
            return cache_entries.copy(engine, plan, progress=bar)

    def _copy_files(
        self, options: Options, engine: BucketSQLite, storage: Any, plan: files.FilesPlan
    ) -> files.FilesResult:
        with self._bar(options, f"Uploading files to {plan.alias!r}", plan.bytes, None, 0) as bar:
            return files.copy(engine, storage, plan, jobs=options["jobs"], progress=bar)

    # -- output -----------------------------------------------------------------------------------------

    def _data(
        self,
        targets: Targets,
        engine: BucketSQLite,
        row_plan: rows.RowsPlan | None,
        cache_plan: cache_entries.CachePlan | None,
        file_plan: files.FilesPlan | None,
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        record = engine.restored_from
        return {
            "dry_run": dry_run,
            "source": {
                "database": targets.from_database,
                "snapshot": None if record is None else record.name,
                "written": None if record is None else record.last_modified,
            },
            "database": _rows_plan(row_plan) if row_plan else None,
            "cache": _cache_plan(cache_plan) if cache_plan else None,
            "files": _files_plan(file_plan) if file_plan else None,
            "skipped": targets.skipped(),
        }

    def _dry_run_lines(
        self,
        targets: Targets,
        row_plan: rows.RowsPlan | None,
        cache_plan: cache_entries.CachePlan | None,
        file_plan: files.FilesPlan | None,
    ) -> list[str]:
        lines = ["Dry run: nothing was written anywhere."]
        if row_plan is not None:
            state = (
                "migrated"
                if not row_plan.unapplied
                else f"{counted(len(row_plan.unapplied), 'migration')} to apply: run `manage.py migrate --database "
                f"{row_plan.target}` or pass --migrate"
            )
            lines.append(
                f"Database: {counted(row_plan.rows, 'row')} of {counted(len(row_plan.models), 'model')} from "
                f"{row_plan.source!r} into {row_plan.target!r} ({row_plan.vendor}, {state}):"
            )
            table = sorted((m.label, m.table, f"{m.rows:,}") for m in row_plan.models if m.rows)
            lines += ["  " + line for line in display.table(("MODEL", "TABLE", "ROWS"), table)] if table else []
            empty = sum(1 for m in row_plan.models if not m.rows)
            if empty:
                lines.append(f"  and {counted(empty, 'model')} with no rows.")
            lines += _left_out_lines(row_plan)
        if cache_plan is not None:
            lines += [
                f"Cache: {counted(r.entries, 'entry', 'entries')} ({display.size(r.bytes)}) of {r.route.source!r} "
                f"(LOCATION {r.location!r}) into {r.route.target!r}."
                for r in cache_plan.routes
            ]
            lines += _not_exported_lines(cache_plan)
        if file_plan is not None:
            shared = file_plan.files - file_plan.contents
            lines.append(
                f"Files: {counted(file_plan.files, 'file')} ({display.size(file_plan.bytes)}) into storage "
                f"{file_plan.alias!r} (bucket {file_plan.bucket!r})"
                + (f", {shared} of them sharing content with another name (copied within the bucket)" if shared else "")
                + f"; {len(file_plan.present)} already there ({display.size(file_plan.present_bytes)})."
            )
        lines += _skipped_lines(targets)
        return lines

    def _done_lines(
        self,
        targets: Targets,
        rows_done: rows.RowsResult | None,
        cache_done: cache_entries.CacheResult | None,
        files_done: files.FilesResult | None,
        seconds: float,
    ) -> list[str]:
        lines: list[str] = []
        if rows_done is not None:
            plan = rows_done.plan
            rekeyed = ", ".join(f"{counted(n, 'row')} of {label}" for label, n in rows_done.rekeyed.items())
            lines.append(
                f"Database: copied {counted(plan.rows, 'row')} of {counted(len(plan.models), 'model')} from "
                f"{plan.source!r} into {plan.target!r} ({plan.vendor}) in one transaction"
                + (f"; rows the target had made itself took the source's ids ({rekeyed})" if rekeyed else "")
                + f"; {counted(rows_done.sequences, 'sequence')} reset."
            )
            lines += _left_out_lines(plan)
        if cache_done is not None:
            for r in cache_done.plan.routes:
                missed = f" ({r.missed} expired meanwhile)" if r.missed else ""
                lines.append(
                    f"Cache: copied {counted(r.copied, 'entry', 'entries')} ({display.size(r.bytes)}) of "
                    f"{r.route.source!r} into {r.route.target!r}{missed}, each with the time it has left."
                )
            lines += _not_exported_lines(cache_done.plan)
        if files_done is not None:
            plan_ = files_done.plan
            lines.append(
                f"Files: {counted(plan_.files, 'file')} ({display.size(plan_.bytes)}) in storage {plan_.alias!r} "
                f"(bucket {plan_.bucket!r}): {files_done.uploaded} uploaded "
                f"({display.size(files_done.uploaded_bytes)}), {files_done.copied} copied within the bucket, "
                f"{files_done.skipped} already there."
            )
            if files_done.missing:
                lines.append(
                    self.style.WARNING(
                        f"{counted(len(files_done.missing), 'file')} could not be copied: the BucketHead bucket has "
                        f"no blob for them (they were broken there already): {', '.join(files_done.missing)}."
                    )
                )
        lines += _skipped_lines(targets)
        lines.append(
            self.style.SUCCESS(
                f"Export done in {seconds:.1f} seconds. Run it again to copy what changed since: it overwrites by "
                "key and duplicates nothing."
            )
        )
        return lines


def _left_out_lines(plan: rows.RowsPlan) -> list[str]:
    return [f"  Left out: {label}, {why}." for label, why in plan.left_out.items()]


def _not_exported_lines(plan: cache_entries.CachePlan) -> list[str]:
    lines = []
    if plan.app_keys:
        shown = ", ".join(plan.app_keys[:5]) + (", ..." if len(plan.app_keys) > 5 else "")
        lines.append(
            f"  Not exported: {counted(len(plan.app_keys), 'application KV key')} ({display.size(plan.app_bytes)}: "
            f"{shown}): they are the application's own records, not cache entries; `--dry-run --json` lists them."
        )
    for alias, n in plan.other_caches.items():
        lines.append(
            f"  Not exported: {counted(n, 'entry', 'entries')} of BucketHead cache {alias!r} "
            f"(give --cache {alias}=ALIAS)."
        )
    if plan.orphaned:
        lines.append(
            f"  Not exported: {counted(plan.orphaned, 'cache entry', 'cache entries')} that no configured cache can "
            "read (a LOCATION or KEY_PREFIX no longer in settings.CACHES)."
        )
    return lines


def _skipped_lines(targets: Targets) -> list[str]:
    what = {"database": "the rows", "cache": "the cache entries", "files": "the files"}
    return [f"Skipped: {what[part]} (no {OPTION[part]} given)." for part in targets.skipped()]


# -- JSON ------------------------------------------------------------------------------------------------


def _rows_plan(plan: rows.RowsPlan) -> dict[str, Any]:
    return {
        "from": plan.source,
        "to": plan.target,
        "vendor": plan.vendor,
        "unapplied_migrations": plan.unapplied,
        "rows": plan.rows,
        "models": [{"model": m.label, "table": m.table, "rows": m.rows} for m in plan.models],
        "left_out": plan.left_out,
    }


def _rows_result(done: rows.RowsResult) -> dict[str, Any]:
    data = _rows_plan(done.plan)
    data["models"] = [
        {"model": m.label, "table": m.table, "rows": m.rows, "copied": m.copied} for m in done.plan.models
    ]
    data.update(
        copied=sum(m.copied for m in done.plan.models),
        rekeyed=done.rekeyed,
        sequences_reset=done.sequences,
        method=done.method,
        seconds=round(done.seconds, 3),
    )
    return data


def _cache_plan(plan: cache_entries.CachePlan) -> dict[str, Any]:
    return {
        "routes": [
            {
                "from": r.route.source,
                "to": r.route.target,
                "location": r.location,
                "entries": r.entries,
                "bytes": r.bytes,
            }
            for r in plan.routes
        ],
        "entries": plan.entries,
        "bytes": plan.bytes,
        "expired_rows": plan.expired,
        "other_caches": plan.other_caches,
        "orphaned_entries": plan.orphaned,
        "application_keys": {"count": len(plan.app_keys), "bytes": plan.app_bytes, "keys": plan.app_keys},
    }


def _cache_result(done: cache_entries.CacheResult) -> dict[str, Any]:
    data = _cache_plan(done.plan)
    for route, r in zip(data["routes"], done.plan.routes, strict=True):
        route.update(copied=r.copied, missed=r.missed)
    data.update(copied=done.copied, seconds=round(done.seconds, 3))
    return data


def _files_plan(plan: files.FilesPlan) -> dict[str, Any]:
    return {
        "to": plan.alias,
        "bucket": plan.bucket,
        "files": plan.files,
        "bytes": plan.bytes,
        "contents": plan.contents,
        "present": len(plan.present),
        "present_bytes": plan.present_bytes,
        "names": [{"name": n.name, "size": n.size, "sha256": n.bh_key} for n in plan.names],
    }


def _files_result(done: files.FilesResult) -> dict[str, Any]:
    data = _files_plan(done.plan)
    data.update(
        uploaded=done.uploaded,
        uploaded_bytes=done.uploaded_bytes,
        copied=done.copied,
        skipped=done.skipped,
        missing=done.missing,
        seconds=round(done.seconds, 3),
    )
    return data
