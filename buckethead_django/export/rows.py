"""Every model's rows, from the BucketHead database into another Django database (PostgreSQL first).

- **Which rows.** Every concrete, managed model Django knows, the
  auto-created many-to-many tables included, that the database routers allow
  on both databases; each model's own table (a multi-table inheritance
  child's own columns; its parent's are the parent model's). BucketHead's own
  tables (KV entries, files) are not models: the other parts move them.
- **How values travel.** Read with Django's converters from SQLite
  (``values_list``) and written with each field's ``get_db_prep_save`` for the
  target, as ``loaddata`` writes them but without model instances, signals
  or ``pre_save``: an ``auto_now`` field keeps its value.
- **Upsert by primary key.** ``INSERT ... ON CONFLICT (pk) DO UPDATE``: a row
  the target already has is overwritten, none is ever duplicated, so running
  the copy again changes nothing. On PostgreSQL each table is first streamed
  with ``COPY`` into a temporary table (``copy``, the fastest measured, see
  docs/outgrow.md), elsewhere inserted in batches of rows (``insert``).
- **Rows migrate made in the target.** ``migrate`` creates content types and
  permissions in the target with ids of its own, which need not be the
  source's. Rows of models with a natural key (content types, permissions,
  and any other) that the target already holds are matched to the source's
  by their unique columns and given the source's primary keys, the target's
  own references to them (permissions to content types) following, before
  the copy; so every foreign key and generic relation of the source points
  at the same rows in the target. A target-only row whose primary key the
  source uses moves to a fresh one.
- **Sequences.** Afterwards the target's sequences start after the highest
  primary key (``sequence_reset_sql``): new rows get fresh ids.
- **One transaction.** Everything above commits together or not at all:
  an export killed half way leaves the target database as it was.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.management.color import no_style
from django.db import DatabaseError, IntegrityError, connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.models.constants import OnConflict

from .source import DATABASE_BACKEND, ExportError, Progress, no_progress

#: Rows read from the source per fetch, and written per statement (fewer for tables with many columns).
BATCH_ROWS = 2000
#: PostgreSQL's limit of bound parameters in one statement.
MAX_PARAMETERS = 65535
#: The two ways rows are written: ``COPY`` into a temporary table, then one upsert (PostgreSQL); batched upserts.
METHODS = ("copy", "insert")
_STAGE = "bh_export_stage"

Model = type[models.Model]


@dataclass
class ModelRows:
    """One model's table: its rows in the source, and how many were copied."""

    model: Model
    rows: int
    copied: int = 0

    @property
    def label(self) -> str:
        return self.model._meta.label_lower

    @property
    def table(self) -> str:
        return self.model._meta.db_table


@dataclass
class RowsPlan:
    """What copying the rows from ``source`` into ``target`` involves."""

    source: str
    target: str
    vendor: str
    models: list[ModelRows]
    #: Models whose rows are not copied, and why.
    left_out: dict[str, str] = field(default_factory=dict)
    #: Migrations the target has not applied (the copy refuses to run until it has).
    unapplied: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.models)


@dataclass
class RowsResult:
    """What the copy did."""

    plan: RowsPlan
    method: str
    #: Rows of the target that took the source's primary keys, per model.
    rekeyed: dict[str, int]
    sequences: int
    seconds: float


# -- checks --------------------------------------------------------------------------------------------


