"""``manage.py buckethead import-database``: copy an existing SQLite database's tables into the host's database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.core.management.base import CommandError, CommandParser

from ...engine import BucketSQLite, SnapshotEntry
from ...engine.history import LATEST
from .. import importing
from ..bucket import Bucket, refuse
from .base import Options, Subcommand, SubparsersAction, add_parser, add_yes
from .describe import CHANGE_INSTEAD, DATABASE_BACKEND, check_sqlite_file, counted, entry_data, entry_line


class ImportDatabase(Subcommand):
    """`manage.py buckethead import-database`: copy an existing SQLite database's tables into the host's database."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        imports = add_parser(
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
        add_yes(imports)

    def import_database(self, options: Options) -> None:
        """Copy every table of an existing SQLite database into the host's database, then flush it."""
        path: Path = options["path"]
        replace: bool = options["replace"]
        include: bool = options["include_buckethead_tables"]
        described = check_sqlite_file(path)
        bucket = self._bucket()
        refusal = refuse(f"import {described}", CHANGE_INSTEAD)
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
                        f"Import {counted(len(planned.tables), 'table')} ({counted(planned.rows, 'row')}) of "
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
                f"Imported {counted(len(done.tables), 'table')} ({counted(done.rows, 'row')}), "
                f"{counted(done.count('index'), 'index', 'indexes')}, {counted(done.count('trigger'), 'trigger')} "
                f"and {counted(done.count('view'), 'view')} of {path} into the host's database, and flushed it to "
                f"{bucket.describe()}: {entry_line(current)}."
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
        "snapshot": entry_data(current),
    }
