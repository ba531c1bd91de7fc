"""The process's one engine, and when it attaches.

`AppConfig.ready()` calls `configure()` once with the role decided from how
the process was started (see `roles`). A server's process attaches to the
host's database at once; any other process, or a test run's throwaway
engine, on first use of `get_buckethead()`. Adapters (the database backend,
cache, storage, commands, admin) reach the engine only through this module.

Every process of the site on the writer host attaches to the same database
(see `buckethead_django.engine.core`): the first becomes the host's
replicator, the others members. At exit each one leaves the host
(`stop()`): the replicator ships what changed first, and the last process
out releases the bucket's lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import shutdown, signals
from .conf import get_settings
from .engine import BucketConfig, BucketHeadError, BucketSQLite, NotStarted, SnapshotConfig
from .roles import Decision, Role, running_tests

logger = logging.getLogger("buckethead_django")

_lock = threading.RLock()
_decision: Decision | None = None
_engine: BucketSQLite | None = None
_temp_dirs: list[str] = []
#: Set once the process has begun exiting: no engine may start again (a late request would attach it again).
_exiting = False


def configure(decision: Decision) -> None:
    """Record this process's role; attach to the host's database now if the role says so (a server)."""
    global _decision  # noqa: PLW0603 - one runtime per process, by design
    with _lock:
        _decision = decision
    logger.debug("BucketHead role: %s (%s)", decision.role, decision.reason)
    if decision.role is Role.IDLE:  # the autoreloader's parent: let its serving child finish flushing
        shutdown.forward_interrupt_to_children()
    if decision.eager:
        settings = get_settings()
        if settings.errors:
            logger.error(
                "BucketHead was not started: the configuration has errors (run `manage.py check`): %s",
                "; ".join(p.msg for p in settings.errors),
            )
            return
        try:
            _start()
        except BucketHeadError as exc:
            # A damaged current snapshot (CurrentSnapshotCorrupt), an unreachable bucket (BucketUnavailable),
            # another host keeping the bucket's lease (WriterConflict): the error is raised on, so the process never
            # serves an empty database, and logged first, since a server's traceback is easily lost among its output.
            logger.error("BucketHead could not start in pid %d, so this process does not serve: %s", os.getpid(), exc)
            raise


def role() -> Role:
    """This process's role, as `configure()` recorded it, else as `_undecided()` says."""
    return (_decision or _undecided()).role


def decision() -> Decision | None:
    return _decision


def _undecided() -> Decision:
    """The role of a process whose role Django has not decided (before ``ready()``, or without the app installed).

    Under a test runner it is still the throwaway engine: a test must never
    reach the configured bucket, not even to read it.
    """
    if running_tests(sys.argv, sys.modules.keys()):
        return Decision(Role.TEST, False, "running tests: a throwaway engine on a temporary directory")
    return Decision(Role.IDLE, False, "Django has not decided this process's role")


def get_buckethead() -> BucketSQLite:
    """The process's engine, attached to the host's database on first use if it is not yet.

    Every process of the site on the writer host (servers, ``migrate``,
    ``shell``, scripts) reads and writes the host's database; one of them is
    the host's replicator. On a host that cannot get the bucket's lease it
    fails with `WriterConflict`, or with ``LEASE_CONFLICT = "read-only"``
    is a read-only view of the latest snapshot whose writes raise
    `ReadOnlyError`. Under a test runner it is a throwaway engine on a
    temporary directory.
    """
    engine = _engine
    if engine is not None and engine.started:
        return engine
    return _start()


