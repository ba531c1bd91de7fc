"""When this process attaches to the host's database, decided from how it was started.

Every process of the site on the writer host reads and writes the host's
database; which one is the host's replicator is settled by a lock between
them (see `buckethead_django.engine.host`), not here. What is decided here
is only whether the process attaches at ``ready()`` or on first use, and
whether it may touch the configured bucket at all. A pure function of the
command line, the environment and ``AUTOSTART``, so the rules can be read
(and tested) in one place:

- Under a test runner (``manage.py test``, pytest): a throwaway engine on a
  temporary directory that never touches the configured bucket, whatever
  ``AUTOSTART`` says, so a test run can never overwrite real data.
- ``AUTOSTART = True``: attach at ``ready()``, whatever else the process is.
- ``AUTOSTART = False``: attach on first use only.
- ``manage.py runserver``: its serving child (``RUN_MAIN=true``, or with
  ``--noreload``) attaches at ``ready()``; the reloader's parent attaches
  nothing.
- A WSGI/ASGI server (gunicorn, uvicorn, daphne, hypercorn, granian, uWSGI,
  waitress, mod_wsgi): each worker attaches when it loads the application.
- Any other process (``migrate``, ``shell``, a cron command, a task worker,
  a script): attaches on first use.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


class Role(enum.StrEnum):
    SERVER = "server"  # serves requests: attaches to the host's database at ready()
    PROCESS = "process"  # any other process of the site: attaches on first use
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

    # First: nothing, not even AUTOSTART left in a developer's environment, makes a test run reach the bucket.
    if running_tests(argv, modules):
        return Decision(Role.TEST, False, "running tests: a throwaway engine on a temporary directory")
    if autostart is True:
        return Decision(Role.SERVER, True, "BUCKETHEAD['AUTOSTART'] is True")
    if autostart is False:
        return Decision(Role.PROCESS, False, "BUCKETHEAD['AUTOSTART'] is False")
    if command in RUNSERVER_COMMANDS:
        if "--noreload" in argv or environ.get("RUN_MAIN") == "true":
            return Decision(Role.SERVER, True, f"`manage.py {command}` serving process")
        return Decision(Role.IDLE, False, f"`manage.py {command}` autoreloader parent (its child serves)")
    if command is not None:
        return Decision(Role.PROCESS, False, f"`manage.py {command}` attaches on first use")
    if program in SERVER_PROGRAMS or any(m in modules for m in SERVER_MODULES):
        return Decision(Role.SERVER, True, f"application loaded by a WSGI/ASGI server ({program or 'embedded'})")
    return Decision(Role.PROCESS, False, f"{program or 'this process'} attaches on first use")
