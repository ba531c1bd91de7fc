"""The chain of a generation: its deltas, the merged deltas that stand for runs of them, and paths through them.

A generation's deltas are numbered from 1, one per flush. Each run of
``MERGE_FANOUT`` of them, aligned (1-16, 17-32, ...), is also written as one
merged delta; each aligned run of ``MERGE_FANOUT`` merged ones as one of the
next level (1-256, 257-512, ...), and so on. Every object is a `Link` from the
point before its first delta to the point after its last. A restore to
point ``n`` reads the fewest links that lead from the base to ``n``: at most
``MERGE_FANOUT - 1`` per level, so a day of flushes every 5 seconds restores
in a few dozen requests instead of seventeen thousand.

Merged deltas are redundant by design: a point stays restorable through
plain deltas when a merge failed or is corrupt. Retention deletes a link
once a longer one covers it and is old enough (see `thinned`): the points
inside it are then no longer restorable, the point at its end still is. So
every flush stays a point for a while, then every 16th, then every 256th...
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Deltas per merged delta, and merged deltas per merged delta of the next level.
MERGE_FANOUT = 16

_PLAIN = re.compile(r"\.d(\d{8})$")
_MERGED = re.compile(r"\.m(\d{8})-(\d{8})$")


@dataclass(frozen=True)
class Link:
    """One delta object: it leads from point ``first - 1`` to point ``last`` (``first == last`` for a plain one)."""

    first: int
    last: int
    #: When it was written (Unix time): a plain delta's is its point's time.
    at: float
    key: str
    size: int = 0

    @property
    def merged(self) -> bool:
        return self.last > self.first


def span_of(key: str) -> tuple[int, int] | None:
    """The deltas the object at ``key`` covers, ``(first, last)``, or None if it is no delta."""
    if m := _PLAIN.search(key):
        return int(m.group(1)), int(m.group(1))
    if m := _MERGED.search(key):
        return int(m.group(1)), int(m.group(2))
    return None


def links_of(objects: Iterable[tuple[str, float, int]]) -> tuple[Link, ...]:
    """The links among ``objects`` (key, when written, size), by first then last delta."""
    found = []
    for key, at, size in objects:
        span = span_of(key)
        if span is not None and 1 <= span[0] <= span[1]:
            found.append(Link(span[0], span[1], at, key, size))
    return tuple(sorted(found, key=lambda link: (link.first, link.last)))


def _reachable(links: Sequence[Link], start: int = 0) -> dict[int, tuple[int, Link | None]]:
    """Every point reachable from ``start``: the fewest links to it, and the last of them (None for ``start``)."""
    best: dict[int, tuple[int, Link | None]] = {start: (0, None)}
    # Links go forward only, so taking them by first delta settles every point before it is left.
    for link in sorted(links, key=lambda x: (x.first, x.last)):
        before = best.get(link.first - 1)
        if link.first <= start or before is None:
            continue
        known = best.get(link.last)
        if known is None or before[0] + 1 < known[0]:
            best[link.last] = (before[0] + 1, link)
    return best


def points(links: Sequence[Link]) -> tuple[tuple[int, float], ...]:
    """The restorable points after the base: (number, when written), in order; a point is reachable from it."""
    reached = _reachable(links)
    written: dict[int, float] = {}
    for link in links:
        if link.last in reached:
            written[link.last] = min(written.get(link.last, link.at), link.at)
    return tuple(sorted(written.items()))


def reach(links: Sequence[Link], start: int) -> int:
    """The farthest point ``links`` lead to from point ``start`` (``start`` itself if none follows it)."""
    return max(_reachable(links, start))


def end(chain: Sequence[tuple[int, float]]) -> int:
    """The newest point of a chain as `points` gives it (0: the base alone)."""
    return chain[-1][0] if chain else 0


def upto(chain: Sequence[tuple[int, float]], last: int) -> tuple[tuple[int, float], ...]:
    """The points of ``chain`` up to ``last``."""
    return tuple(p for p in chain if p[0] <= last)


def newest(chain: Sequence[tuple[int, float]], at_most: int) -> int:
    """The newest point of ``chain`` at or before ``at_most`` (0: the base)."""
    return end(upto(chain, at_most))


def path(links: Sequence[Link], to: int, *, start: int = 0) -> list[Link]:
    """The fewest links that lead from point ``start`` to point ``to``; KeyError if none do."""
    reached = _reachable([link for link in links if link.last <= to], start)
    if to not in reached:
        raise KeyError(to)
    found: list[Link] = []
    point = to
    while point != start:
        link = reached[point][1]
        if link is None:  # only the start has no link, and the loop stops there
            break
        found.append(link)
        point = link.first - 1
    return found[::-1]


def merges_due(last: int, fanout: int = MERGE_FANOUT) -> list[tuple[int, int]]:
    """The merged deltas to write once delta ``last`` is committed, lowest level first: ``(first, last)`` each."""
    due: list[tuple[int, int]] = []
    size = fanout
    while last > 0 and last % size == 0:
        due.append((last - size + 1, last))
        size *= fanout
    return due


def thinned(links: Sequence[Link], *, plain_before: float | None, merged_before: float | None) -> list[Link]:
    """What retention may delete: each delta a merged delta written before ``plain_before`` covers, and each
    merged delta a longer one written before ``merged_before`` covers (None: none of that kind).

    The covering link is written after every delta it covers, so all the
    points inside it are that old too; the point at its end, and every
    point after it, stays reachable, as covering links span whole aligned runs.
    """

    def old_spans(before: float | None) -> set[tuple[int, int]]:
        return set() if before is None else {(x.first, x.last) for x in links if x.merged and x.at < before}

    spans = {False: old_spans(plain_before), True: old_spans(merged_before)}
    return [link for link in links if any(_covers(span, link) for span in _enclosing(link, spans[link.merged]))]


def _covers(span: tuple[int, int], link: Link) -> bool:
    return span != (link.first, link.last) and span[0] <= link.first and link.last <= span[1]


def _enclosing(link: Link, spans: set[tuple[int, int]]) -> Iterable[tuple[int, int]]:
    """The aligned spans of every level that hold ``link``'s first delta, among ``spans``."""
    size = MERGE_FANOUT
    while size <= link.last * MERGE_FANOUT:
        first = (link.first - 1) // size * size + 1
        if (first, first + size - 1) in spans:
            yield first, first + size - 1
        size *= MERGE_FANOUT