def check_aliases(source: str, target: str) -> None:
    """Refuse a target that is no database alias, or a BucketHead one; a source that is not BucketHead's."""
    databases = connections.settings  # settings.DATABASES, as Django's connections read it
    known = ", ".join(databases) or "none"
    if source not in databases:
        raise ExportError(f"there is no database {source!r} in settings.DATABASES (it has: {known})")
    if databases[source].get("ENGINE") != DATABASE_BACKEND:
        raise ExportError(
            f"--from-database {source!r} is not a BucketHead database (its ENGINE is "
            f"{databases[source].get('ENGINE')!r}, not {DATABASE_BACKEND!r}): give the alias of the "
            "database the site uses now"
        )
    if target not in databases:
        raise ExportError(
            f"there is no database {target!r} in settings.DATABASES (it has: {known}): add the database to copy "
            "into there (docs/outgrow.md shows the settings), then run `manage.py migrate --database "
            f"{target}`"
        )
    if databases[target].get("ENGINE") == DATABASE_BACKEND:
        raise ExportError(
            f"--database {target!r} is the BucketHead database itself (ENGINE {DATABASE_BACKEND!r}): give the alias "
            "of the database to copy into, such as a PostgreSQL one"
        )


def connect(alias: str) -> None:
    """Open a connection to ``alias`` now, so that an unreachable server is one clear error before any work."""
    connection = connections[alias]
    try:
        connection.ensure_connection()
    except Exception as exc:  # noqa: BLE001 - every driver raises its own errors; all mean the same here
        where = connections.settings[alias]
        server = f" on {where['HOST']}:{where.get('PORT') or 'its default port'}" if where.get("HOST") else ""
        raise ExportError(
            f"cannot connect to database {alias!r} ({connection.vendor}{server}): {str(exc).strip()}. Check that "
            f"the server runs and that settings.DATABASES[{alias!r}] names an existing database and a user that "
            "may write it. Nothing was written."
        ) from None


def unapplied_migrations(alias: str) -> list[str]:
    """The migrations of the project that database ``alias`` has not applied, in the order migrate applies them."""
    executor = MigrationExecutor(connections[alias])
    planned = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _backwards in planned]


def exported_models(source: str, target: str) -> tuple[list[Model], dict[str, str]]:
    """The models whose rows are copied, and those left out with the reason."""
    chosen: list[Model] = []
    left_out: dict[str, str] = {}
    for model in apps.get_models(include_auto_created=True):
        opts = model._meta
        if opts.proxy or opts.swapped:
            continue  # a proxy shares its concrete model's table; a swapped model has none
        if not opts.managed:
            if opts.app_label != "buckethead_django":  # the admin section's anchors have no tables at all
                left_out[opts.label_lower] = "unmanaged (managed = False): Django neither creates nor migrates it"
            continue
        if not (router.allow_migrate_model(source, model) and router.allow_migrate_model(target, model)):
            left_out[opts.label_lower] = "the database routers keep it off one of the two databases"
            continue
        chosen.append(model)
    return chosen, left_out


def plan(source: str, target: str) -> RowsPlan:
    """Count the rows to copy; refuse if the BucketHead database lacks migrations. Reads the source only."""
    missing = unapplied_migrations(source)
    if missing:
        raise ExportError(
            f"the BucketHead database lacks {len(missing)} migration(s) of the code ({_some(missing)}): run "
            "`manage.py migrate` on the site first, so that both databases have the same tables. Nothing was written."
        )
    chosen, left_out = exported_models(source, target)
    counted = [ModelRows(m, m._base_manager.using(source).count()) for m in chosen]
    return RowsPlan(source, target, connections[target].vendor, counted, left_out, unapplied_migrations(target))


def require_migrated(alias: str, *, migrate_option: bool = True) -> None:
    """Raise `ExportError`, saying what to run, unless database ``alias`` has every migration applied."""
    missing = unapplied_migrations(alias)
    if missing:
        offer = " (or pass --migrate to have the export run it)" if migrate_option else ""
        raise ExportError(
            f"database {alias!r} is not migrated: {len(missing)} migration(s) to apply ({_some(missing)}). Run "
            f"`manage.py migrate --database {alias}` first{offer}, so that it has every table. Nothing was written."
        )


