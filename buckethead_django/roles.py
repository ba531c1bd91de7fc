"""Which role this process plays, decided from how it was started.

A pure function of the command line, the environment and ``AUTOSTART``, so
the rules can be read (and tested) in one place:

- Under a test runner (``manage.py test``, pytest): a throwaway engine on a
  temporary directory that never touches the configured bucket, whatever
  ``AUTOSTART`` says, so a test run can never overwrite real data.
- ``AUTOSTART = True``: the writer, whatever else the process is.
- ``AUTOSTART = False``: never a writer; touching the engine gives a reader.
- ``manage.py runserver``: the writer in the autoreloader's serving child
  (``RUN_MAIN=true``) or with ``--noreload``; nothing in the reloader's parent.
- Any other management command (``migrate``, ``shell``, ``collectstatic``...):
  a reader, restored lazily and read-only.
- A WSGI/ASGI server (gunicorn, uvicorn, daphne, hypercorn, granian, uWSGI,
  waitress, mod_wsgi): the writer, when it loads the application.
- Anything else (a script, a worker): a reader.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


class Role(enum.StrEnum):
    WRITER = "writer"  # owns the database: restores at start, snapshots, flushes at exit
    READER = "reader"  # a read-only view of the latest snapshot, restored on first use
    TEST = "test"  # a throwaway engine on a temporary directory
    IDLE = "idle"  # runserver's autoreloader parent: starts nothing, its child serves


RUNSERVER_COMMANDS = frozenset({"runserver", "runserver_plus"})
TEST_COMMANDS = frozenset({"test", "testserver"})
MANAGE_PROGRAMS = frozenset({"manage.py", "django-admin", "django-admin.py"})
SERVER_PROGRAMS = frozenset(
    {"gunicorn", "uvicorn", "daphne", "hypercorn", "granian", "uwsgi", "waitress-serve", "mod_wsgi-express"}
)
SERVER_MODULES = frozenset(
    {"gunicorn.arbiter", "uvicorn.server", "daphne.server", "hypercorn.run", "uwsgi", "mod_wsgi"}
)


@dataclass(frozen=True)
class Decision:
    """The role, whether to start it at ``ready()`` (else on first use), and why."""

    role: Role
    eager: bool
    reason: str


def _program_and_command(argv: Sequence[str]) -> tuple[str, str | None]:
    """The program's name, and the management command when the program is ``manage.py`` or ``django-admin``."""
    program = os.path.basename(argv[0]) if argv else ""
    if program == "__main__.py" and len(argv[0].split(os.sep)) >= 2:
        program = argv[0].split(os.sep)[-2]  # python -m gunicorn / python -m django
    is_manage = program in MANAGE_PROGRAMS or program == "django"
    return program, (argv[1] if len(argv) > 1 else "help") if is_manage else None


def running_tests(argv: Sequence[str], modules: Collection[str]) -> bool:
    """True under a test runner (``manage.py test``, pytest): such a process must never reach the configured bucket."""
    return _program_and_command(argv)[1] in TEST_COMMANDS or "pytest" in modules or "_pytest" in modules


def decide(  # noqa: PLR0911 - a decision table reads best as early returns
    argv: Sequence[str],
    environ: Mapping[str, str],
    autostart: bool | None,
    modules: Collection[str],
) -> Decision:
    program, command = _program_and_command(argv)

    # First: nothing, not even AUTOSTART left in a developer's environment, makes a test run a writer.
    if running_tests(argv, modules):
        return Decision(Role.TEST, False, "running tests: a throwaway engine on a temporary directory")
    if autostart is True:
        return Decision(Role.WRITER, True, "BUCKETHEAD['AUTOSTART'] is True")
    if autostart is False:
        return Decision(Role.READER, False, "BUCKETHEAD['AUTOSTART'] is False")
    if command in RUNSERVER_COMMANDS:
        if "--noreload" in argv or environ.get("RUN_MAIN") == "true":
            return Decision(Role.WRITER, True, f"`manage.py {command}` serving process")
        return Decision(Role.IDLE, False, f"`manage.py {command}` autoreloader parent (its child serves)")
    if command is not None:
        return Decision(Role.READER, False, f"`manage.py {command}` does not serve requests")
    if program in SERVER_PROGRAMS or any(m in modules for m in SERVER_MODULES):
        return Decision(Role.WRITER, True, f"application loaded by a WSGI/ASGI server ({program or 'embedded'})")
    return Decision(Role.READER, False, f"{program or 'this process'} is not a known server")
