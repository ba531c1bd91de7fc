"""``manage.py buckethead <subcommand>``: see, snapshot, restore, import and inspect BucketHead's state.

stdout carries the answer — text for a person, or JSON with ``--json`` — and
stderr carries notes (how old the data shown is), prompts and progress bars,
so the answer can be piped. Every failure is one line and a non-zero exit
status, and leaves the bucket as it was. The command is a process of the
site like any other: on the writer host it reads and writes the host's
database, and changes follow the rule of `buckethead_django.management.bucket`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...engine import BucketHeadError, CurrentSnapshotCorrupt, SnapshotCorrupt, WriterConflict
from ..bucket import WRITER_RUNNING, Bucket
from ..subcommands import SUBCOMMANDS
from ..subcommands.base import TerseParser, subcommand_group


class Command(BaseCommand):
    help = (
        "Operate BucketHead: status, flush, snapshot, history, restore, import an existing SQLite database, and "
        "inspect KV entries and files. Run `manage.py buckethead <subcommand> --help` for each."
    )
    # It must run on a project whose checks fail, to show what is wrong; BucketHead's settings are checked here.
    requires_system_checks: list[str] = []  # noqa: RUF012 - Django's own attribute, declared as in Django
    stealth_options = ("stdin",)

    # -- the command line ----------------------------------------------------------------

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subcommands = [subcommand(self) for subcommand in SUBCOMMANDS]
        self._opened: list[Bucket] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = TerseParser  # Django builds the parser itself; only how it reports errors differs
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        commands = subcommand_group(parser, "subcommand")
        for subcommand in self.subcommands:
            subcommand.add_to(commands, parser)

    def handle(self, *args: Any, **options: Any) -> None:
        self._opened = []
        logs = logging.getLogger("buckethead_django")
        level = logs.level
        if options["verbosity"] == 0:
            # Only warnings and errors: on the command line for the rest of the run, its final flush at exit too.
            logs.setLevel(max(logging.WARNING, level))
        try:
            options["handler"](options)
        except CurrentSnapshotCorrupt as exc:  # no engine can load the current snapshot; the message says what to do
            raise CommandError(str(exc)) from exc
        except SnapshotCorrupt as exc:
            raise CommandError(
                f"{exc} To restore a good snapshot with this command: `manage.py buckethead history`, then "
                "`manage.py buckethead restore NAME`."
            ) from exc
        except WriterConflict as exc:  # a writer took the lease between the command's check and its start
            raise CommandError(str(exc), returncode=WRITER_RUNNING) from exc
        except BucketHeadError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:  # a local file or directory that cannot be read or written
            raise CommandError(str(exc)) from exc
        finally:
            for bucket in self._opened:
                bucket.close()
            if not self._called_from_command_line:
                logs.setLevel(level)

    def open_bucket(self) -> Bucket:
        """The bucket, and the host this process is on; what it opened is closed when the subcommand ends."""
        bucket = Bucket.open()
        self._opened.append(bucket)
        return bucket
