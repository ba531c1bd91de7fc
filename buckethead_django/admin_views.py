"""What the BucketHead admin pages show, kept apart from the request handling in `buckethead_django.admin`.

Everything here turns engine facts into values a template can print:
Unix times into datetimes, KV values into text or hex, flush results and
the writer lease into sentences. None of it changes anything.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.paginator import Page
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.timesince import timesince

from . import runtime
from .engine import BucketSQLite, FileInfo, FileStore, FlushResult, KVStore, SnapshotConfig, WriterLease
from .engine.generations import SnapshotEntry
from .storage import BucketHeadStorage

#: How much of a value the KV list shows: characters of text, bytes of anything else.
PREVIEW_CHARS = 120
PREVIEW_BYTES = 32
#: How much of a value one KV entry's page shows (KV values are small: 1 MiB at most by default).
FULL_VALUE_CHARS = 1024 * 1024
HEXDUMP_BYTES = 64 * 1024

# Text that a terminal or a browser would not show faithfully is shown as hex instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def datetime_of(timestamp: float) -> dt.datetime:
    """A Unix time as Django shows times: aware with USE_TZ (and then localised), naive local time without."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC if settings.USE_TZ else None)


# -- KV values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueView:
    """A KV value as shown: UTF-8 text as it is, anything else as hex; ``shown`` may be cut short."""

    size: int
    is_text: bool
    shown: str
    truncated: bool

    @classmethod
    def of(cls, raw: bytes, *, full: bool = False) -> ValueView:
        """The preview of ``raw`` for a list, or (``full``) as much as one entry's page shows."""
        text = _as_text(raw)
        if text is not None:
            limit = FULL_VALUE_CHARS if full else PREVIEW_CHARS
            return cls(len(raw), True, text[:limit], len(text) > limit)
        limit = HEXDUMP_BYTES if full else PREVIEW_BYTES
        shown = hexdump(raw[:limit]) if full else raw[:limit].hex(" ")
        return cls(len(raw), False, shown, len(raw) > limit)


@dataclass(frozen=True)
class KVRow:
    """One live key, its value and when it expires (None: never)."""

    key: str
    value: ValueView
    expires_at: dt.datetime | None


def kv_rows(kv: KVStore, keys: Iterable[str], *, full: bool = False) -> list[KVRow]:
    """The rows of ``keys`` that are still live; a key that expired or went since it was listed is left out."""
    rows = []
    for key in keys:
        raw = kv.get_bytes(key)
        try:
            ttl = kv.ttl(key)
        except KeyError:
            continue
        if raw is None:
            continue
        expires_at = None if ttl is None else timezone.now() + dt.timedelta(seconds=ttl)
        rows.append(KVRow(key, ValueView.of(raw, full=full), expires_at))
    return rows


def hexdump(data: bytes) -> str:
    """Offset, 16 bytes in hex and their printable ASCII, one line per 16 bytes, as ``hexdump -C`` prints."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk[:8].hex(' '):<23}  {chunk[8:].hex(' '):<23}  |{ascii_}|")
    return "\n".join(lines)


def _as_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(text) else text


# -- files ----------------------------------------------------------------------------------


class BlobPages:
    """Every blob row, newest first, sliced by the database: Django's Paginator reads one page at a time."""

    def __init__(self, files: FileStore) -> None:
        self._files = files

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, window: slice) -> list[FileInfo]:
        start = window.start or 0
        return self._files.list(limit=max(0, window.stop - start), offset=start)


def storage_url(storage: BucketHeadStorage, name: str) -> str | None:
    """The storage's own download link for ``name`` (presigned on S3), or None where it cannot make one.

    With the local backend that link needs ``buckethead_django.urls`` in the
    URLconf; the admin then streams the file itself instead.
    """
    try:
        return storage.url(name)
    except (ImproperlyConfigured, FileNotFoundError):
        return None


# -- flushes, snapshots, deletions --------------------------------------------------------------


@dataclass(frozen=True)
class FlushSummary:
    """The last flush and when it happened."""

    result: FlushResult
    at: dt.datetime


def flush_summary(result: FlushResult | None) -> FlushSummary | None:
    return None if result is None else FlushSummary(result, datetime_of(result.at))


def flush_message(result: FlushResult, where: str) -> str:
    if result.uploaded:
        return f"Flushed {filesizeformat(result.bytes)} to {where} in {result.duration_seconds:.2f} s."
    return f"Nothing to flush ({result.reason}): {where} already holds the current state."


def retention(config: SnapshotConfig) -> str:
    """What retention keeps, in a sentence: ``the newest 24 generations and any younger than 1 day``."""
    rule = f"the newest {config.generations_kept} generations"
    if config.keep_max_age_seconds is not None:
        now = timezone.now()
        age = timesince(now - dt.timedelta(seconds=config.keep_max_age_seconds), now, depth=2)
        rule += f" and any younger than {age}"
    return rule


def restore_message(name: str, kept: SnapshotEntry) -> str:
    return f"Restored snapshot “{name}”. The state before the restore was kept as snapshot “{kept.name}”."


def deleted_message(kind: str, name: str, existed: bool) -> str:
    return f"Deleted the {kind} “{name}”." if existed else f"The {kind} “{name}” was already gone."


# -- the writer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterStatus:
    """Whether this process writes, and which process holds the bucket's writer lease."""

    pid: int
    role: str
    read_only_reason: str | None
    lease: WriterLease | None
    lease_is_ours: bool
    lease_started_at: dt.datetime | None
    lease_renewed_at: dt.datetime | None
    lease_expires_at: dt.datetime | None


def writer_status(bh: BucketSQLite) -> WriterStatus:
    lease = bh.writer_lease()
    ours = bh.lease is not None and bh.lease.same_holder(lease)
    return WriterStatus(
        pid=os.getpid(),
        role=str(runtime.role()),
        read_only_reason=bh.read_only_reason,
        lease=lease,
        lease_is_ours=ours,
        lease_started_at=datetime_of(lease.started_at) if lease else None,
        lease_renewed_at=datetime_of(lease.renewed_at) if lease else None,
        lease_expires_at=datetime_of(lease.expires_at) if lease else None,
    )


# -- pagination -------------------------------------------------------------------------------


def page_links(request: HttpRequest, page: Page) -> list[tuple[str, str | None, bool]]:
    """``(label, link, current)`` for each page number around ``page``; the ellipses and the current page have no link.

    The other query parameters (the search prefix) are kept.
    """
    if page.paginator.num_pages < 2:
        return []
    links: list[tuple[str, str | None, bool]] = []
    for number in page.paginator.get_elided_page_range(page.number):
        if number in (page.paginator.ELLIPSIS, page.number):
            links.append((str(number), None, number == page.number))
        else:
            query = request.GET.copy()
            query["p"] = str(number)
            links.append((str(number), f"?{query.urlencode()}", False))
    return links
