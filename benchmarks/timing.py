"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_op(fn: Callable[[int], object], n: int) -> float:
    """Median microseconds per call over 5 batches of ``n`` calls."""
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for i in range(n):
            fn(i)
        samples.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(samples)


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best
