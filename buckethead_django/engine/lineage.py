"""Which generations were committed, told from their signed records alone.

A generation is written before it is committed, so the bucket can hold
generations that never were: a fenced writer's rejected flush, or an attempt
whose commit failed. Those must never be offered as restore points. Three
facts, each signed into the records, prove a generation uncommitted:

- Sequence numbers never collide between writers: a writer that claims the
  bucket skips the number its predecessor may still be using (see
  `Current.next_seq`), and committed numbers only grow.
- Every record names its ``parent``, the generation that was current when it
  was written. If that record is committed, nothing was committed between
  its parent and it; if it is not, its writer was fenced before any later
  commit could use a number below its own. Either way, a generation whose
  number lies strictly between a record's parent and that record was never
  committed.
- Nothing newer than the current generation has been committed, and of the
  generations on the current one's chain of parents each number is taken by
  that generation alone.

Generations older than anything these facts reach (written before records
named their parent) are taken as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .record import GENERATION, SnapshotRecord

_GENERATION = re.compile(r"^(\d{10})-[0-9a-f]{8}$")


def generation_seq(name: str) -> int | None:
    """The sequence number a generation name starts with (``0000000042-1a2b3c4d``), or None if it is not one."""
    match = _GENERATION.match(name)
    return int(match.group(1)) if match else None


def uncommitted(records: Iterable[SnapshotRecord], current: SnapshotRecord | None) -> set[str]:
    """Names among ``records`` (generations) that were provably never committed.

    ``current`` is the committed generation as the current record embeds it
    (None when there is none, or the current record cannot be read: then
    only the parent links speak).
    """
    generations = {r.name: r for r in records if r.kind == GENERATION}
    links = [
        (parent_seq, r.seq)
        for r in (*generations.values(), *([current] if current is not None else []))
        if r.parent is not None and (parent_seq := generation_seq(r.parent)) is not None
    ]
    chain = _chain(generations, current)

    def never_committed(record: SnapshotRecord) -> bool:
        if record.name in chain:
            return False
        if any(low < record.seq < high for low, high in links):
            return True
        return current is not None and (record.seq > current.seq or record.seq in chain.values())

    return {name for name, record in generations.items() if never_committed(record)}


def _chain(generations: dict[str, SnapshotRecord], current: SnapshotRecord | None) -> dict[str, int]:
    """The current generation and its ancestors as far as their records exist: name -> sequence number."""
    chain: dict[str, int] = {}
    record = current
    while record is not None and record.name not in chain:
        chain[record.name] = record.seq
        record = generations.get(record.parent) if record.parent is not None else None
    return chain
