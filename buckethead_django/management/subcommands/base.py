"""What every subcommand of ``manage.py buckethead`` shares: its parser, its output, its bucket."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from django.core.management.base import CommandError, CommandParser, DjangoHelpFormatter, OutputWrapper
from django.core.management.color import Style
from django.core.serializers.json import DjangoJSONEncoder

from ...engine import BucketSQLite
from .. import display
from ..bucket import Bucket
from ..progress import ProgressBar

if TYPE_CHECKING:
    from ..commands.buckethead import Command

#: Exit status of a command line that argparse cannot make sense of.
USAGE_ERROR = 2
Options = dict[str, Any]
Handler = Callable[[Options], None]


class TerseParser(CommandParser):
    """Report a usage mistake in one line that points at ``--help``, instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        if not self.called_from_command_line:
            super().error(message)  # raises CommandError, as for every command run through call_command()
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}. Run `{self.prog} --help` for usage.\n")


#: The subparsers a subcommand is added to (argparse makes them generic only for type checkers).
SubparsersAction: TypeAlias = "argparse._SubParsersAction[TerseParser]"


class Subcommand:
    """One subcommand: `add_to` declares its arguments, and the handlers it names do its work.

    Output goes to the command's stdout and stderr, as Django's commands write them.
    """

    def __init__(self, command: Command) -> None:
        self.command = command

    @property
    def stdout(self) -> OutputWrapper:
        return self.command.stdout

    @property
    def stderr(self) -> OutputWrapper:
        return self.command.stderr

    @property
    def style(self) -> Style:
        return self.command.style

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        """Declare this subcommand (and its own subcommands) among ``commands``, the subparsers of ``parser``."""
        raise NotImplementedError

    def _bucket(self) -> Bucket:
        """The bucket, and the host this process is on; what it opened is closed when the subcommand ends."""
        return self.command.open_bucket()

    def _reader(self, options: Options) -> BucketSQLite:
        """The engine to read from, with a note saying how old its data is when it is not the live state."""
        engine = self._bucket().reader()
        if engine.replica:
            lag = engine.replica_lag
            self._note(
                options,
                "On a read replica: as of the writer's last flush it has followed"
                + ("" if lag is None else f" (it last found nothing newer in the bucket {lag:.0f}s ago)")
                + "; changes the writer has not flushed yet are not shown.",
            )
        elif engine.read_only:
            if engine.restored_from is None:
                self._note(options, "The bucket holds no snapshot yet: there is nothing to show.")
            else:
                self._note(
                    options,
                    f"As of the latest snapshot, written {display.when(engine.restored_from.last_modified)}: a "
                    "writer on another host holds the bucket, and changes it has not flushed yet are not shown.",
                )
        return engine

    def _note(self, options: Options, text: str) -> None:
        """A remark for the person at the terminal; scripts reading --json get the same facts as fields."""
        if not options["json"] and options["verbosity"] > 0:
            self.stderr.write(text, style_func=self.style.NOTICE)

    def _progress(self, options: Options, label: str, total: int) -> ProgressBar:
        """A progress bar on the terminal's stderr; none with ``-v 0``."""
        return ProgressBar(self.stderr, label, total, quiet=options["verbosity"] == 0)

    def _emit(self, options: Options, data: Any, lines: Iterable[str], *, report: bool = False) -> None:
        """The result: ``data`` as JSON with ``--json``, else ``lines``. A ``report`` of what a change did is
        left out with ``-v 0``, as Django's own commands do; data that was asked for is always printed."""
        if options["json"]:
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
        elif not (report and options["verbosity"] == 0):
            for line in lines:
                self.stdout.write(line)

    def _confirm(self, options: Options, question: str) -> None:
        """Ask on the terminal; anything but "yes" (or a closed stdin) cancels, changing nothing."""
        stdin = options.get("stdin") or sys.stdin
        self.stderr.write(f"{question}\nType 'yes' to continue: ", style_func=self.style.WARNING, ending="")
        self.stderr.flush()
        try:
            answer = stdin.readline()
        except KeyboardInterrupt:
            answer = ""
        if not (answer and stdin.isatty()):
            self.stderr.write(answer.strip())  # a terminal echoes the answer and the newline; elsewhere, do it here
        if not answer:
            raise CommandError(
                "no confirmation (standard input is closed): nothing was changed. Pass --yes to skip it."
            )
        if answer.strip().lower() not in ("yes", "y"):
            raise CommandError("cancelled: nothing was changed.")


def subcommand_group(parser: CommandParser, dest: str) -> argparse._SubParsersAction[TerseParser]:
    return parser.add_subparsers(dest=dest, metavar="SUBCOMMAND", required=True, parser_class=TerseParser)


def add_parser(
    commands: argparse._SubParsersAction[TerseParser],
    parent: CommandParser,
    name: str,
    summary: str,
    handler: Handler | None = None,
) -> TerseParser:
    """One subcommand; a leaf (one with a handler) also takes ``--json``."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        formatter_class=DjangoHelpFormatter,
        # Django < 5.1 does not hand this down to subparsers; without it their errors would raise tracebacks.
        called_from_command_line=parent.called_from_command_line,
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
        parser.add_argument("--json", action="store_true", help="Print the result as JSON, for scripts.")
        add_django_options(parser)
    return parser


def add_django_options(parser: CommandParser) -> None:
    """Django's common options, also after the subcommand, as every Django command takes them anywhere.

    Not given, they leave the value given before the subcommand (or Django's default) as it is.
    """
    keep = argparse.SUPPRESS
    parser.add_argument(
        "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=keep,
        help="Verbosity level; 0: only errors and the data asked for, 1: normal output.",
    )  # fmt: skip
    parser.add_argument("--settings", default=keep, help="A settings module, as for every Django command.")
    parser.add_argument("--pythonpath", default=keep, help="A directory to add to the Python path.")
    parser.add_argument("--traceback", action="store_true", default=keep, help="Raise on CommandError exceptions.")
    parser.add_argument("--no-color", action="store_true", default=keep, help="Don't colorize the command output.")
    parser.add_argument("--force-color", action="store_true", default=keep, help="Force colorization of the output.")


def add_yes(parser: CommandParser) -> None:
    parser.add_argument(
        "--yes", "--noinput", "--no-input", dest="yes", action="store_true", help="Do not ask for confirmation."
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value
