"""What the BucketHead admin pages show, kept apart from the request handling in `buckethead_django.admin`.

Everything here turns engine facts into values a template can print:
Unix times into datetimes, KV values into text or hex, flush results and
the writer lease into sentences. None of it changes anything.

The pages also look things up in the bucket (the writer lease, the snapshot
history). Those lookups go through `BucketReads`, so that a page still
renders, quickly, when the bucket cannot be reached, and says so.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from django import forms
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.paginator import Page
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.timesince import timesince

from .. import runtime
from ..cache import NAMESPACE as CACHE_NAMESPACE
from ..cache_blobs import BLOB_MARK
from ..engine import (
    BucketSQLite,
    FileInfo,
    FileStore,
    FlushResult,
    History,
    KVStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    SnapshotConfig,
    SnapshotEntry,
    WriterLease,
    read_lease,
)
from ..engine.database import LocalDir
from ..engine.host import ReplicatorInfo
from ..health import EngineHealth, engine_health
from ..storage import BucketHeadStorage

T = TypeVar("T")

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


# -- the bucket, as the pages read it ------------------------------------------------------------

#: The admin's lookups give up quickly, whatever the engine's own retries and timeouts: during an
#: outage a page must render in a few seconds. Two attempts, each allowed 2 s to connect and 2 s
#: without an answer, with botocore's backoff of up to 1 s between them.
READ_ATTEMPTS = 2
READ_CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 2.0
#: Shown next to every control that is disabled because it needs the bucket.
NEEDS_BUCKET = "Needs the bucket, which cannot be reached."

_read_stores: weakref.WeakKeyDictionary[BucketSQLite, ObjectStore] = weakref.WeakKeyDictionary()
_read_stores_lock = threading.Lock()


def read_store(engine: BucketSQLite) -> ObjectStore:
    """The engine's bucket for the admin's lookups: on S3, a client of its own with short timeouts and one retry.

    The engine's client may wait minutes for a dead endpoint (it must not
    give up on a flush easily); a page may not. A local directory, or a
    store a project passed in, is read as it is.
    """
    if not isinstance(engine.store, S3ObjectStore):
        return engine.store
    with _read_stores_lock:
        store = _read_stores.get(engine)
        if store is None:
            cfg = engine.config
            store = _read_stores[engine] = S3ObjectStore(
                replace(
                    cfg,
                    max_attempts=min(cfg.max_attempts, READ_ATTEMPTS),
                    connect_timeout=min(cfg.connect_timeout, READ_CONNECT_TIMEOUT),
                    read_timeout=min(cfg.read_timeout, READ_TIMEOUT),
                )
            )
        return store


class BucketReads:
    """The bucket lookups of one page: each bounded in time, and none after the first one fails.

    A page that cannot reach the bucket still renders what the process has
    in memory; `error` says why the rest is missing, and the template
    disables what needs the bucket.
    """

    def __init__(self, engine: BucketSQLite) -> None:
        self.engine = engine
        self.store = read_store(engine)
        self.asked = False
        #: Why the bucket could not be read on this page (the engine's error message), or None.
        self.error: str | None = None

    def read(self, lookup: Callable[[ObjectStore], T], default: T) -> T:
        """``lookup(store)``, or ``default`` if the bucket does not answer (now, or earlier on this page).

        A missing object is not an outage: `ObjectNotFound` is raised on.
        """
        if self.error is not None:
            return default
        self.asked = True
        try:
            return lookup(self.store)
        except ObjectNotFound:
            raise
        except (ObjectStoreError, OSError) as exc:
            self.error = str(exc)
            return default

    def probe(self) -> None:
        """Ask the bucket once (a HEAD of its current record), on a page that has not asked it anything."""
        if not self.asked:
            self.read(lambda store: store.head(History(store, self.engine.config.key).current_key), None)


@dataclass(frozen=True)
class BucketState:
    """What the top of every page says: fenced, degraded, or the bucket out of reach, and how old its copy is."""

    health: EngineHealth
    #: When the bucket last received a good snapshot of this process's data, or None.
    last_good_at: dt.datetime | None
    #: Whether something changed since the last snapshot in the bucket.
    dirty: bool
    #: Why this page could not read the bucket, or None if it could (or did not need to).
    unreachable: str | None
    reason: str = NEEDS_BUCKET


def bucket_state(engine: BucketSQLite, reads: BucketReads) -> BucketState:
    health = engine_health(engine)
    return BucketState(
        health=health,
        last_good_at=datetime_of(health.last_good_at) if health.last_good_at is not None else None,
        dirty=engine.dirty,
        unreachable=reads.error,
    )


# -- KV values ------------------------------------------------------------------------------


#: What a KV value is shown as: UTF-8 text, a Django cache entry's value (its ``repr``), or hex.
TEXT, CACHED, HEX = "text", "cache", "hex"
NOT_EDITABLE = (
    "Only a text value can be edited here. Change a cache entry through Django's cache API, and other values "
    "through the KV store's."
)


@dataclass(frozen=True)
class ValueView:
    """A KV value as shown: UTF-8 text as it is, a cache entry as its value's ``repr``, anything else as hex.

    ``shown`` may be cut short (``truncated``); ``type_name`` is a cache entry's value's type.
    """

    size: int
    kind: str
    shown: str
    truncated: bool
    type_name: str = ""

    @property
    def is_text(self) -> bool:
        return self.kind == TEXT

    @property
    def editable(self) -> bool:
        """A text value shown whole can be edited as text; anything else would be changed by the editing."""
        return self.kind == TEXT and not self.truncated

    @classmethod
    def of(cls, raw: bytes, *, key: str = "", full: bool = False) -> ValueView:
        """The preview of ``raw`` (the value of ``key``) for a list, or (``full``) as much as one entry's page shows."""
        limit = FULL_VALUE_CHARS if full else PREVIEW_CHARS
        if key.startswith(CACHE_NAMESPACE) and raw.startswith(BLOB_MARK):
            shown = f"a value over the KV limit, kept as the FileStore blob {raw[len(BLOB_MARK) :].decode()}"
            return cls(len(raw), CACHED, shown, False, "blob")
        if key.startswith(CACHE_NAMESPACE):
            cached = _cache_value(raw)
            if cached is not None:
                shown = repr(cached)
                return cls(len(raw), CACHED, shown[:limit], len(shown) > limit, type(cached).__name__)
        text = _as_text(raw)
        if text is not None:
            return cls(len(raw), TEXT, text[:limit], len(text) > limit)
        limit = HEXDUMP_BYTES if full else PREVIEW_BYTES
        shown = hexdump(raw[:limit]) if full else raw[:limit].hex(" ")
        return cls(len(raw), HEX, shown, len(raw) > limit)


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
        rows.append(KVRow(key, ValueView.of(raw, key=key, full=full), expires_at))
    return rows


