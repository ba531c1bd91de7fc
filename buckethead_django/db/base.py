"""Django's ORM on the host's BucketHead database.

This is Django's own sqlite3 backend, opened on the file every process of
the host shares (see `buckethead_django.engine.database`) instead of a file
named in ``NAME``: migrations, auth, sessions, the admin and the site's
models live there, and reach the bucket with everything else. Only three
things differ from the sqlite3 backend:

- The connection is opened on the engine's database, after the engine has
  attached to the host (restored it from the bucket if this host had no
  copy), with the host database's pragmas.
- Transactions begin with ``BEGIN IMMEDIATE`` (unless ``OPTIONS``
  ``transaction_mode`` says otherwise): several processes write this file,
  and a transaction that read first and then writes would fail with
  "database is locked" instead of waiting its turn. On a read replica
  (``ROLE = "replica"``), where no process writes, they begin deferred,
  so that readers never queue for a write lock.
- A write in a process that may only read (a read replica, a read-only
  view) raises `ReadOnlyError`, which says why and what to do, instead of
  SQLite's "attempt to write a readonly database".
- Django's test runner gets its usual throwaway SQLite test database, never
  the engine's: the test runner sets ``NAME`` to it, and a ``NAME`` is used
  as it is.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NoReturn

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base as sqlite3_base
from django.db.backends.sqlite3.client import DatabaseClient as SQLiteClient

from .. import runtime
from ..engine import ReadOnlyError
from ..engine.database import HostDatabase


class DatabaseClient(SQLiteClient):
    """``manage.py dbshell``: the sqlite3 shell on the host's database."""

    @classmethod
    def settings_to_cmd_args_env(cls, settings_dict: dict[str, Any], parameters: list[str]) -> tuple[list[str], None]:
        name = settings_dict["NAME"] or str(runtime.get_buckethead().database.path)
        return [cls.executable_name, name, *parameters], None


TRANSACTION_MODES = ("DEFERRED", "EXCLUSIVE", "IMMEDIATE")


class ReadOnlyCursor(sqlite3_base.SQLiteCursorWrapper):
    """Django's cursor, raising `ReadOnlyError` with the engine's reason when SQLite refuses a write."""

    reason = ""

    def execute(self, query: str, params: Any = None) -> Any:
        try:
            return super().execute(query, params)
        except sqlite3.OperationalError as exc:
            self._refuse(exc)

    def executemany(self, query: str, param_list: Any) -> Any:
        try:
            return super().executemany(query, param_list)
        except sqlite3.OperationalError as exc:
            self._refuse(exc)

    def _refuse(self, exc: sqlite3.OperationalError) -> NoReturn:
        if str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_READONLY"):
            raise ReadOnlyError(self.reason) from exc
        raise exc


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    display_name = "BucketHead (SQLite)"
    client_class = DatabaseClient
    #: Whether this process may only read (a read replica, or a process on a host that is not the bucket's writer).
    read_only = False
    #: Why, when it may only read.
    read_only_reason = ""
    #: The host's database, once a connection was opened on it (None: the test runner's database).
    host_database: HostDatabase | None = None

    def get_connection_params(self) -> dict[str, Any]:
        if self.settings_dict["NAME"]:
            return super().get_connection_params()  # the test runner's database (a NAME anywhere else is refused)
        engine = runtime.get_buckethead()
        declared = self.settings_dict
        options = dict(declared.get("OPTIONS") or {})
        # Nothing but the follower writes a replica's file: an IMMEDIATE transaction would queue readers for nothing.
        mode = options.pop("transaction_mode", "DEFERRED" if engine.replica else "IMMEDIATE")
        if mode is not None and str(mode).upper() not in TRANSACTION_MODES:
            raise ImproperlyConfigured(
                f"settings.DATABASES[{self.alias!r}]['OPTIONS']['transaction_mode'] is {mode!r}: use one of "
                f"{', '.join(TRANSACTION_MODES)}, or None (IMMEDIATE, the default, lets writers of several "
                "processes wait their turn)."
            )
        self.settings_dict = {**declared, "NAME": str(engine.database.path), "OPTIONS": options}
        try:
            params = super().get_connection_params()
        finally:
            self.settings_dict = declared
        self.transaction_mode = str(mode).upper() if mode else None
        params["database"] = f"file:{engine.database.path}?mode={engine.database.open_mode}"
        params.setdefault("timeout", engine.busy_timeout)
        self.read_only = engine.read_only
        self.read_only_reason = engine.read_only_reason or ""
        self.host_database = engine.database
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        conn = super().get_new_connection(conn_params)
        if not self.settings_dict["NAME"] and self.host_database is not None:
            self.host_database.configure(conn, read_only=self.read_only)
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        if not self.read_only:
            return super().create_cursor(name)
        cursor = self.connection.cursor(factory=ReadOnlyCursor)
        cursor.reason = self.read_only_reason
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        """``BEGIN IMMEDIATE`` by default (see the module's docstring); Django 4.2 reads no ``transaction_mode``."""
        mode = getattr(self, "transaction_mode", None)
        self.cursor().execute(f"BEGIN {mode}" if mode else "BEGIN")
