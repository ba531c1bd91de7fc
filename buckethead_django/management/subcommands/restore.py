"""``manage.py buckethead restore``: make a snapshot, a point or a local file the live state, or download one."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from ...engine import CurrentSnapshotCorrupt, SnapshotCorrupt, SnapshotEntry, WriterLease
from ...engine.history import LATEST
from .. import display
from ..bucket import Bucket, refuse
from ..progress import ProgressBar
from .base import Options, Subcommand, SubparsersAction, add_parser, add_yes
from .describe import RESTORE_INSTEAD, Damage, check_sqlite_file, entry_data, json_entries


class Restore(Subcommand):
    """`manage.py buckethead restore`: make a snapshot, a point or a local file the live state, or download one."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        restore = add_parser(
            commands,
            parser,
            "restore",
            "Make a snapshot (or a local SQLite file) the live state of the host's database, or download one with "
            "--to-file. The state it replaces is kept as a labelled snapshot. Refused while a writer on another host "
            "holds the bucket.",
            self.restore,
        )
        restore.add_argument(
            "snapshot", nargs="?", metavar="SNAPSHOT", help="A name shown by `history`, or latest or previous."
        )
        restore.add_argument("--file", type=Path, metavar="PATH", help="Restore this local SQLite file instead.")
        restore.add_argument(
            "--at",
            metavar="TIME",
            help="Restore the newest point flushed at or before TIME: an ISO 8601 time (UTC unless it names a "
            "zone), or an age such as --at=-90s, --at=-10m, --at=-2h or --at=-1d.",
        )
        restore.add_argument(
            "--to-file",
            type=Path,
            metavar="PATH",
            help="Only download SNAPSHOT (default: latest) to a new SQLite file, for offline inspection.",
        )
        add_yes(restore)

    def restore(self, options: Options) -> None:
        """Replace the host's database with a snapshot or a local file; or, with --to-file, only download one."""
        name: str | None = options["snapshot"]
        file: Path | None = options["file"]
        if options["at"] is not None:
            if name is not None or file is not None:
                raise CommandError("give a snapshot's name, --at TIME or --file PATH, not several")
            name = self._point_at(self._bucket(), options["at"])
        if options["to_file"] is not None:
            if file is not None:
                raise CommandError("--to-file downloads a snapshot from the bucket; it cannot be used with --file")
            self._download(options, name or LATEST, options["to_file"])
            return
        if (name is None) == (file is None):
            raise CommandError("give either the name of a snapshot (see `manage.py buckethead history`) or --file PATH")
        bucket = self._bucket()
        source: str | Path
        if file is not None:
            described = check_sqlite_file(file)
            source, total = file, 0
        else:
            entry = self._find_snapshot(bucket, name or "")
            described = _describe(name or "", entry)
            source, total = entry.name, entry.size  # the name resolved now: `previous` must not move meanwhile
        refusal = refuse(f"restore {described}", RESTORE_INSTEAD)
        bucket.refuse_if_other_host(refusal)  # before asking: the answer would not matter
        if not options["yes"]:
            self._confirm(
                options,
                f"Restore {described} as the live state of {bucket.describe()}?\n"
                "Every process of this host sees it from its next transaction. The state it replaces is kept "
                "first as a labelled snapshot, so this can be undone.",
            )
        damaged: Damage | None = None
        kept: SnapshotEntry | None = None
        with self._progress(options, f"Downloading {source}", total) as bar:
            try:
                with bucket.writer(refusal) as engine:
                    kept = engine.restore(source, progress=bar)
            except CurrentSnapshotCorrupt as damage:
                # No engine can start over the damaged current snapshot, so none can keep it first either.
                damaged = self._recover(bucket, source, described, damage, progress=bar)
            except SnapshotCorrupt as exc:
                raise CommandError(
                    f"{described} cannot be restored: it failed verification ({exc.reason}). Nothing was changed."
                ) from None
        current = bucket.history.find(LATEST)
        if kept is not None:
            after = (
                f"The state it replaced is kept as snapshot {kept.name!r}; to undo: "
                f"manage.py buckethead restore {kept.name}"
            )
        else:
            gone = damaged or Damage(None, "", "")
            after = (
                f"The current snapshot{_named(gone.name)} could not be loaded ({gone.reason}), so it could not be "
                "kept first; it stays in the bucket until retention prunes it."
            )
        then = (
            "the next process of the site to start on this host restores it"
            if damaged is not None
            else "every process of this host reads it from its next transaction"
        )
        lines = [
            self.style.SUCCESS(f"Restored {described} as the live state of {bucket.describe()}."),
            after,
            f"The current generation is now {current.name}: {then}.",
        ]
        data = {
            "restored": str(source),
            "from": "file" if file is not None else "snapshot",
            "kept": kept,
            "current": current,
            "latest_was_damaged": damaged is not None,
            "damaged": None if damaged is None else dataclasses.asdict(damaged),
        }
        self._emit(options, json_entries(data), lines, report=True)

    def _recover(
        self,
        bucket: Bucket,
        source: str | Path,
        described: str,
        damage: CurrentSnapshotCorrupt,
        *,
        progress: ProgressBar,
    ) -> Damage:
        """Make ``source`` the current generation of a bucket whose current snapshot fails verification."""
        try:
            current = bucket.history.current()
        except SnapshotCorrupt:
            current = None
        name = current.record.name if current is not None and current.record is not None else None
        try:
            bucket.stopped_writer().recover(source, progress=progress)
        except SnapshotCorrupt as exc:
            raise CommandError(
                f"{described} cannot be restored either: it failed verification ({exc.reason}). Nothing was changed."
            ) from None
        return Damage(name, damage.key, damage.reason)

    def _download(self, options: Options, name: str, dest: Path) -> None:
        """Download a snapshot to a new local file; it is verified there and removed if it does not verify."""
        if dest.exists():
            raise CommandError(f"{dest} already exists; choose another path or remove it first. Nothing was written.")
        bucket = self._bucket()
        entry = self._find_snapshot(bucket, name)
        if entry.current and (lease := _live_lease(bucket)) is not None:
            self._note(
                options,
                f"A live writer holds the bucket ({lease.holder}): changes it has not flushed yet are not in this "
                "file.",
            )
        _, keys = bucket.signing_keys()
        with self._progress(options, f"Downloading {name}", entry.size) as bar:
            try:
                bucket.history.fetch(entry.record, dest, keys=keys, progress=bar, deltas=entry.deltas)
            except SnapshotCorrupt as exc:
                raise CommandError(
                    f"snapshot {name!r} failed verification ({exc.reason}); nothing was written to {dest}"
                ) from None
        lines = [f"Downloaded {_describe(name, entry)} to {dest}.", f"Inspect it with: sqlite3 {dest}"]
        self._emit(options, {"snapshot": entry_data(entry), "path": str(dest)}, lines, report=True)

    def _point_at(self, bucket: Bucket, text: str) -> str:
        """The name of the newest restorable point flushed at or before the time ``text`` gives."""
        try:
            when = display.parse_when(text, now=time.time())
        except ValueError as exc:
            raise CommandError(f"--at {exc}") from None
        try:
            return bucket.history.find_at(when).name
        except KeyError:
            raise CommandError(
                f"no restorable point of {bucket.describe()} was flushed at or before "
                f"{display.when(display.utc(when))}; "
                "`manage.py buckethead history --points` lists them"
            ) from None

    def _find_snapshot(self, bucket: Bucket, name: str) -> SnapshotEntry:
        try:
            return bucket.history.find(name)
        except KeyError:
            names = [e.name for e in bucket.history.snapshots()]
            known = f"restorable snapshots: {', '.join(names)}" if names else "it holds no snapshots yet"
            raise CommandError(f"there is no snapshot named {name!r} in {bucket.describe()}; {known}") from None


def _describe(name: str, entry: SnapshotEntry) -> str:
    """``snapshot 'previous' (0000000041-..., 36.0 KB, written ...)``: what the operator named, and what it is."""
    resolved = f"{entry.name}, " if entry.name != name else ""
    return f"snapshot {name!r} ({resolved}{display.size(entry.size)}, written {display.when(entry.last_modified)})"


def _named(name: str | None) -> str:
    return f" ({name})" if name else ""


def _live_lease(bucket: Bucket) -> WriterLease | None:
    lease = bucket.lease()
    return lease if lease is not None and lease.live else None