def _start() -> BucketSQLite:
    global _engine  # noqa: PLW0603
    with _lock:
        if _engine is not None and _engine.started:
            return _engine
        if _exiting:
            raise NotStarted(
                f"BucketHead has stopped in pid {os.getpid()}: the process is exiting and has left the host's "
                "database, so it attaches no engine again. Retry the request once the server is back."
            )
        current = _decision or _undecided()
        settings = get_settings()
        if current.role is Role.TEST:
            engine = _test_engine()
        else:
            if settings.errors:
                raise ImproperlyConfigured(
                    "BucketHead is not configured correctly: "
                    + " ".join(f"{p.msg} {p.hint}" for p in settings.errors)
                    + " (run `manage.py check` for details)"
                )
            engine = settings.engine(**signals.engine_callbacks())
        engine.start()
        _engine = engine
        # Every process leaves the host at exit: the replicator ships, the last one out releases the lease, and a
        # read-only view removes its private copy.
        shutdown.install(_stop_at_exit)
        _log_started(engine, current)
        return engine


def _log_started(engine: BucketSQLite, current: Decision) -> None:
    """One line: this process's role on its host (``replicator``, ``member``, ``replica`` or ``read-only``), pid and
    bucket."""
    if engine.replica:
        info = engine.replicator_info()
        follows = "this process follows the bucket" if engine.follower is not None else "following the bucket"
        if engine.follower is None and info is not None:
            follows = f"pid {info.pid} follows the bucket"
        logger.info(
            "BucketHead started as replica in pid %d on %s (%s; a read replica: %s every %gs into %s, and refuses "
            "writes)",
            os.getpid(),
            engine.store.describe(),
            current.reason,
            follows,
            engine.poll_seconds,
            engine.local.path,
        )
        return
    if engine.read_only:
        logger.warning(
            "BucketHead started as read-only in pid %d on %s (%s): %s",
            os.getpid(),
            engine.store.describe(),
            current.reason,
            engine.read_only_reason,
        )
        return
    info = engine.replicator_info()
    replicator = (
        f"; the host's replicator is pid {info.pid}"
        if engine.role == "member" and info is not None and info.pid != os.getpid()
        else ""
    )
    logger.info(
        "BucketHead started as %s in pid %d on %s (%s; the host's database is in %s%s)",
        engine.role,
        os.getpid(),
        engine.store.describe(),
        current.reason,
        engine.local.path,
        replicator,
    )


def throwaway_engine(config: BucketConfig, **engine_kwargs: Any) -> BucketSQLite:
    """An engine for tests: no flush loop and no debounce, so every flush a test asks for happens."""
    engine_kwargs.setdefault("background_flush", False)
    return BucketSQLite(config, SnapshotConfig(min_interval_seconds=0), **engine_kwargs)


def _test_engine() -> BucketSQLite:
    path = Path(tempfile.mkdtemp(prefix="buckethead-test-"))
    _temp_dirs.append(str(path))
    return throwaway_engine(BucketConfig.local(path / "bucket"), local_dir=path / "host")


def stop() -> None:
    """Leave the host's database: the host's replicator makes its final flush first. Safe to call more than once.

    A member just leaves (the replicator ships what it changed), unless the
    replicator is gone: then it takes the role over to ship. The last
    process of the host releases the bucket's lease. The engine stays the
    process's engine until it has stopped, so a request still running
    meanwhile is refused its writes rather than given a new engine. If the
    final flush fails, the changes stay in the host's database, and a copy
    is kept in a local file. The log says which of these happened, since an
    operator reads it to know whether the bucket holds the last changes.
    """
    global _engine  # noqa: PLW0603
    with _lock:
        engine = _engine
    if engine is None:
        return
    was_replicator = engine.role == "replicator"
    try:
        engine.stop()
    except Exception:
        if engine.started and not engine.read_only:
            path = engine.save_local_copy("shutdown")
            if engine.fenced is not None:  # taken over before this flush: the bucket is fine, it is someone else's
                logger.error(
                    "BucketHead's final flush in pid %d was refused: another writer has taken the bucket over, so "
                    "the changes made on this host since then are not in it. The database is saved in %s; compare "
                    "it with the bucket and restore it (`python manage.py buckethead restore --file %s`) only if it "
                    "holds what you need.",
                    os.getpid(),
                    path,
                    path,
                )
            else:
                logger.error(
                    "BucketHead's final flush failed in pid %d, so the bucket lacks the latest changes. They stay "
                    "in the host's database in %s, which the next process to start on this host ships; in case "
                    "that directory does not survive, the database is also saved in %s. Once the bucket is back, "
                    "restore that file with `python manage.py buckethead restore --file %s` if it is needed.",
                    os.getpid(),
                    engine.local.path,
                    path,
                    path,
                )
        raise
    finally:
        with _lock:
            if _engine is engine and not engine.started:
                _engine = None
    if not engine.read_only:
        _log_stopped(engine, was_replicator=was_replicator)


