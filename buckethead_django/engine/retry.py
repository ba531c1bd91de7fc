"""When to try again after a bucket request failed: exponential backoff with full jitter.

One rule for every retry the engine schedules itself (startup, flushes, lease
renewals), so that many processes that failed together spread their retries
out instead of retrying in step.
"""

from __future__ import annotations

import random


def backoff(attempt: int, *, cap: float, base: float = 1.0) -> float:
    """Exponential backoff with full jitter: up to ``base * 2**(attempt-1)`` seconds, never more than ``cap``."""
    jitter = random.uniform(0.5, 1.0)  # noqa: S311 - spreads retries out, not a secret
    return jitter * min(cap, base * 2 ** min(attempt - 1, 30))
