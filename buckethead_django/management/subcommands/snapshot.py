"""``manage.py buckethead snapshot``: take a point-in-time snapshot now, or keep a labelled copy of the latest one."""

from __future__ import annotations

import os
import socket

from django.core.management.base import CommandError, CommandParser

from ...engine import PreconditionFailed, SnapshotEntry
from ...engine.history import LATEST, timestamped_label, validate_label
from ...engine.record import LABELLED, LEGACY
from .. import display
from ..bucket import Bucket
from .base import Options, Subcommand, SubparsersAction, add_parser
from .describe import entry_line, json_entries, latest_snapshot, lease_data


class Snapshot(Subcommand):
    """`manage.py buckethead snapshot`: take a point-in-time snapshot now, or keep a labelled copy of the latest one."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        snapshot = add_parser(
            commands,
            parser,
            "snapshot",
            "Take a point-in-time snapshot now. On the writer host it flushes the host's database; while a writer on "
            "another host holds the bucket it keeps a labelled copy of the latest durable snapshot instead. "
            "Labelled snapshots are never removed.",
            self.snapshot,
        )
        snapshot.add_argument(
            "--label", metavar="NAME", help="Keep the snapshot under this name (default: manual-<UTC time>)."
        )

    def snapshot(self, options: Options) -> None:
        """Flush the host's database on the writer host; else keep a labelled copy of the latest durable snapshot."""
        label: str | None = options["label"]
        if label is not None:
            try:
                validate_label(label)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        bucket = self._bucket()
        if label is not None:
            self._refuse_existing_label(bucket, label)
        lease = bucket.other_host_writer()
        if lease is None:
            engine = bucket.attach()
            if engine.read_only:
                raise CommandError(f"{engine.read_only_reason} Nothing was changed.")
            if latest_snapshot(bucket) == (None, None) and not engine.dirty:
                raise CommandError(
                    f"there is no snapshot in {bucket.describe()} yet, and nothing has been written to the host's "
                    "database: there is nothing to snapshot"
                )
            size = engine.stats()["database_bytes"]
            with self._progress(options, "Uploading the snapshot", size) as bar:
                entry = engine.snapshot(label or _default_label(), progress=bar)
            source = bucket.history.find(LATEST)
            lines = [
                f"Flushed the host's database to {bucket.describe()} as generation {source.name}, and kept it as "
                f"{entry_line(entry)}."
            ]
            data = {"snapshot": entry, "flushed": True, "source": source, "writer": None}
        else:
            try:
                source = bucket.history.find(LATEST)
            except KeyError:
                raise CommandError(
                    f"there is no snapshot in {bucket.describe()} yet, so there is nothing to copy; "
                    "the writer's first flush makes one"
                ) from None
            entry = _copy_to_label(bucket, source, label or _default_label())
            why = (
                f"A live writer on another host holds the bucket ({lease.holder}), and this process must not "
                f"overwrite its data: the copy is of the latest durable snapshot, {source.name}, written "
                f"{display.relative(source.last_modified)}. Changes the writer has not flushed since then are "
                "not in it."
            )
            lines = [why, f"Kept it as {entry_line(entry)}."]
            data = {
                "snapshot": entry,
                "flushed": False,
                "source": source,
                "writer": lease_data(lease, bucket),
            }
        self._emit(options, json_entries(data), lines, report=True)

    def _refuse_existing_label(self, bucket: Bucket, label: str) -> None:
        """A label names one snapshot for good: never replace it silently."""
        try:
            existing = bucket.history.find(label)
        except KeyError:
            return
        raise CommandError(
            f"a snapshot labelled {label!r} already exists (written {display.when(existing.last_modified)}); "
            "choose another label. Nothing was changed."
        )


def _copy_to_label(bucket: Bucket, source: SnapshotEntry, label: str) -> SnapshotEntry:
    """Keep ``source`` under ``label`` by server-side copies, signed by this process; the live data is untouched.

    The source's signature is checked first, so a copy never vouches for a
    snapshot this project did not write; its content is checked whenever
    the copy is loaded, against the digests the copy's record carries.
    """
    signing_key, keys = bucket.signing_keys()
    if source.kind != LEGACY:
        source.record.verify_signature(keys)
    try:
        record = bucket.history.copy(
            source.record,
            label,
            LABELLED,
            seq=source.record.seq,
            writer=f"{socket.gethostname()}:{os.getpid()} (manage.py buckethead snapshot)",
            signing_key=signing_key,
            keys=keys,
            deltas=source.deltas,
        )
    except (FileExistsError, PreconditionFailed):
        raise CommandError(f"a snapshot labelled {label!r} already exists; choose another label") from None
    return bucket.history.find(record.name)


def _default_label() -> str:
    return timestamped_label("manual")
