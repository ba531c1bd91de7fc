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


def per_call(fn: Callable[[int], object], n: int, *, start: int = 0) -> list[float]:
    """The microseconds of each of ``n`` calls ``fn(start)`` ... ``fn(start + n - 1)``."""
    samples = []
    clock = time.perf_counter
    for i in range(start, start + n):
        began = clock()
        fn(i)
        samples.append((clock() - began) * 1e6)
    return samples


def interleaved(fns: dict[str, tuple[Callable[[int], object], int]], rounds: int = 5) -> dict[str, float]:
    """Median microseconds per call of each ``name: (fn, calls per round)``, the names taking turns round by round.

    On a shared machine the load drifts: taking turns spreads the drift over
    every peer alike, and the median of single calls ignores the calls that
    were preempted. ``fn`` gets a call number that keeps growing over the rounds.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, n) in fns.items():
            samples[name] += per_call(fn, n, start=len(samples[name]))
    return {name: statistics.median(values) for name, values in samples.items()}
