"""System checks: configuration mistakes reported by ``manage.py check``, with a hint that says what to set."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings as django_settings
from django.core import checks

from .conf import get_settings
from .engine.database import DATABASE_NAME, database_bytes, problems
from .roles import running_tests

BACKEND = "buckethead_django.db"


@checks.register("buckethead")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for problem in get_settings().problems:
        level = checks.Error if problem.error else checks.Warning
        messages.append(level(problem.msg, hint=problem.hint, id=f"buckethead_django.{problem.id}"))
    return messages


@checks.register("buckethead")
def check_local_dir(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The host's database directory: writable, local, with room for the database; in RAM where it can be."""
    settings = get_settings()
    if settings.errors:
        return []
    local = settings.local_dir
    messages: list[checks.CheckMessage] = [
        checks.Error(message, id="buckethead_django.E101")
        for message in problems(local, needed_bytes=2 * database_bytes(local.path / DATABASE_NAME))
    ]
    if not messages and not local.ram_backed and settings.values["LOCAL_DIR"] is None:
        messages.append(
            checks.Warning(
                f"BucketHead keeps the host's database in {local.path} ({local.reason}), on a {local.filesystem} "
                "filesystem, not in memory.",
                hint="Give /dev/shm room (Docker: `--shm-size=1g`; Compose: `shm_size: 1g`) or set LOCAL_DIR to a "
                "RAM-backed directory, for memory speed.",
                id="buckethead_django.W101",
            )
        )
    return messages


@checks.register()  # a settings check: Django 6 runs database-tagged checks only with `check --database`
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A ``buckethead_django.db`` database names no file: the host's database is BucketHead's.

    Under a test runner NAME is the test database Django made, as it should be.
    """
    if running_tests(sys.argv, sys.modules.keys()):
        return []
    return [
        checks.Error(
            f"DATABASES[{alias!r}] uses {BACKEND!r} but sets NAME {declared['NAME']!r}.",
            hint="Remove NAME: this backend opens the host's BucketHead database, which the bucket keeps durable. "
            "To move an existing SQLite file in, run `python manage.py buckethead import-database PATH`.",
            id="buckethead_django.E102",
        )
        for alias, declared in django_settings.DATABASES.items()
        if declared.get("ENGINE") == BACKEND and declared.get("NAME")
    ]
