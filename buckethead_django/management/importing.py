"""Copy an existing SQLite database into the host's BucketHead database: ``buckethead import-database``.

Every table of the source file (schema and rows) is created in the host's
database from the table's own ``CREATE`` statement in ``sqlite_master``, with
its indexes, triggers and views, in one transaction on a connection that has
the source ``ATTACH``-ed: the host's other processes see all of it or none.
Rows are copied before the indexes and triggers are made, so no trigger of
the source fires on rows it already processed. AUTOINCREMENT counters
(``sqlite_sequence``) are carried over, so no id is ever handed out twice.

What is left out:

- SQLite's own objects (``sqlite_*``, automatic indexes, and the shadow
  tables a virtual table makes for itself: the virtual table remakes them).
- BucketHead's own tables (``bh_kv``, ``filestore``, ``bh_file_names``), unless
  asked: a Django site that used the ``sqlite3`` backend has none, and those
  of another BucketHead database hold KV entries and records of files whose
  blobs are in *its* bucket. To make a whole BucketHead database the live
  state, restore it (``buckethead restore --file``) instead.

A table of the source that already exists in the host's database is
replaced only if it is empty there (Django's ``migrate`` may have made it),
or when the operator says so (``replace``); the same for an index, trigger
or view of the same name. Tables of the host's database that the source
does not have are kept as they are.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

#: The tables BucketHead itself keeps in the host's database, besides any ``bh_`` table a later version adds.
BUCKETHEAD_TABLES = frozenset({"bh_kv", "filestore", "bh_file_names"})
SOURCE = "bh_import_source"


def is_buckethead_table(name: str) -> bool:
    return name in BUCKETHEAD_TABLES or name.startswith("bh_")


def quote(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Table:
    """A table of the source, its row count, and what the host's database has under its name."""

    name: str
    sql: str
    rows: int
    virtual: bool
    #: The rows of the host's table of that name; None when the host has none.
    existing_rows: int | None

    @property
    def replaces(self) -> bool:
        return self.existing_rows is not None


@dataclass(frozen=True)
class SchemaObject:
    """An index, trigger or view of the source, in the order the source made them."""

    kind: str
    name: str
    table: str
    sql: str


@dataclass(frozen=True)
class Conflict:
    """Something of the host's database the import would overwrite: a table with rows, or another object."""

    kind: str
    name: str
    rows: int = 0

    def describe(self) -> str:
        if self.kind == "table":
            return f"{self.name} ({self.rows} row{'' if self.rows == 1 else 's'})"
        return f"{self.name} ({'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind})"


@dataclass
class Plan:
    """What importing the source would do to the host's database."""

    tables: list[Table] = field(default_factory=list)
    objects: list[SchemaObject] = field(default_factory=list)
    #: BucketHead's own tables in the source, which are not imported.
    left_out: list[str] = field(default_factory=list)
    #: What the import would overwrite, refused unless the operator passes ``replace``.
    conflicts: list[Conflict] = field(default_factory=list)
    #: Empty tables of the host's database in the way: dropped, since they hold nothing.
    dropped: list[tuple[str, str]] = field(default_factory=list)
    #: Imported tables with rows that refer to rows that do not exist, found once the import is done.
    foreign_key_problems: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def count(self, kind: str) -> int:
        return sum(1 for o in self.objects if o.kind == kind)


class ImportRefused(Exception):
    """The import would overwrite data of the host's database, and the operator did not say it may."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        super().__init__(", ".join(c.describe() for c in conflicts))
        self.conflicts = conflicts


def attach(conn: sqlite3.Connection, path: Path) -> None:
    """ATTACH the source database at ``path`` to ``conn`` (autocommit, outside any transaction)."""
    conn.execute(f"ATTACH DATABASE ? AS {SOURCE}", (str(path.resolve()),))


def detach(conn: sqlite3.Connection) -> None:
    conn.execute(f"DETACH DATABASE {SOURCE}")


def plan(conn: sqlite3.Connection, *, include_buckethead: bool = False) -> Plan:
    """What importing the attached source into ``conn``'s main database would do; changes nothing."""
    result = Plan()
    source = conn.execute(f"SELECT type, name, tbl_name, sql FROM {SOURCE}.sqlite_master ORDER BY rowid").fetchall()
    host = {
        name: (kind, table)
        for kind, name, table in conn.execute("SELECT type, name, tbl_name FROM main.sqlite_master").fetchall()
    }
    kinds = _table_kinds(conn, SOURCE)
    for kind, name, _table, sql in source:
        if kind != "table" or name.startswith("sqlite_") or sql is None or kinds.get(name) == "shadow":
            continue
        if is_buckethead_table(name) and not include_buckethead:
            result.left_out.append(name)
            continue
        existing = _in_the_way(conn, result, host, name)
        result.tables.append(Table(name, sql, _count(conn, SOURCE, name), kinds.get(name) == "virtual", existing))
    imported = {t.name for t in result.tables}
    for kind, name, table, sql in source:
        if kind not in ("index", "trigger", "view") or sql is None or name.startswith("sqlite_"):
            continue
        if kind != "view" and table not in imported:
            continue  # an index or trigger of a table left out
        result.objects.append(SchemaObject(kind, name, table, sql))
        if name in host and host[name][1] not in imported:  # not dropped along with a table the import replaces
            _in_the_way(conn, result, host, name)
    return result


