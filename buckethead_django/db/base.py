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
  "database is locked" instead of waiting its turn.
- Django's test runner gets its usual throwaway SQLite test database, never
  the engine's: the test runner sets ``NAME`` to it, and a ``NAME`` is used
  as it is.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base as sqlite3_base
from django.db.backends.sqlite3.client import DatabaseClient as SQLiteClient

from .. import runtime
from ..engine.database import HostDatabase


class DatabaseClient(SQLiteClient):
    """``manage.py dbshell``: the sqlite3 shell on the host's database."""

    @classmethod
    def settings_to_cmd_args_env(cls, settings_dict: dict[str, Any], parameters: list[str]) -> tuple[list[str], None]:
        name = settings_dict["NAME"] or str(runtime.get_buckethead().database.path)
        return [cls.executable_name, name, *parameters], None


TRANSACTION_MODES = ("DEFERRED", "EXCLUSIVE", "IMMEDIATE")


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    display_name = "BucketHead (SQLite)"
    client_class = DatabaseClient
    #: Whether this process may only read (a process on a host that is not the bucket's writer).
    read_only = False

    def get_connection_params(self) -> dict[str, Any]:
        if self.settings_dict["NAME"]:
            return super().get_connection_params()  # the test runner's database (a NAME anywhere else is refused)
        engine = runtime.get_buckethead()
        declared = self.settings_dict
        options = dict(declared.get("OPTIONS") or {})
        mode = options.pop("transaction_mode", "IMMEDIATE")
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
        params["database"] = f"file:{engine.database.path}?mode=rw"
        params.setdefault("timeout", engine.busy_timeout)
        self.read_only = engine.read_only
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        conn = super().get_new_connection(conn_params)
        if not self.settings_dict["NAME"]:
            HostDatabase.configure(conn, read_only=self.read_only)
        return conn

    def _start_transaction_under_autocommit(self) -> None:
        """``BEGIN IMMEDIATE`` by default (see the module's docstring); Django 4.2 reads no ``transaction_mode``."""
        mode = getattr(self, "transaction_mode", None)
        self.cursor().execute(f"BEGIN {mode}" if mode else "BEGIN")
