"""``manage.py buckethead flush``: make the host's replicator ship what changed now."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from .. import display
from ..bucket import refuse
from .base import Options, Subcommand, SubparsersAction, add_parser
from .describe import CHANGE_INSTEAD


class Flush(Subcommand):
    """`manage.py buckethead flush`: make the host's replicator ship what changed now."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        add_parser(
            commands,
            parser,
            "flush",
            "Make the host's replicator (the running server's, or this process when no server runs) ship what "
            "changed to the bucket now, whatever the flush interval, and report what it did.",
            self.flush,
        )

    def flush(self, options: Options) -> None:
        """Ship the host's changes now: asked of the server's replicator when one runs, else done here."""
        bucket = self._bucket()
        bucket.refuse_if_other_host(refuse("flush this host's database", CHANGE_INSTEAD))
        engine = bucket.attach()
        if engine.read_only:
            raise CommandError(f"{engine.read_only_reason} Nothing was flushed.")
        result = engine.force_flush()
        where = bucket.describe()
        if result.uploaded:
            size = f" ({display.size(result.bytes)})" if result.bytes else ""
            line = f"Flushed the host's changes{size} to {where}: its newest point is now {result.point}."
        else:
            line = f"Nothing to flush: {where} already holds every change of the host's database ({result.point})."
        data = {"uploaded": result.uploaded, "reason": result.reason, "bytes": result.bytes, "point": result.point,
                "generation": result.generation, "at": result.at}  # fmt: skip
        self._emit(options, data, [self.style.SUCCESS(line)], report=True)