def _in_the_way(conn: sqlite3.Connection, result: Plan, host: dict[str, tuple[str, str]], name: str) -> int | None:
    """Note what the host's database has under ``name``: an empty table is dropped, anything else is a conflict.

    Returns the rows of the host's table of that name (None if it has no table of that name).
    """
    if name not in host:
        return None
    kind = host[name][0]
    if kind != "table":  # the host's own index, trigger or view: the operator decides
        result.conflicts.append(Conflict(kind, name))
        return None
    rows = _count(conn, "main", name)
    if rows:
        result.conflicts.append(Conflict("table", name, rows))
    else:
        result.dropped.append(("table", name))
    return rows


def run(conn: sqlite3.Connection, *, replace: bool, include_buckethead: bool = False) -> Plan:
    """Import the attached source into ``conn``'s main database in one transaction, and return what was done.

    The plan is made again inside the transaction, so a process that wrote
    meanwhile cannot have its rows overwritten: `ImportRefused` then, unless
    ``replace``, and nothing changes.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = plan(conn, include_buckethead=include_buckethead)
        if done.conflicts and not replace:
            raise ImportRefused(done.conflicts)
        for conflict in done.conflicts:
            _drop(conn, conflict.kind, conflict.name)
        for kind, name in done.dropped:
            _drop(conn, kind, name)
        for table in done.tables:
            if table.replaces:
                _drop(conn, "table", table.name)
        for table in done.tables:
            conn.execute(table.sql)  # unqualified: SQLite creates it in the main database
        for table in done.tables:
            columns = ", ".join(quote(c) for c in _columns(conn, table.name))
            conn.execute(
                f"INSERT INTO main.{quote(table.name)} ({columns}) SELECT {columns} FROM {SOURCE}.{quote(table.name)}"
            )
        _carry_sequences(conn, [t.name for t in done.tables])
        for obj in done.objects:
            conn.execute(obj.sql)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return done


def foreign_key_problems(conn: sqlite3.Connection, tables: list[str]) -> list[str]:
    """Tables among ``tables`` with rows that refer to rows that do not exist (``PRAGMA foreign_key_check``)."""
    found = []
    for name in tables:
        with_problems = conn.execute(f"PRAGMA main.foreign_key_check({quote(name)})").fetchall()
        if with_problems:
            found.append(f"{name} ({len(with_problems)} row{'' if len(with_problems) == 1 else 's'})")
    return found


def _table_kinds(conn: sqlite3.Connection, schema: str) -> dict[str, str]:
    """``table``, ``virtual`` or ``shadow`` (a virtual table's own storage) for each table of ``schema``."""
    try:
        return {str(r[1]): str(r[2]) for r in conn.execute(f"PRAGMA {schema}.table_list").fetchall()}
    except sqlite3.OperationalError:  # SQLite < 3.37: tell virtual tables by their statement, shadows by name
        rows = conn.execute(f"SELECT name, sql FROM {schema}.sqlite_master WHERE type = 'table'").fetchall()
        kinds = {
            str(name): "virtual" if (sql or "").upper().startswith("CREATE VIRTUAL TABLE") else "table"
            for name, sql in rows
        }
        virtual = [name for name, kind in kinds.items() if kind == "virtual"]
        for name, kind in kinds.items():
            if kind == "table" and any(name.startswith(f"{v}_") for v in virtual):
                kinds[name] = "shadow"
        return kinds


def _count(conn: sqlite3.Connection, schema: str, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {schema}.{quote(table)}").fetchone()[0])


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The columns of the source's ``table`` a row is inserted with (not generated or hidden ones)."""
    rows = conn.execute(f"PRAGMA {SOURCE}.table_xinfo({quote(table)})").fetchall()
    return [str(r[1]) for r in rows if int(r[6]) == 0]


def _drop(conn: sqlite3.Connection, kind: str, name: str) -> None:
    statement = {"table": "TABLE", "virtual": "TABLE", "index": "INDEX", "trigger": "TRIGGER", "view": "VIEW"}[kind]
    conn.execute(f"DROP {statement} IF EXISTS main.{quote(name)}")


def _carry_sequences(conn: sqlite3.Connection, tables: list[str]) -> None:
    """Give each imported AUTOINCREMENT table the source's counter, so deleted ids are not handed out again."""
    has = {
        schema: conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
        is not None
        for schema in ("main", SOURCE)
    }
    if not (has["main"] and has[SOURCE]):
        return
    for name in tables:
        row = conn.execute(f"SELECT seq FROM {SOURCE}.sqlite_sequence WHERE name = ?", (name,)).fetchone()
        if row is None:
            continue
        conn.execute("DELETE FROM main.sqlite_sequence WHERE name = ?", (name,))
        conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)", (name, row[0]))
