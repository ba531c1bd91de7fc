"""Whether a process of this host still runs: a lease's or a replicator's holder, named by its pid.

A pid alone is not enough: a killed process stays in the process table as a
zombie until its parent reaps it, and after a restart (a container's, say)
another process may have the same pid. So a holder is recorded with its
start time, and is running only if a process with that pid and that start
time exists and is not a zombie.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_running(pid: int, start_ticks: int = 0) -> bool:
    """True if process ``pid`` runs (and, when ``start_ticks`` is given, is the one that started then)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no procfs: a process that exists is taken to run
    state, ticks = fields[0], int(fields[19])
    return state != "Z" and (not start_ticks or ticks == start_ticks)


def process_start_ticks(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot (0 where procfs cannot tell)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else 0


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None without procfs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ".
    return stat.rpartition(")")[2].split()
