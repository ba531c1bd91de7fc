"""The bucket and the host as an operator command sees them, and the rule every change follows.

A ``manage.py buckethead`` process is a process of the site like any other
(see the host model, ``docs/host.md``): on the writer host it attaches to
the host's database, which every process of the site there shares, and
reads and writes it. With a server running it is a member and the server's
replicator ships what it changes; with none running it is the host's
replicator itself for as long as it runs, and its exit makes the final
flush. So a command that changes state:

- on the writer host, makes the change in the host's database and flushes
  it to the bucket (asking the replicator, when that is another process)
  before it reports success. Every process of the host sees the change at
  its next transaction: nothing can overwrite it.
- refuses, changing nothing, while a live writer on **another** host holds
  the bucket's lease: that host's database does not have the change, so its
  next flush would overwrite it. It says what to do instead.

Reads follow the same split: the host's live database on the writer host,
else a read-only copy of the latest snapshot (the command says how old).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from .. import runtime
from ..conf import BucketHeadSettings, get_settings
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
from ..engine.database import DATABASE_NAME, LocalDir
from ..engine.host import HOST_FILE
from ..engine.processes import process_running
from ..roles import Role
from . import display

#: Exit status of a command refused because a live writer on another host holds the bucket.
WRITER_RUNNING = 3


class Bucket:
    """Where the state lives (config and store), the host this process is on, and its engine once attached."""

    def __init__(
        self,
        config: BucketConfig,
        store: ObjectStore,
        own: BucketSQLite | None = None,
        settings: BucketHeadSettings | None = None,
    ) -> None:
        self.config = config
        self.store = store
        #: This process's engine, attached to the host's database (None until a subcommand needs it).
        self.own = own
        self._settings = settings
        self._view: BucketSQLite | None = None

    @classmethod
    def open(cls) -> Bucket:
        """The configured bucket; the bucket of this process's engine when the process runs one already.

        A server's process (and a test run) has its engine already; any other
        process attaches on first use, after `other_host_writer` has said
        whether it may, so that a command never waits out ``LEASE_WAIT`` for
        another host.
        """
        if runtime.role() in (Role.SERVER, Role.TEST):
            own = _process_engine()
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
        return cls(config, store, None, settings)

    def close(self) -> None:
        """Stop the read-only copy a read may have opened (this process's engine stops when the process exits)."""
        view, self._view = self._view, None
        if view is not None:
            view.stop()

    def describe(self) -> str:
        return self.store.describe()

    @property
    def history(self) -> History:
        """The bucket's generations, labels and current record: this process's engine's, or read directly."""
        return self.own.history if self.own is not None else History(self.store, self.config.key)

    # -- the host --------------------------------------------------------------------------

    def host_engine(self) -> BucketSQLite:
        """An engine for what the host says of itself (its directory, replicator, set-aside copies).

        This process's engine when it is attached to the host; otherwise one
        that is built with the project's settings but never started.
        """
        if self.own is not None and (not self.own.read_only or self.own.replica):
            return self.own
        return self.stopped_writer()

    @property
    def local(self) -> LocalDir:
        """Where the host's database lives, and why there."""
        return self.own.local if self.own is not None else self._project_settings().local_dir

    def host_token(self) -> str:
        """This host's identity (see `engine.host.Host.token`); empty if no process of the site ran here yet."""
        try:
            raw = json.loads((self.local.path / HOST_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return ""
        token = raw.get("token") if isinstance(raw, dict) else None
        return token if isinstance(token, str) else ""

    # -- who writes --------------------------------------------------------------------

    def lease(self) -> WriterLease | None:
        """The bucket's writer lease, live or expired, whoever holds it."""
        return read_lease(self.store, self.config.key)

    def is_own(self, lease: WriterLease) -> bool:
        """True if ``lease`` is the one this process's own engine holds (it is the host's replicator)."""
        mine = self.own.lease if self.own is not None else None
        return mine is not None and mine.same_holder(lease)

    def is_this_host(self, lease: WriterLease) -> bool:
        """True if ``lease`` is held for this host's database (by this process or another of the host)."""
        if self.is_own(lease):
            return True
        token = self.host_token()
        return bool(token) and lease.host_token == token

    def other_host_writer(self) -> WriterLease | None:
        """The lease of a live writer on another host, if one holds the bucket; None on the writer host.

        A lease of this host's replicator is no obstacle (this process shares
        its database), nor is a lease whose holder on this machine no longer
        runs (a crash left it behind).
        """
        if self.own is not None and not self.own.read_only:
            return None  # attached to the host: its replicator holds the lease, or this host is fenced
        lease = self.lease()
        if lease is None or not lease.live or self.is_this_host(lease):
            return None
        if lease.host == socket.gethostname() and not process_running(lease.pid, lease.start_ticks):
            return None
        return lease

    def refuse_if_other_host(self, refusal: Callable[[WriterLease], str]) -> None:
        """Raise `CommandError` (exit status `WRITER_RUNNING`) if a live writer on another host holds the bucket."""
        lease = self.other_host_writer()
        if lease is not None:
            raise CommandError(refusal(lease), returncode=WRITER_RUNNING)

    def attach(self) -> BucketSQLite:
        """This process's engine, attached to the host's database (as its replicator, or a member)."""
        if self.own is None:
            self.own = _process_engine()
        return self.own

    @contextmanager
    def writer(self, refusal: Callable[[WriterLease], str]) -> Iterator[BucketSQLite]:
        """The host's database for one change, flushed to the bucket when the block ends without an error.

        Raises `CommandError` (exit status `WRITER_RUNNING`) with ``refusal(lease)``
        while a live writer on another host holds the bucket; nothing is touched then.
        """
        self.refuse_if_other_host(refusal)
        engine = self.attach()
        if engine.read_only:  # another host took the bucket meanwhile, and this process serves a copy
            lease = self.lease()
            if lease is not None:
                raise CommandError(refusal(lease), returncode=WRITER_RUNNING)
            raise CommandError(f"{engine.read_only_reason} Nothing was changed.")
        yield engine
        engine.force_flush()

    def stopped_writer(self) -> BucketSQLite:
        """An engine with the project's settings, not started (`BucketSQLite.recover` needs one).

        It does not wait for the lease: the command has refused already if
        a live writer held it, so one that appears meanwhile is a conflict
        to report at once.
        """
        if self.own is not None and self._settings is None:  # a server's or a test's engine: build a sibling
            own = self.own
            return BucketSQLite(
                own.config, own.snapshot_config, store=own.store, background_flush=False, lease_wait=0.0,
                signing_key=own.signing_key, verify_keys=own.verify_keys, local_dir=own.local,
            )  # fmt: skip
        return self._project_settings().engine(store=self.store, background_flush=False, lease_wait=0.0)

    def snapshot_config(self) -> SnapshotConfig:
        """When snapshots are written and how many are kept: the engine's own, else the settings'."""
        return self.own.snapshot_config if self.own is not None else self._project_settings().snapshot_config()

    def signing_keys(self) -> tuple[bytes | None, tuple[bytes, ...]]:
        """The key this process signs snapshots with (None: signing is off), and every key they verify with."""
        if self.own is not None:
            return self.own.signing_key, self.own.verify_keys
        keys = self._project_settings().signing_keys()
        return (keys[0] if keys else None), tuple(keys)

    def _project_settings(self) -> BucketHeadSettings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    # -- reading -----------------------------------------------------------------------

    @property
    def replica(self) -> bool:
        """True on a read replica's host (``ROLE = "replica"``): its database follows the bucket."""
        return self.own.replica if self.own is not None else self._project_settings().replica

    def reader(self) -> BucketSQLite:
        """The engine to read from: the host's live database (a replica's, which follows the bucket), or a
        read-only copy of the latest snapshot while a writer on another host holds the bucket."""
        if self.own is not None:
            return self.own
        if self._view is not None:
            return self._view
        lease = self.other_host_writer()
        if lease is None or self.replica:
            return self.attach()
        reason = (
            f"a live writer on another host holds {self.describe()} ({lease.holder}): this command reads a copy "
            "of the latest snapshot, and changes nothing."
        )
        self._view = self._project_settings().engine(store=self.store, background_flush=False, read_only_reason=reason)
        return self._view.start()


def _process_engine() -> BucketSQLite:
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


#: Why a change must not be made on a host that is not the writer's, for changes to the database.
OVERWRITTEN = "That host's database does not have the change, so its next flush would silently overwrite it."


def refuse(doing: str, instead: str, why: str = OVERWRITTEN) -> Callable[[WriterLease], str]:
    """The refusal of a change while a writer on another host holds the bucket: what, why, what to do instead."""

    def message(lease: WriterLease) -> str:
        return (
            f"refusing to {doing}: a live writer on another host holds the bucket ({holder(lease)}). {why} "
            f"{instead} If that process is gone without releasing its lease, run this command again once the "
            "lease has expired. Nothing was changed."
        )

    return message


def as_of(engine: BucketSQLite) -> dt.datetime | None:
    """The time of the snapshot a read-only copy shows; None for the host's database (it is the live state)."""
    if not engine.read_only or engine.restored_from is None:
        return None
    return display.utc(engine.restored_from.last_modified)


def database_path(local: LocalDir) -> Path:
    """The host's database file in ``local``."""
    return local.path / DATABASE_NAME