def _log_stopped(engine: BucketSQLite, *, was_replicator: bool) -> None:
    """Say how a process that stopped without an error left the bucket: flushed, unchanged, fenced off, or left to
    the host's replicator."""
    result = engine.final_flush  # set by engine.stop() in the host's replicator, which raises if it cannot flush
    if engine.fenced is not None and result is None:
        if not was_replicator:
            logger.warning(
                "BucketHead left the host's database in pid %d without shipping: another writer had taken the "
                "bucket over, so the changes made on this host since then are not in the bucket. The host's "
                "replicator saves the database in a local file when it stops, and the host's next start sets its "
                "copy aside and restores the bucket's.",
                os.getpid(),
            )
            return
        # A fenced replicator makes no final flush (it would roll the bucket back): it saved a local copy instead.
        logger.warning(
            "BucketHead stopped in pid %d without a final flush: another writer had taken the bucket over, so the "
            "changes made on this host since then are not in the bucket. The database is saved in the local file "
            "named in the error above (`buckethead restore --file` restores it), and the host's next start sets "
            "its copy aside and restores the bucket's.",
            os.getpid(),
        )
        return
    if result is None:
        info = engine.replicator_info()
        if info is not None and info.ready and info.running:
            ships = f"the host's replicator (pid {info.pid}) ships what it changed"
        else:
            ships = "what it changed is shipped by the next process to start on this host"
        logger.info("BucketHead left the host's database in pid %d; %s", os.getpid(), ships)
    elif result.uploaded:
        logger.info(
            "BucketHead stopped in pid %d after its final flush (uploaded %d bytes as snapshot %s)",
            os.getpid(),
            result.bytes,
            result.generation,
        )
    else:
        logger.info(
            "BucketHead stopped in pid %d after its final flush (nothing had changed since the last snapshot)",
            os.getpid(),
        )


def _stop_at_exit() -> None:
    """At exit (atexit, a chained signal, the end of uvicorn's shutdown): leave the host, never to attach again.

    The replicator's final flush runs with SIGINT and SIGTERM ignored (see
    `shutdown.run_final_flush`); an error is logged, not raised, so the
    process still exits.
    """
    global _exiting  # noqa: PLW0603
    _exiting = True
    try:
        shutdown.run_final_flush(stop)
    except Exception:
        logger.exception("BucketHead's final flush failed")
    for path in _temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


def _forget_inherited_engine() -> None:
    """In a forked child (a worker of a preloading server), never touch the parent's SQLite connections.

    The child attaches to the host's database with an engine of its own, on first use (a member: the
    parent stays the host's replicator while it runs).
    """
    global _engine  # noqa: PLW0603
    _engine = None


os.register_at_fork(after_in_child=_forget_inherited_engine)


@contextlib.contextmanager
def use_engine(engine: BucketSQLite) -> Iterator[BucketSQLite]:
    """Make ``engine`` the process's engine for the duration of the block.

    Tests use it, and so does ``buckethead export``, which reads a private copy of the latest snapshot through
    Django's own connection, caches and storage.
    """
    global _engine  # noqa: PLW0603
    with _lock:
        previous, _engine = _engine, engine
    try:
        yield engine
    finally:
        with _lock:
            _engine = previous
