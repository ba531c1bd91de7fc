"""The process's one engine, and the role it plays.

`AppConfig.ready()` calls `configure()` once with the role decided from how
the process was started (see `roles`). The writer starts at once; a reader
or a test engine starts on first use of `get_buckethead()`. Adapters (cache,
storage, commands, admin) reach the engine only through this module.
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
#: Set once the process has begun exiting: no engine may start again (a late request would restart a writer).
_exiting = False


def configure(decision: Decision) -> None:
    """Record this process's role; start the writer now if the role says so."""
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
            # another live writer (WriterConflict): the error is raised on, so the process never serves an
            # empty database, and logged first, since a server's traceback is easily lost among its output.
            logger.error(
                "BucketHead could not start the writer in pid %d, so this process does not serve: %s", os.getpid(), exc
            )
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
    """The process's engine, started on first use if it is not running yet.

    In the serving process it is the writer. In other processes (``migrate``,
    ``shell``, scripts) it is a read-only view of the latest snapshot, and
    any write raises `ReadOnlyError` saying why. Under a test runner it is a
    throwaway engine on a temporary directory.
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
                f"BucketHead has stopped in pid {os.getpid()}: the process is exiting after its final flush, so it "
                "starts no engine again. Retry the request once the server is back."
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
            engine = settings.engine(
                read_only_reason=None if current.role is Role.WRITER else _read_only_reason(),
                **signals.engine_callbacks(),
            )
        engine.start()
        _engine = engine
        if not engine.read_only:
            shutdown.install(_stop_at_exit)
        logger.info(
            "BucketHead started as %s in pid %d on %s (%s)",
            "read-only reader" if engine.read_only else current.role,
            os.getpid(),
            engine.store.describe(),
            current.reason,
        )
        return engine


def _read_only_reason() -> str:
    why = (_decision or _undecided()).reason
    return (
        f"BucketHead is read-only in this process ({why}): only the serving process (runserver, gunicorn, "
        "uvicorn...) writes, so that it never overwrites changes made elsewhere. Make the change through the "
        "running site, or set BUCKETHEAD['AUTOSTART'] = True to make this process the writer while no server runs."
    )


def throwaway_engine(config: BucketConfig, **engine_kwargs: Any) -> BucketSQLite:
    """An engine for tests: no flush loop and no debounce, so every flush a test asks for happens."""
    engine_kwargs.setdefault("background_flush", False)
    return BucketSQLite(config, SnapshotConfig(min_interval_seconds=0), **engine_kwargs)


def _test_engine() -> BucketSQLite:
    path = tempfile.mkdtemp(prefix="buckethead-test-")
    _temp_dirs.append(path)
    return throwaway_engine(BucketConfig.local(path))


def stop() -> None:
    """Stop the engine (the writer makes its final flush). Safe to call more than once.

    The engine stays the process's engine until it has stopped, so a request
    still running meanwhile is refused its writes rather than given a new one.
    If the final flush fails, the database is kept in a local file. The log
    says which of these happened, since an operator reads it to know whether
    the bucket holds the last changes.
    """
    global _engine  # noqa: PLW0603
    with _lock:
        engine = _engine
    if engine is None:
        return
    try:
        engine.stop()
    except Exception:
        if engine.started and not engine.read_only:
            path = engine.save_local_copy("shutdown")
            if engine.fenced is not None:  # taken over before this flush: the bucket is fine, it is someone else's
                logger.error(
                    "BucketHead's final flush in pid %d was refused: another writer has taken the bucket over, so "
                    "the changes made here since then are not in it. The database is saved in %s; compare it with "
                    "the bucket and restore it (`python manage.py buckethead restore --file %s`) only if it holds "
                    "what you need.",
                    os.getpid(),
                    path,
                    path,
                )
            else:
                logger.error(
                    "BucketHead's final flush failed in pid %d; the database is saved in %s. Once the bucket is "
                    "back, restore it with `python manage.py buckethead restore --file %s`.",
                    os.getpid(),
                    path,
                    path,
                )
        raise
    finally:
        with _lock:
            if _engine is engine and not engine.started:
                _engine = None
    if not engine.read_only:
        _log_stopped(engine)


def _log_stopped(engine: BucketSQLite) -> None:
    """Say how a writer that stopped without an error left the bucket: flushed, unchanged, or fenced off."""
    if engine.fenced is not None:
        # A fenced writer makes no final flush (it would roll the bucket back): it saved a local copy instead.
        logger.warning(
            "BucketHead stopped in pid %d without a final flush: another writer had taken the bucket over, so the "
            "changes made here since then are not in the bucket. The database is saved in the local file named "
            "in the error above (`buckethead restore --file` restores it).",
            os.getpid(),
        )
        return
    result = engine.last_flush  # set by the final flush of engine.stop(), which raises if it cannot flush
    if result is not None and result.uploaded:
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

    The child starts an engine of its own, restored from the bucket, on first use.
    """
    global _engine  # noqa: PLW0603
    _engine = None


os.register_at_fork(after_in_child=_forget_inherited_engine)


@contextlib.contextmanager
def use_engine(engine: BucketSQLite) -> Iterator[BucketSQLite]:
    """Make ``engine`` the process's engine for the duration of the block (tests)."""
    global _engine  # noqa: PLW0603
    with _lock:
        previous, _engine = _engine, engine
    try:
        yield engine
    finally:
        with _lock:
            _engine = previous