def _some(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# -- the copy ------------------------------------------------------------------------------------------


def best_method(alias: str) -> str:
    """``copy`` where the target is PostgreSQL through psycopg 3 (whose cursors stream COPY), else ``insert``."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return "insert"
    connection.ensure_connection()
    with connection.cursor() as cursor:
        return "copy" if hasattr(cursor.cursor, "copy") else "insert"


def copy(plan: RowsPlan, *, method: str | None = None, progress: Progress = no_progress) -> RowsResult:
    """Copy every planned model's rows into the target in one transaction; see the module's docstring."""
    started = time.monotonic()
    method = method or best_method(plan.target)
    if method not in METHODS or (method == "copy" and best_method(plan.target) != "copy"):
        raise ValueError(f"method {method!r} is not available for database {plan.target!r}")
    connection = connections[plan.target]
    write = _copy_table if method == "copy" else _insert_batches
    models_ = [m.model for m in plan.models]
    try:
        with transaction.atomic(using=plan.target):
            with connection.constraint_checks_disabled():
                rekeyed = _take_source_keys(plan.source, connection, models_)
                for entry in plan.models:
                    entry.copied = write(connection, plan.source, entry.model, progress)
            # Foreign keys are checked here, within the transaction: a broken one rolls everything back.
            connection.check_constraints(table_names=[m.table for m in plan.models])
            statements = connection.ops.sequence_reset_sql(no_style(), models_)
            with _RawCursor(connection) as execute:
                for sql in statements:
                    execute(sql, ())
    except IntegrityError as exc:
        raise ExportError(
            f"the rows could not be written into database {plan.target!r}: {str(exc).strip()}. Nothing was written "
            "to it (the copy is one transaction). The target holds rows that clash with the source's on a unique "
            "column: export into a database that only `migrate` has written (its content types and permissions "
            "are matched to the source's), or empty the clashing table."
        ) from None
    except DatabaseError as exc:
        raise ExportError(
            f"the rows could not be written into database {plan.target!r}: {str(exc).strip()}. Nothing was written "
            "to it (the copy is one transaction); run the export again once the cause is fixed."
        ) from None
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes.models import ContentType  # noqa: PLC0415 - only where it is installed

        ContentType.objects.clear_cache()  # this process may have cached the target's ids from before
    return RowsResult(plan, method, rekeyed, len(statements), time.monotonic() - started)


def _fields(model: Model) -> list[models.Field]:
    """The columns of the model's own table that a row is written with (generated columns compute themselves)."""
    return [f for f in model._meta.local_concrete_fields if not getattr(f, "generated", False)]


def _source_rows(source: str, model: Model, fields: Sequence[models.Field]) -> Iterator[tuple[Any, ...]]:
    query = model._base_manager.using(source).order_by().values_list(*(f.attname for f in fields))
    return query.iterator(chunk_size=BATCH_ROWS)


def _preparer(connection: BaseDatabaseWrapper, fields: Sequence[models.Field]) -> Callable[[tuple], list[Any]]:
    """Turn a row of Python values into the target's column values, as Django saves them (no ``pre_save``)."""
    preps = [functools.partial(f.get_db_prep_save, connection=connection) for f in fields]
    return lambda row: [prep(value) for prep, value in zip(preps, row, strict=True)]


def _upsert_suffix(connection: BaseDatabaseWrapper, model: Model, columns: list[str]) -> str:
    pk = model._meta.pk.column
    updates = [c for c in columns if c != pk]
    on_conflict = OnConflict.UPDATE if updates else OnConflict.IGNORE
    return connection.ops.on_conflict_suffix_sql(columns, on_conflict, updates, [pk])


class _RawCursor:
    """``with _RawCursor(connection) as execute``: the driver's own cursor, for bulk statements.

    Django's debug cursor would keep every statement with its values in
    memory (``connection.queries``) when DEBUG is on. Errors still become Django's.
    """

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection

    def __enter__(self) -> Callable[[str, Sequence[Any]], None]:
        self._wrapper = self.connection.cursor()
        self.cursor = self._wrapper.cursor

        def execute(sql: str, params: Sequence[Any]) -> None:
            with self.connection.wrap_database_errors:
                self.cursor.execute(sql, params or None)  # none: no placeholders to fill in

        return execute

    def __exit__(self, *exc: object) -> None:
        self._wrapper.close()


def _insert_batches(connection: BaseDatabaseWrapper, source: str, model: Model, progress: Progress) -> int:
    """Upsert the model's rows in multi-row INSERT statements."""
    fields = _fields(model)
    qn = connection.ops.quote_name
    columns = [f.column for f in fields]
    per_statement = max(
        1, min(connection.ops.bulk_batch_size(fields, range(BATCH_ROWS)), MAX_PARAMETERS // len(fields))
    )
    head = f"INSERT INTO {qn(model._meta.db_table)} ({', '.join(qn(c) for c in columns)}) VALUES "
    suffix = _upsert_suffix(connection, model, columns)
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    prepare = _preparer(connection, fields)
    copied = 0
    with _RawCursor(connection) as execute:
        for batch in _batches(_source_rows(source, model, fields), per_statement):
            params = [value for row in batch for value in prepare(row)]
            execute(head + ", ".join([one] * len(batch)) + " " + suffix, params)
            copied += len(batch)
            progress(len(batch))
    return copied


def _copy_table(connection: BaseDatabaseWrapper, source: str, model: Model, progress: Progress) -> int:
    """Stream the model's rows with COPY into a temporary table like its own, then upsert them in one statement."""
    fields = _fields(model)
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    columns = ", ".join(qn(f.column) for f in fields)
    prepare = _preparer(connection, fields)
    copied = 0
    with _RawCursor(connection) as execute:
        execute(f"CREATE TEMPORARY TABLE {_STAGE} ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA", ())
        with connection.wrap_database_errors:
            # psycopg's COPY: rows are sent as they are written, with the same adapters as query parameters.
            cursor = connection.cursor()
            try:
                with cursor.cursor.copy(f"COPY {_STAGE} ({columns}) FROM STDIN") as stream:
                    for batch in _batches(_source_rows(source, model, fields), BATCH_ROWS):
                        for row in batch:
                            stream.write_row(prepare(row))
                        copied += len(batch)
                        progress(len(batch))
            finally:
                cursor.close()
        suffix = _upsert_suffix(connection, model, [f.column for f in fields])
        execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {_STAGE} {suffix}", ())
        execute(f"DROP TABLE {_STAGE}", ())
    return copied


def _batches(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- rows the target made itself: the source's primary keys ---------------------------------------------


def _identity(model: Model) -> list[models.Field] | None:
    """The unique columns that say which row of a natural-keyed model is which, besides its primary key.

    None for a model without a natural key (``natural_key()`` and its manager's
    ``get_by_natural_key``), or with a primary key that is not an integer.
    """
    opts = model._meta
    if not (callable(getattr(model, "natural_key", None)) and hasattr(model._default_manager, "get_by_natural_key")):
        return None
    if not isinstance(opts.pk, models.IntegerField):
        return None
    sets: list[Sequence[str]] = [*opts.unique_together, *(c.fields for c in opts.total_unique_constraints)]
    sets += [[f.name] for f in opts.local_concrete_fields if f.unique and not f.primary_key]
    if not sets:
        return None
    return [opts.get_field(name) for name in sets[0]]  # type: ignore[misc]


def _take_source_keys(source: str, connection: BaseDatabaseWrapper, chosen: list[Model]) -> dict[str, int]:
    """Give the target's rows of natural-keyed models the primary keys of the source's rows they match.

    Models go in the order their identities depend on each other
    (content types before permissions, whose identity names one).
    """
    keyed = {m: ident for m in chosen if (ident := _identity(m)) is not None}
    done: dict[str, int] = {}
    remaining = list(keyed)
    while remaining:
        ready = [m for m in remaining if not any(_points_at(f, other) for f in keyed[m] for other in remaining)]
        model = (ready or remaining)[0]  # a cycle cannot be ordered; take them as they come
        remaining.remove(model)
        if not model._base_manager.using(connection.alias).exists():
            continue  # the usual case: nothing of this model in the target yet
        mapping = _mapping(source, connection.alias, model, keyed[model])
        if mapping:
            _rekey(connection, model, mapping, _referrers(model, chosen))
            done[model._meta.label_lower] = len(mapping)
    return done


def _points_at(field_: models.Field, model: Model) -> bool:
    return bool(field_.is_relation and field_.related_model is model)


def _mapping(source: str, target: str, model: Model, identity: list[models.Field]) -> dict[int, int]:
    """Target primary key -> the one it must have: the source's row of the same identity, or a free one.

    The target's rows are compared in batches with the source's rows of the
    same primary keys, so that a target that holds the source's rows already
    (a second export) costs one pass and little memory; only the rows that
    differ are looked up by identity.
    """
    pk = model._meta.pk.attname
    names = [pk, *(f.attname for f in identity)]
    ours = model._base_manager.using(source).order_by()
    theirs = model._base_manager.using(target).order_by().values_list(*names).iterator(chunk_size=BATCH_ROWS)
    differing: list[tuple[tuple[Any, ...], int]] = []  # (identity, target pk) of target rows the source has not so
    for batch in _batches(theirs, BATCH_ROWS):
        same_pk = {row[0]: row[1:] for row in ours.filter(pk__in=[row[0] for row in batch]).values_list(*names)}
        differing += [(row[1:], row[0]) for row in batch if same_pk.get(row[0]) != row[1:]]
    if not differing:
        return {}
    matched: dict[tuple[Any, ...], int] = {}
    comparable = [key for key, _pk in differing if None not in key]  # NULLs are never equal in a unique column
    for start in range(0, len(comparable), 200):
        where = models.Q()
        for key in comparable[start : start + 200]:
            where |= models.Q(**dict(zip(names[1:], key, strict=True)))
        matched.update({row[1:]: row[0] for row in ours.filter(where).values_list(*names)})
    mapping = {was: matched[key] for key, was in differing if key in matched and matched[key] != was}
    alone = [was for key, was in differing if key not in matched]  # rows only the target has
    taken = set(ours.filter(pk__in=alone).values_list(pk, flat=True))  # ... on a primary key the source uses
    highest = max(
        ours.aggregate(top=models.Max(pk))["top"] or 0,
        model._base_manager.using(target).aggregate(top=models.Max(pk))["top"] or 0,
    )
    for offset, was in enumerate(sorted(taken), start=1):
        mapping[was] = highest + offset  # moved aside, to a key neither database uses
    return mapping


def _referrers(model: Model, chosen: list[Model]) -> list[tuple[str, str]]:
    """``(table, column)`` of every foreign key to the model's primary key, among the copied models' tables."""
    found = []
    for other in chosen:
        for f in other._meta.local_concrete_fields:
            if _points_at(f, model) and f.target_field == model._meta.pk:  # type: ignore[attr-defined]
                found.append((other._meta.db_table, f.column))
    return found


def _rekey(
    connection: BaseDatabaseWrapper, model: Model, mapping: dict[int, int], referrers: list[tuple[str, str]]
) -> None:
    """Renumber rows and the foreign keys to them in two passes, through negative numbers no row has, so that no
    intermediate state breaks a unique constraint. Foreign keys are checked at the end of the transaction."""
    qn = connection.ops.quote_name
    columns = [(model._meta.db_table, model._meta.pk.column), *referrers]
    first = [(-new, old) for old, new in mapping.items()]
    second = [(new, -new) for new in mapping.values()]
    with _RawCursor(connection) as execute:
        for pairs in (first, second):
            for table, column in columns:
                for to, was in pairs:
                    execute(f"UPDATE {qn(table)} SET {qn(column)} = %s WHERE {qn(column)} = %s", (to, was))
