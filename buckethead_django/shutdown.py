"""Leave the host's database when the process exits, without stealing the server's signals.

At exit every process that attached leaves the host (`runtime.stop`): the
host's replicator makes its final flush first, and the host's last process
releases the bucket's lease.

``atexit`` covers every exit that goes through Python: a gunicorn worker
leaving its loop, ``KeyboardInterrupt`` under runserver or uvicorn, ``sys.exit``.
For SIGTERM and SIGINT a handler is chained in front of whatever was
installed before: a server's own handler still runs (so it drains requests
and shuts down gracefully); where there was none, the signal becomes a normal
Python exit so ``atexit`` runs instead of the process dying on the spot.

uvicorn restores the default SIGTERM action after its graceful shutdown and
re-raises the signal, which would end the process before ``atexit``; its
server's ``shutdown()`` is therefore extended to flush right after it has
drained the last request.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger("buckethead_django")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_installed: list[Callable[[], None]] = []
_previous: dict[int, Any] = {}


def install(final_flush: Callable[[], None]) -> None:
    """Arrange for ``final_flush`` to run once at process exit. Idempotent."""
    if final_flush in _installed:
        return
    _installed.append(final_flush)
    atexit.register(final_flush)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still applies
    for sig in HANDLED_SIGNALS:
        previous = signal.getsignal(sig)
        if previous is _chained:
            continue
        _previous[sig] = previous
        _hook_uvicorn(previous, final_flush)
        signal.signal(sig, _chained)


def run_final_flush(final_flush: Callable[[], None]) -> None:
    """Run ``final_flush`` with SIGINT and SIGTERM ignored, so a second signal cannot cut it short.

    A terminal's Ctrl-C reaches every process of the group, and a supervisor
    may follow up with SIGTERM: the process is exiting either way, and half a
    flush would lose what a whole one saves. SIGKILL still works.
    """
    if threading.current_thread() is not threading.main_thread():
        final_flush()
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in HANDLED_SIGNALS}
    try:
        final_flush()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def forward_interrupt_to_children() -> bool:
    """In the autoreloader's parent: on SIGINT, ask the serving child to stop, then wait for it.

    Django's autoreloader kills its child 0.25 s after the parent is
    interrupted, which can cut the child's final flush short. Instead the
    parent sends the child SIGTERM and keeps waiting; when the child has
    flushed and exited, the parent exits with it. Linux only (children are
    found in /proc); elsewhere Django's behaviour is unchanged.
    """
    if threading.current_thread() is not threading.main_thread() or not _children_file().exists():
        return False
    signal.signal(signal.SIGINT, _forward_to_children)
    return True


#: How long the parent lets a child that got the same Ctrl-C stop on its own before asking it to.
FORWARD_DELAY = 1.0


def _forward_to_children(signum: int, frame: FrameType | None) -> None:
    """Ask the children to stop, a moment later.

    After a terminal's Ctrl-C the child got the signal too and is already
    exiting; a second signal arriving just as its exit begins could cut its
    final flush short. Waiting a moment lets that child get into the flush,
    which ignores further signals, while a child that got nothing still stops.
    """
    threading.Timer(FORWARD_DELAY, _terminate_children, args=(_child_pids(),)).start()


def _terminate_children(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _children_file() -> Path:
    return Path(f"/proc/self/task/{threading.get_native_id()}/children")


def _child_pids() -> list[int]:
    pids: list[int] = []
    for path in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids.extend(int(p) for p in path.read_text().split())
    return pids


def _chained(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # The default action would kill the process before atexit runs: leave through Python instead.
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _hook_uvicorn(handler: Any, final_flush: Callable[[], None]) -> None:
    """If ``handler`` is a uvicorn server's, flush at the end of that server's graceful shutdown."""
    server = getattr(handler, "__self__", None)
    if server is None or not type(server).__module__.startswith("uvicorn."):
        return
    original = getattr(server, "shutdown", None)
    if original is None or getattr(original, "_buckethead_flush", False):
        return

    async def shutdown_then_flush(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        await asyncio.get_running_loop().run_in_executor(None, final_flush)

    shutdown_then_flush._buckethead_flush = True  # type: ignore[attr-defined]
    server.shutdown = shutdown_then_flush
    logger.debug("BucketHead will flush at the end of uvicorn's graceful shutdown")
