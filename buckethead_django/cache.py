"""BucketHeadCache: a Django cache backend on the engine's key-value store.

Entries are rows of the ``bh_kv`` table, so they are in every snapshot and
survive a restart. Each one is stored under
``django-cache:<LOCATION>:<made key>``: caches with different LOCATIONs
never see each other's entries, and application KV keys (which do not
start with ``django-cache:``) are never touched, not even by `clear()`.

Values are pickled, as in Django's own backends. Expiry is the KV store's:
an expired entry is never returned, and reads never write, so serving from
the cache does not make the database dirty (nothing to snapshot).

A pickle over the KV store's limit (``KV_MAX_VALUE_BYTES``) is a FileStore
blob instead, removed with its entry (see `buckethead_django.cache_blobs`).
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from .cache_blobs import BLOB_MARK, CacheBlobs
from .engine import BucketSQLite, KVStore
from .engine.interfaces.kv import glob_escape
from .runtime import get_buckethead

logger = logging.getLogger(__name__)

NAMESPACE = "django-cache:"
#: Registry rows: ``<this><escaped LOCATION>:<bh-key>``. A LOCATION's "%" is always escaped as "%25" or "%3A",
#: so no namespace starts like this: registry rows are never counted, culled, matched or cleared as entries.
BLOB_REGISTRY = NAMESPACE + "%blobs:"
# Stands in for the user's key to find where KEY_FUNCTION puts it (see `_pattern`).
_KEY_MARK = "\x00buckethead-key\x00"

# An upper bound of the rows in each namespace, per KV store, shared by every cache instance in the
# process (Django makes one per thread), so that a write counts its namespace only when it may be full.
_row_bounds: weakref.WeakKeyDictionary[KVStore, dict[str, int]] = weakref.WeakKeyDictionary()
_row_bounds_lock = threading.Lock()

# Serialise the read-modify-write of `incr` on a value over the limit between the threads of the process.
_incr_locks = tuple(threading.Lock() for _ in range(64))

Version = int | None
Timeout = float | None | object


class BucketHeadCache(BaseCache):
    """A Django cache whose entries live in BucketHead's in-memory SQLite and its snapshots.

    ``LOCATION`` names the namespace (``"default"`` when empty). Caches that
    share a LOCATION share entries, whatever their KEY_PREFIX or VERSION,
    and `clear()` empties the whole LOCATION, as DatabaseCache empties its
    table. Values whose pickle is over the KV store's limit are FileStore
    blobs, removed with their entries.
    """

    pickle_protocol = pickle.HIGHEST_PROTOCOL
    #: Seconds between two sweeps of a namespace for the blobs of expired entries, made by the first write after.
    blob_sweep_interval: float = 10.0

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.location = location or "default"
        # Escaping ":" keeps one LOCATION's namespace from being a prefix of another's ("a" vs "a:b").
        escaped = self.location.replace("%", "%25").replace(":", "%3A")
        self.namespace = f"{NAMESPACE}{escaped}:"
        self.blobs = CacheBlobs(self, f"{BLOB_REGISTRY}{escaped}:")

    # -- keys, values, timeouts --------------------------------------------------------

    @property
    def _kv(self) -> KVStore:
        """The KV store of the process's engine, looked up per call so a replaced engine is followed."""
        return get_buckethead().kv

    def _key(self, key: str, version: Version = None) -> str:
        return self.namespace + self.make_and_validate_key(key, version=version)

    def _dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, self.pickle_protocol)

    def _loads(self, data: bytes) -> Any:
        # Like every Django backend: whoever can write the bucket's snapshot can run code here (docs/cache.md).
        return pickle.loads(data)  # noqa: S301

    def get_backend_timeout(self, timeout: Timeout = DEFAULT_TIMEOUT) -> float | None:
        """Seconds to live, relative, as the KV store takes them: None is forever, <= 0 is "expire now"."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else float(timeout)  # type: ignore[arg-type]

    # -- BaseCache -----------------------------------------------------------------------

    def add(self, key: str, value: Any, timeout: Timeout = DEFAULT_TIMEOUT, version: Version = None) -> bool:
        made, pickled, ttl = self._key(key, version), self._dumps(value), self.get_backend_timeout(timeout)
        engine = get_buckethead()
        kv = engine.kv
        if ttl is not None and ttl <= 0:
            return not kv.exists(made)  # added and expired at once, as LocMemCache does
        if len(pickled) > kv.max_value_bytes and kv.exists(made):
            return False  # not worth an upload; for a small value, add_bytes alone decides
        self._cull(engine, [made])
        added = self.blobs.write(engine, {made: pickled}, lambda rows: kv.add_bytes(made, rows[made], ttl))
        self.blobs.settle(engine)
        return added

    def get(self, key: str, default: Any = None, version: Version = None) -> Any:
        engine = get_buckethead()
        raw = engine.kv.get_bytes(self._key(key, version))
        pickled = None if raw is None else self.blobs.unblob(engine.files, raw)
        return default if pickled is None else self._loads(pickled)

    def set(self, key: str, value: Any, timeout: Timeout = DEFAULT_TIMEOUT, version: Version = None) -> None:
        self._store({self._key(key, version): self._dumps(value)}, timeout)

    def touch(self, key: str, timeout: Timeout = DEFAULT_TIMEOUT, version: Version = None) -> bool:
        made, ttl = self._key(key, version), self.get_backend_timeout(timeout)
        return self._expire(made, ttl)

    def delete(self, key: str, version: Version = None) -> bool:
        engine = get_buckethead()
        made = self._key(key, version)
        held = self.blobs.held(engine.kv, [made])
        removed = engine.kv.delete(made)
        self.blobs.settle(engine, held.values())
        return removed

    def get_many(self, keys: Iterable[str], version: Version = None) -> dict[str, Any]:
        made = {self._key(key, version): key for key in keys}
        if not made:
            return {}
        engine = get_buckethead()
        found: dict[str, Any] = {}
        for k, raw in engine.kv.get_many_bytes(made).items():
            pickled = self.blobs.unblob(engine.files, raw)
            if pickled is not None:
                found[made[k]] = self._loads(pickled)
        return found

    def set_many(
        self, data: Mapping[str, Any], timeout: Timeout = DEFAULT_TIMEOUT, version: Version = None
    ) -> list[str]:
        """Store every entry in one transaction; nothing is written if one value cannot be pickled or uploaded."""
        self._store({self._key(key, version): self._dumps(value) for key, value in data.items()}, timeout)
        return []

    def delete_many(self, keys: Iterable[str], version: Version = None) -> None:
        made = [self._key(key, version) for key in keys]
        if made:
            engine = get_buckethead()
            held = self.blobs.held(engine.kv, made)
            engine.kv.delete_many(made)
            self.blobs.settle(engine, held.values())

    def has_key(self, key: str, version: Version = None) -> bool:
        return self._kv.exists(self._key(key, version))

    def incr(self, key: str, delta: int = 1, version: Version = None) -> Any:
        """Add ``delta`` in one transaction: concurrent increments are never lost. The expiry is kept.

        A value over the KV limit, before or after, is read, added to and
        written back instead, under a lock of this process.
        """
        made = self._key(key, version)
        engine = get_buckethead()
        kv = engine.kv
        try:
            raw = kv.update_bytes(made, lambda old: self._incremented(old, delta, kv.max_value_bytes))
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None
        except _OverTheLimit:
            return self._incr_blob(engine, key, made, delta)
        self.blobs.settle(engine)
        return self._loads(raw)

    def incr_version(self, key: str, delta: int = 1, version: Version = None) -> int:
        """Move the entry to version + ``delta`` in one transaction, keeping its expiry.

        BaseCache reads, sets and deletes instead, which resets the expiry to
        the default timeout and can lose a concurrent write. A blob moves
        with its entry; the blob of the entry it replaces is removed.
        """
        if version is None:
            version = self.version
        src, dst = self._key(key, version), self._key(key, version + delta)
        engine = get_buckethead()
        kv = engine.kv
        held = self.blobs.held(kv, [src, dst])
        moving = held.get(src)
        if moving is None:
            moved = kv.rename(src, dst)
        else:
            moved = self.blobs.move(kv, moving, src, dst, lambda: kv.rename(src, dst))
        self.blobs.settle(engine, [b for b in (held.get(dst),) if b is not None and b != moving])
        if not moved:
            raise ValueError(f"Key '{key}' not found")
        return version + delta

    def clear(self) -> None:
        """Remove every entry of this LOCATION (all KEY_PREFIXes and versions) and its blobs, and nothing else."""
        engine = get_buckethead()
        engine.kv.delete_prefix(self.namespace)
        self.blobs.settle(engine, sweep=True)

    # BaseCache's async versions of these call the sync single-key methods once per key, or
    # read then write (losing increments); these run the atomic, batched versions instead.

    async def aget_many(self, keys: Iterable[str], version: Version = None) -> dict[str, Any]:
        return await sync_to_async(self.get_many, thread_sensitive=True)(list(keys), version)

    async def aset_many(
        self, data: Mapping[str, Any], timeout: Timeout = DEFAULT_TIMEOUT, version: Version = None
    ) -> list[str]:
        return await sync_to_async(self.set_many, thread_sensitive=True)(data, timeout, version)

    async def adelete_many(self, keys: Iterable[str], version: Version = None) -> None:
        return await sync_to_async(self.delete_many, thread_sensitive=True)(list(keys), version)

    async def ahas_key(self, key: str, version: Version = None) -> bool:
        return await sync_to_async(self.has_key, thread_sensitive=True)(key, version)

    async def aincr(self, key: str, delta: int = 1, version: Version = None) -> Any:
        return await sync_to_async(self.incr, thread_sensitive=True)(key, delta, version)

    async def aincr_version(self, key: str, delta: int = 1, version: Version = None) -> int:
        return await sync_to_async(self.incr_version, thread_sensitive=True)(key, delta, version)

    # -- django-redis-style extras --------------------------------------------------------

    def ttl(self, key: str, version: Version = None) -> int | None:
        """Whole seconds until the entry expires, rounded up; None if it never expires; 0 if it does not exist.

        The same answers as django-redis's ``ttl()``. Rounding up means a live
        entry never reads 0.
        """
        try:
            left = self._kv.ttl(self._key(key, version))
        except KeyError:
            return 0
        return None if left is None else math.ceil(left)

    def expire(self, key: str, timeout: float, version: Version = None) -> bool:
        """Make the entry expire ``timeout`` seconds from now (at once if <= 0); False if it does not exist."""
        return self._expire(self._key(key, version), timeout)

    def persist(self, key: str, version: Version = None) -> bool:
        """Make the entry never expire; False if it does not exist."""
        return self._expire(self._key(key, version), None)

    def iter_keys(self, pattern: str, version: Version = None) -> Iterator[str]:
        """The keys (as given to `set`) of the live entries of this version that match a glob ``pattern``.

        ``*`` matches any run of characters, ``?`` one character, ``[abc]``,
        ``[a-z]`` and ``[^abc]`` one character of a set; matching is
        case-sensitive. Put ``*``, ``?`` or ``[`` in brackets to match it
        literally (there is no backslash escape).
        """
        prefix, glob, suffix = self._pattern(pattern, version)
        for made in self._kv.keys(prefix, glob=glob):
            yield made[len(prefix) : len(made) - len(suffix)]

    def delete_pattern(self, pattern: str, version: Version = None) -> int:
        """Delete the entries of this version whose keys match ``pattern`` (see `iter_keys`); returns how many."""
        prefix, glob, _ = self._pattern(pattern, version)
        engine = get_buckethead()
        removed = engine.kv.delete_prefix(prefix, glob=glob)
        self.blobs.settle(engine, sweep=True)
        return removed

    # -- internals ------------------------------------------------------------------------

    def _store(self, entries: dict[str, bytes], timeout: Timeout) -> None:
        ttl = self.get_backend_timeout(timeout)
        engine = get_buckethead()
        kv = engine.kv
        held = self.blobs.held(kv, entries)
        if ttl is not None and ttl <= 0:
            kv.delete_many(entries)  # a timeout of zero or less stores nothing and drops the old value
        else:
            self._cull(engine, list(entries))

            def write(rows: dict[str, bytes]) -> bool:
                kv.set_many_bytes(rows, ttl)
                return True

            self.blobs.write(engine, entries, write)
        self.blobs.settle(engine, held.values())

    def _expire(self, made: str, ttl: float | None) -> bool:
        """`touch`, `expire` and `persist`: set or remove the expiry; an entry expired now loses its blob now."""
        engine = get_buckethead()
        kv = engine.kv
        ending = ttl is not None and ttl <= 0
        held = self.blobs.held(kv, [made]) if ending else {}
        done = kv.persist(made) if ttl is None else kv.expire(made, ttl)
        self.blobs.settle(engine, held.values())
        return done

    def _incremented(self, old: bytes, delta: int, limit: int) -> bytes:
        """The pickle of the value plus ``delta``, for `KVStore.update_bytes`; `_OverTheLimit` if a blob is involved."""
        if old.startswith(BLOB_MARK):
            raise _OverTheLimit
        new = self._dumps(self._loads(old) + delta)
        if len(new) > limit:
            raise _OverTheLimit
        return new

    def _incr_blob(self, engine: BucketSQLite, key: str, made: str, delta: int) -> Any:
        """`incr` of a value over the limit (before or after): read, add, and write back with the same expiry."""
        kv = engine.kv
        with _incr_locks[hash(made) % len(_incr_locks)]:
            raw = kv.get_bytes(made)
            pickled = None if raw is None else self.blobs.unblob(engine.files, raw)
            if pickled is None:
                raise ValueError(f"Key '{key}' not found")
            value = self._loads(pickled) + delta
            entries = {made: self._dumps(value)}
            try:
                left = kv.ttl(made)
            except KeyError:
                raise ValueError(f"Key '{key}' not found") from None
            ttl = None if left is None else max(left, 0.001)
            held = self.blobs.held(kv, [made])

            def write(rows: dict[str, bytes]) -> bool:
                kv.set_many_bytes(rows, ttl)
                return True

            self.blobs.write(engine, entries, write)
        self.blobs.settle(engine, held.values())
        return value

    def _cull(self, engine: BucketSQLite, keys: list[str]) -> None:
        """Make room before writing ``keys`` so that the namespace holds at most MAX_ENTRIES entries.

        Like DatabaseCache: expired rows go first; if that is not enough,
        1/CULL_FREQUENCY of the live entries go (all of them if it is 0).
        Those are the least recently written, not DatabaseCache's first in
        key order, which is arbitrary; both cost the same. Unlike Django's
        backends, a full cache is not culled for a write that only replaces
        live entries, since it does not grow, and the namespace is counted
        (a scan of MAX_ENTRIES keys) only when its row bound says it may be
        full rather than on every write.
        """
        kv = engine.kv
        with _row_bounds_lock:
            bounds = _row_bounds.setdefault(kv, {})
            bound = bounds.get(self.namespace)
            if bound is not None and bound < self._max_entries:
                bounds[self.namespace] = bound + len(keys)
                return
        if len(kv.get_many_bytes(keys)) == len(keys):
            return
        rows = kv.count(self.namespace, include_expired=True)
        if rows >= self._max_entries:
            self._evict(engine)
            rows = kv.count(self.namespace, include_expired=True)
        with _row_bounds_lock:
            _row_bounds.setdefault(kv, {})[self.namespace] = rows + len(keys)

    def _evict(self, engine: BucketSQLite) -> None:
        kv = engine.kv
        if self._cull_frequency == 0:
            kv.delete_prefix(self.namespace)
        else:
            kv.purge_expired(self.namespace)
            live = kv.count(self.namespace)
            if live >= self._max_entries:
                kv.evict_oldest(self.namespace, max(1, live // self._cull_frequency))
        self.blobs.settle(engine, sweep=True)  # which rows went is not known: look at every blob of the namespace

    def _pattern(self, pattern: str, version: Version) -> tuple[str, str, str]:
        """The literal prefix, the GLOB for whole stored keys, and the literal suffix that wrap ``pattern``.

        KEY_FUNCTION decides where the user's key goes in the made key (with
        the default one, after ``<KEY_PREFIX>:<version>:``); making the key
        of a marker shows what comes before and after it.
        """
        made = self.make_key(_KEY_MARK, version=version)
        before, found, after = made.partition(_KEY_MARK)
        if not found:
            raise ValueError(
                "iter_keys() and delete_pattern() need a KEY_FUNCTION that puts the key unchanged into the key it "
                f"makes; {self.key_func!r} does not"
            )
        prefix = self.namespace + before
        return prefix, glob_escape(prefix) + pattern + glob_escape(after), after


class _OverTheLimit(Exception):
    """`incr` needs the blob path: the old or the new value is over the KV limit."""