class KVEntryForm(forms.Form):
    """A KV entry with a text value, as the admin adds or edits one."""

    key = forms.CharField(max_length=1024, strip=False, help_text="Any text; it is stored exactly as written.")
    value = forms.CharField(widget=forms.Textarea(attrs={"rows": 8, "cols": 80}), strip=False, required=False)
    ttl = forms.FloatField(
        required=False,
        min_value=0.001,
        label="Expires after",
        help_text="Seconds from now; empty: never.",
    )

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:  # the key names the entry being edited: shown, and taken from the page, never from the form
            self.fields["key"].disabled = True

    def clean_key(self) -> str:
        key: str = self.cleaned_data["key"]
        if not key:
            raise forms.ValidationError("Give a key.")
        if key.startswith(CACHE_NAMESPACE):
            raise forms.ValidationError(f"Keys starting with “{CACHE_NAMESPACE}” are the cache's: {NOT_EDITABLE}")
        return key


def hexdump(data: bytes) -> str:
    """Offset, 16 bytes in hex and their printable ASCII, one line per 16 bytes, as ``hexdump -C`` prints."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk[:8].hex(' '):<23}  {chunk[8:].hex(' '):<23}  |{ascii_}|")
    return "\n".join(lines)


def _cache_value(raw: bytes) -> object | None:
    """The value a cache entry holds, as `BucketHeadCache` reads it; None if it cannot be read here.

    Only entries of the cache's own namespace are read, which the cache
    itself unpickles on every ``get``: the admin trusts them no more than it.
    """
    try:
        return pickle.loads(raw)  # noqa: S301 - the cache's own entries, as the cache reads them
    except Exception:  # noqa: BLE001 - a class that is gone, say: the value is shown as bytes instead
        return None


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
    #: False when the lease could not be read: the bucket did not answer.
    lease_known: bool
    lease: WriterLease | None
    lease_is_ours: bool
    lease_started_at: dt.datetime | None
    lease_renewed_at: dt.datetime | None
    lease_expires_at: dt.datetime | None
    #: When this process last renewed its own lease (known from memory even when the bucket is out of reach).
    own_lease_renewed_at: dt.datetime | None
    #: This process on its host: replicator, member (another process ships) or read-only.
    host_role: str
    #: The host's replicator as it announced itself, or None (a read-only view, or none yet).
    replicator: ReplicatorInfo | None
    #: Where the host's database is, and why there.
    local: LocalDir
    #: Copies of the host's database set aside when the replicator took the role: ``(path, why)``.
    set_aside: list[tuple[str, str]]


def writer_status(bh: BucketSQLite, reads: BucketReads) -> WriterStatus:
    lease = reads.read(lambda store: read_lease(store, bh.config.key), None)
    ours = bh.lease is not None and bh.lease.same_holder(lease)
    return WriterStatus(
        pid=os.getpid(),
        role=str(runtime.role()),
        read_only_reason=bh.read_only_reason,
        lease_known=reads.error is None,
        lease=lease,
        lease_is_ours=ours,
        lease_started_at=datetime_of(lease.started_at) if lease else None,
        lease_renewed_at=datetime_of(lease.renewed_at) if lease else None,
        lease_expires_at=datetime_of(lease.expires_at) if lease else None,
        own_lease_renewed_at=datetime_of(bh.lease.renewed_at) if bh.lease else None,
        host_role=bh.role,
        replicator=bh.replicator_info(),
        local=bh.local,
        set_aside=bh.set_aside,
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
