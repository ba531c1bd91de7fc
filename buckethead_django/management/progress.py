"""A progress bar for transfers worth watching, fed by the engine's (and boto3's) progress callback.

It draws only when its stream is a terminal and the transfer is larger than
`MIN_BYTES`: piped output, logs and small objects never fill up with
carriage returns. boto3 calls the callback from its worker threads, so the
count is kept under a lock.
"""

from __future__ import annotations

import threading
from types import TracebackType

from django.core.management.base import OutputWrapper

from .display import size

#: Transfers smaller than this finish too quickly for a bar to help.
MIN_BYTES = 4 * 1024 * 1024
WIDTH = 30


class ProgressBar:
    """Call it with the bytes moved since the last call (boto3's ``Callback``); use it as a context manager."""

    def __init__(
        self, out: OutputWrapper, label: str, total: int, *, min_bytes: int = MIN_BYTES, quiet: bool = False
    ) -> None:
        self.out = out
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = not quiet and out.isatty() and total >= min_bytes
        self._drawn = -1
        self._lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            if not self.enabled:
                return
            percent = min(100, self.done * 100 // self.total) if self.total else 100
            if percent != self._drawn:  # redraw at most a hundred times per transfer
                self._drawn = percent
                self._draw(percent)

    def _draw(self, percent: int) -> None:
        filled = WIDTH * percent // 100
        bar = "#" * filled + "." * (WIDTH - filled)
        line = f"\r{self.label} [{bar}] {percent:3d}%  {size(self.done)} of {size(self.total)}"
        self.out.write(line, style_func=lambda s: s, ending="")
        self.out.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._drawn >= 0:
            self.out.write("", style_func=lambda s: s)  # end the bar's line, unstyled, so what follows starts afresh
