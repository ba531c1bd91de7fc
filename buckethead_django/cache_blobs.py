"""Cache values over the KV store's limit, kept as FileStore blobs and removed with their entries.

A pickle over the KV store's limit (``KV_MAX_VALUE_BYTES``) is a FileStore
blob instead, as the KVStore asks of large values: the entry's row holds
`BLOB_MARK` and the blob's bh-key, and a registry row
``django-cache:%blobs:<LOCATION>:<bh-key>`` names the entry keys that may
hold it. Every write removes the blobs that no live entry holds any more,
so a blob goes with its entry (docs/cache.md, "Values over the KV limit").
`BucketHeadCache` keeps one `CacheBlobs` per cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, cast

from .engine import BucketSQLite, FileStore, KVStore, ObjectNotFound
from .engine.config import DEFAULT_GC_GRACE_SECONDS
from .engine.interfaces import BlobSizeMismatch

if TYPE_CHECKING:
    from .cache import BucketHeadCache

logger = logging.getLogger("buckethead_django.cache")

#: The value of an entry whose pickle is a blob starts with this, then the bh-key. No pickle starts with NUL
#: (it is no pickle opcode), so a marker is never mistaken for a value, nor a value for a marker.
BLOB_MARK = b"\x00buckethead-cache-blob:"
# Random bytes before the pickle make every blob unique to one write of one entry: removing it never
# breaks another entry that caches the same value, as a shared content-addressed blob would.
_SALT_BYTES = 16
# How long a blob another process registered but has not linked to its entry yet is left alone: its
# upload may still be running. The FileStore's own grace for unrecorded uploads.
_UNLINKED_GRACE = DEFAULT_GC_GRACE_SECONDS

# Blobs this process is writing: registered, maybe uploaded, their marker maybe not written yet. A sweep leaves
# them alone. They leave the set, and a rename changes a registry row, under `_registry_lock`, which a sweep holds
# while it decides, so a sweep never sees a blob in between.
_in_flight: set[str] = set()
_registry_lock = threading.RLock()
# When each namespace was last swept for the blobs of expired entries, per KV store (monotonic seconds).
_last_sweeps: weakref.WeakKeyDictionary[KVStore, dict[str, float]] = weakref.WeakKeyDictionary()
_last_sweeps_lock = threading.Lock()

#: KV rows about to be written: stored key -> value.
Rows = dict[str, bytes]


class CacheBlobs:
    """The blobs of one cache's namespace: written behind markers, found, read, and removed with their entries."""

    def __init__(self, cache: BucketHeadCache, registry: str) -> None:
        self.cache = cache
        #: The prefix of this namespace's registry rows.
        self.registry = registry

    def write(self, engine: BucketSQLite, entries: Rows, write: Callable[[Rows], bool]) -> bool:
        """Run ``write`` on ``entries``, each value over the KV limit first uploaded as a blob behind a marker.

        A blob is registered before its upload, so that a crash never leaves
        one nothing knows of, and stays in flight (never swept) until its
        marker is written. If ``write`` raises or returns False, the new
        blobs are removed again.
        """
        kv = engine.kv
        over = {made: raw for made, raw in entries.items() if len(raw) > kv.max_value_bytes}
        if not over:
            return write(entries)
        blobs = {made: os.urandom(_SALT_BYTES) + raw for made, raw in over.items()}
        # The bh-key is the SHA-256 of the content (FileStore's contract), so it is known before the upload.
        bh_keys = {made: hashlib.sha256(blob).hexdigest() for made, blob in blobs.items()}
        refs = {bh_key: [made] for made, bh_key in bh_keys.items()}
        with _flying(refs):
            self._register(kv, refs, linked=False)
            try:
                for blob in blobs.values():
                    engine.files.put(blob, metadata={"django_cache": self.cache.location})
                written = write({**entries, **{made: _marker(bh_key) for made, bh_key in bh_keys.items()}})
            except BaseException:
                # The write's own error is what the caller must see; a later sweep removes what this leaves.
                with contextlib.suppress(Exception):
                    self._remove(engine, refs)
                raise
            if written:
                self._register(kv, refs, linked=True)
            else:
                self._remove(engine, refs)
        return written

    def _register(self, kv: KVStore, refs: Mapping[str, list[str]], *, linked: bool) -> None:
        """Record, for each blob, the entry keys that may hold it; ``linked`` once its marker is written."""
        now, pid = time.time(), os.getpid()
        kv.set_many_bytes(
            {
                self.registry + bh_key: json.dumps({"keys": keys, "linked": linked, "pid": pid, "at": now}).encode()
                for bh_key, keys in refs.items()
            }
        )

    def held(self, kv: KVStore, keys: Iterable[str]) -> dict[str, str]:
        """The bh-keys the live entries of ``keys`` hold, by key: blobs a write or delete of them may free."""
        if not kv.count(self.registry, include_expired=True):
            return {}  # the usual case, one index lookup: no entry of the namespace holds a blob
        return {made: _bh_key(raw) for made, raw in kv.get_many_bytes(keys).items() if raw.startswith(BLOB_MARK)}

    def unblob(self, files: FileStore, raw: bytes) -> bytes | None:
        """The pickle an entry's value stands for; None if its blob is gone (a miss, never a wrong value)."""
        if not raw.startswith(BLOB_MARK):
            return raw
        bh_key = _bh_key(raw)
        try:
            data = files.get(bh_key) if files.exists(bh_key) else None
        except (ObjectNotFound, BlobSizeMismatch):
            data = None
        if data is None:
            logger.warning(
                "the blob %s of a %s cache entry is missing; the entry reads as a miss", bh_key, self.cache.location
            )
            return None
        return cast(bytes, data)[_SALT_BYTES:]

    def settle(self, engine: BucketSQLite, freed: Iterable[str] = (), *, sweep: bool = False) -> None:
        """After a write: remove the blobs in ``freed`` that no entry holds any more, or sweep the namespace.

        A sweep looks at every blob of the namespace, and so also removes those
        of expired entries and of entries removed behind the cache's back. It
        runs when asked, and at the first write of a namespace in each
        `blob_sweep_interval`.
        """
        if sweep or self._sweep_due(engine.kv):
            self._collect(engine, None)
        else:
            freed = list(freed)
            if freed:
                self._collect(engine, freed)

    def _sweep_due(self, kv: KVStore) -> bool:
        now = time.monotonic()
        with _last_sweeps_lock:
            sweeps = _last_sweeps.setdefault(kv, {})
            last = sweeps.get(self.cache.namespace)
            if last is not None and now - last < self.cache.blob_sweep_interval:
                return False
            sweeps[self.cache.namespace] = now
        return True

    def _collect(self, engine: BucketSQLite, bh_keys: Collection[str] | None) -> None:
        """Remove the blobs among ``bh_keys`` (all of the namespace if None) that no live entry holds.

        A blob is kept while an entry its registry row names holds its
        marker, while this process is writing it, and, if another process
        registered it and has not linked it yet, for a grace period.
        """
        kv = engine.kv
        with _registry_lock:
            rows = kv.keys(self.registry) if bh_keys is None else [self.registry + b for b in bh_keys]
            if not rows:
                return
            refs = {row[len(self.registry) :]: json.loads(raw) for row, raw in kv.get_many_bytes(rows).items()}
            values = kv.get_many_bytes({key for ref in refs.values() for key in ref["keys"]})
            now, pid = time.time(), os.getpid()
            unheld = [
                bh_key
                for bh_key, ref in refs.items()
                if not any(values.get(key) == _marker(bh_key) for key in ref["keys"])
                and bh_key not in _in_flight
                and (ref["linked"] or ref["pid"] == pid or now - ref["at"] >= _UNLINKED_GRACE)
            ]
            self._remove(engine, unheld)

    def _remove(self, engine: BucketSQLite, bh_keys: Iterable[str]) -> None:
        """Delete the blobs (their objects go after the next snapshot), then their registry rows."""
        rows = []
        for bh_key in bh_keys:
            engine.files.delete(bh_key)  # first: a crash in between leaves a registry row, never an unknown blob
            rows.append(self.registry + bh_key)
        if rows:
            engine.kv.delete_many(rows)

    def move(self, kv: KVStore, bh_key: str, src: str, dst: str, rename: Callable[[], bool]) -> bool:
        """Rename the entry ``src`` that holds ``bh_key`` to ``dst`` (``rename``), its registry row following it."""
        with _registry_lock:  # no sweep of this process sees the registry row name the wrong key
            self._register(kv, {bh_key: [src, dst]}, linked=False)  # other processes: leave it be
            moved = rename()
            self._register(kv, {bh_key: [dst] if moved else [src]}, linked=True)
        return moved


def _marker(bh_key: str) -> bytes:
    return BLOB_MARK + bh_key.encode("ascii")


def _bh_key(marker: bytes) -> str:
    return marker[len(BLOB_MARK) :].decode("ascii")


@contextlib.contextmanager
def _flying(bh_keys: Collection[str]) -> Iterator[None]:
    """Mark blobs as being written by this process for the block, so that no sweep removes them meanwhile."""
    with _registry_lock:
        _in_flight.update(bh_keys)
    try:
        yield
    finally:
        with _registry_lock:
            _in_flight.difference_update(bh_keys)
