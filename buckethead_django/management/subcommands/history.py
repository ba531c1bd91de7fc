"""``manage.py buckethead history``: every restorable snapshot, or every point."""

from __future__ import annotations

from django.core.management.base import CommandParser

from .. import display
from ..bucket import Bucket
from .base import Options, Subcommand, SubparsersAction, add_parser
from .describe import entry_data


class History(Subcommand):
    """`manage.py buckethead history`: every restorable snapshot, or every point."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        history = add_parser(
            commands,
            parser,
            "history",
            "Every restorable snapshot: the generations, newest first (the current one marked), then labelled ones.",
            self.history,
        )
        history.add_argument(
            "--points",
            action="store_true",
            help="List every restorable point instead: each generation's base and each flush after it.",
        )

    def history(self, options: Options) -> None:
        """Every restorable snapshot: generations newest first (the current one marked), labels, a 0.4.x one."""
        bucket = Bucket.open()
        if options["points"]:
            self._points(options, bucket)
            return
        entries = bucket.history.snapshots()
        if not entries:
            lines = [f"No snapshots yet in {bucket.describe()}."]
        else:
            rows = [
                (
                    e.name,
                    "current" if e.current else e.kind,
                    display.size(e.size),
                    display.when(e.last_modified),
                    e.sha256[:12] or "-",
                    "signed" if e.signed else "unsigned",
                )
                for e in entries
            ]
            lines = display.table(("NAME", "KIND", "SIZE", "WRITTEN", "SHA256", "SIGNATURE"), rows)
            self._note(
                options,
                "`latest` names the current generation and `previous` the one before it; restore any of these "
                "with `manage.py buckethead restore NAME`.",
            )
        self._emit(options, [entry_data(e) for e in entries], lines)

    def _points(self, options: Options, bucket: Bucket) -> None:
        points = bucket.history.points()
        rows = [
            (
                p.name,
                "current" if p.current else ("base" if p.deltas == 0 else "flush"),
                display.when(display.utc(p.at)),
            )
            for p in points
        ]
        lines = (
            display.table(("POINT", "KIND", "WRITTEN"), rows) if rows else [f"No snapshots yet in {bucket.describe()}."]
        )
        if rows:
            self._note(
                options,
                "Restore a point with `manage.py buckethead restore POINT`, or the newest one at or before a time "
                "with `manage.py buckethead restore --at TIME`.",
            )
        data = [
            {
                "name": p.name,
                "generation": p.generation.name,
                "deltas": p.deltas,
                "at": display.utc(p.at),
                "current": p.current,
            }
            for p in points
        ]
        self._emit(options, data, lines)
