"""The bucket as an operator command sees it, and the writer rules every change follows.

The database lives in the memory of one writer process, which snapshots it to
the bucket; a change written to the bucket by anyone else would be silently
overwritten by that writer's next flush. So a command that changes state:

- uses this process's own engine when this process is the writer
  (``BUCKETHEAD['AUTOSTART'] = True``, or the engine of a test run);
- refuses, changing nothing, while another live process holds the writer
  lease, and says what to do instead;
- otherwise becomes the writer for the length of the change: it starts an
  engine of its own (restoring the latest snapshot and taking the lease),
  makes the change, and stops it, which flushes and releases the lease
  before the command reports success.

Reads follow the same split: this process's writer engine if it is one,
else the read-only view `runtime.get_buckethead()` restores from the latest
snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from .. import runtime
from ..conf import get_settings
from ..engine import (
    BucketConfig,
    BucketSQLite,
    History,
    ObjectStore,
    SnapshotConfig,
    WriterLease,
    open_object_store,
    read_lease,
)
from ..roles import Role
from . import display

#: Exit status of a command refused because another process is the live writer.
WRITER_RUNNING = 3


@dataclass(frozen=True)
class Bucket:
    """Where the state lives (config and store), and this process's writer engine if it has one."""

    config: BucketConfig
    store: ObjectStore
    own: BucketSQLite | None

    @classmethod
    def open(cls) -> Bucket:
        """The configured bucket; this process's own engine's bucket when it is the writer."""
        own = _own_writer()
        if own is not None:
            return cls(own.config, own.store, own)
        settings = get_settings()
        if settings.errors:
            problems = " ".join(f"{p.msg} {p.hint}" for p in settings.errors)
            raise CommandError(
                f"BucketHead is not configured correctly: {problems} (run `manage.py check` for details)"
            )
        config = settings.bucket_config()
        try:
            store = open_object_store(config)
        except ValueError as exc:  # botocore rejects a malformed endpoint URL when the client is built
            raise CommandError(f"cannot use the configured bucket: {exc}") from exc
        return cls(config, store, None)

    def describe(self) -> str:
        return self.store.describe()

    @property
    def history(self) -> History:
        """The bucket's generations, labels and current record: this process's engine's, or read directly."""
        return self.own.history if self.own is not None else History(self.store, self.config.key)

    # -- who writes --------------------------------------------------------------------

    def lease(self) -> WriterLease | None:
        """The bucket's writer lease, live or expired, whoever holds it."""
        return read_lease(self.store, self.config.key)

    def is_own(self, lease: WriterLease) -> bool:
        """True if ``lease`` is the one this process's own engine holds."""
        mine = self.own.lease if self.own is not None else None
        return mine is not None and mine.same_holder(lease)

    def live_writer(self) -> WriterLease | None:
        """The lease of a live writer other than this process's own engine, if one holds the bucket."""
        lease = self.lease()
        if lease is None or not lease.live or self.is_own(lease):
            return None
        return lease

    @contextmanager
    def writer(self, refusal: Callable[[WriterLease], str]) -> Iterator[BucketSQLite]:
        """A writable engine for one change, flushed to the bucket when the block ends.

        Raises `CommandError` (exit status `WRITER_RUNNING`) with ``refusal(lease)``
        while another process is the live writer; nothing is touched then.
        """
        if self.own is not None:
            yield self.own
            self.own.force_flush()
            return
        self.refuse_if_writer_running(refusal)
        engine = self._start_writer()
        try:
            yield engine
        finally:
            engine.stop()  # the final flush, then the lease is released

    def refuse_if_writer_running(self, refusal: Callable[[WriterLease], str]) -> None:
        """Raise `CommandError` (exit status `WRITER_RUNNING`) if another process is the live writer."""
        lease = None if self.own is not None else self.live_writer()
        if lease is not None:
            raise CommandError(refusal(lease), returncode=WRITER_RUNNING)

    def _start_writer(self) -> BucketSQLite:
        """A short-lived writer with the project's settings; no flush loop, its `stop()` flushes."""
        return self.stopped_writer().start()

    def stopped_writer(self) -> BucketSQLite:
        """A writer engine with the project's settings, not started (`BucketSQLite.recover` needs one).

        It does not wait for the lease: the command has refused already if
        a live writer held it, so one that appears meanwhile is a conflict
        to report at once.
        """
        return get_settings().engine(store=self.store, background_flush=False, lease_wait=0.0)

    def snapshot_config(self) -> SnapshotConfig:
        """When snapshots are written and how many are kept: the writer's own, else the settings'."""
        return self.own.snapshot_config if self.own is not None else get_settings().snapshot_config()

    def signing_keys(self) -> tuple[bytes | None, tuple[bytes, ...]]:
        """The key this process signs snapshots with (None: signing is off), and every key they verify with."""
        if self.own is not None:
            return self.own.signing_key, self.own.verify_keys
        keys = get_settings().signing_keys()
        return (keys[0] if keys else None), tuple(keys)

    # -- reading -----------------------------------------------------------------------

    def reader(self) -> BucketSQLite:
        """The engine to read from: this process's writer, else the read-only view of the latest snapshot."""
        if self.own is not None:
            return self.own
        try:
            return runtime.get_buckethead()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc


def holder(lease: WriterLease) -> str:
    """``web-1:4242, running since ... (5 minutes ago), lease renewed ...``: who writes, and how fresh that is."""
    return (
        f"{lease.holder}, running since {display.when(lease.started_at)}, lease renewed "
        f"{display.relative(lease.renewed_at)}, expires {display.relative(lease.expires_at)}"
    )


#: Why a change must not be made beside a running writer, for changes to the database.
OVERWRITTEN = "Its next flush would silently overwrite the change."


def refuse(doing: str, instead: str, why: str = OVERWRITTEN) -> Callable[[WriterLease], str]:
    """The refusal of a change while another process writes: what, why, and what to do instead."""

    def message(lease: WriterLease) -> str:
        return (
            f"refusing to {doing}: a live writer holds the bucket ({holder(lease)}). {why} {instead} If that "
            f"process is gone without releasing its lease, run this command again once the lease has expired. "
            "Nothing was changed."
        )

    return message


def as_of(engine: BucketSQLite) -> dt.datetime | None:
    """The time of the snapshot a read-only view shows; None for a writer (it is the live state)."""
    if not engine.read_only or engine.restored_from is None:
        return None
    return display.utc(engine.restored_from.last_modified)


def _own_writer() -> BucketSQLite | None:
    """This process's engine, if this process may write (the writer role, or a test run's engine)."""
    if runtime.role() not in (Role.WRITER, Role.TEST):
        return None
    try:
        engine = runtime.get_buckethead()
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from exc
    return None if engine.read_only else engine
