"""Every live entry of the BucketHead caches, into other Django caches, with the time it has left.

- **Which entries.** A route names a BucketHead cache alias and the cache
  alias it goes to (``default=redis``). The source cache's entries are the
  live rows of its namespace (``django-cache:<LOCATION>:``) that its key
  function made: with Django's default one, those that start with its
  ``KEY_PREFIX``, of every version. Expired entries are left out.
- **Values.** Read through the source cache itself (`BucketHeadCache.get_many`
  on a twin that takes stored keys as they are), which unpickles them and
  fetches the values over the KV limit from their FileStore blobs; written
  with the target cache's own ``set``/``set_many``, so its serializer,
  compressor and key function apply as for any write of the site.
- **Keys.** With Django's default key function the stored key is
  ``<KEY_PREFIX>:<VERSION>:<key>``: the entry is written with the target's
  ``set(key, value, version=VERSION)``, so ``caches[target].get(key)`` (with the
  target's own KEY_PREFIX and VERSION) finds it. With a KEY_FUNCTION of the
  site's own, the stored key cannot be taken apart: it is written unchanged,
  which needs the target to have the same KEY_FUNCTION and KEY_PREFIX.
- **Time left.** From the KV store's expiry, taken again just before each
  write; an entry that has expired by then is left out, one that never
  expires is written without a timeout.
- **Application KV keys** (``bh.kv.set("user/1", ...)``, anything outside
  ``django-cache:``) are not exported, only counted and listed: they are no
  cache entries but the application's own records, read through the KVStore
  API, which the new servers do not have; whether each belongs in a model,
  in Redis itself or nowhere is the application's decision, and a cache
  that may evict them is no safe default.

Writing by key makes a second export overwrite the first: nothing is ever
duplicated.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, CacheKeyWarning, InvalidCacheBackendError, caches
from django.core.cache.backends.base import default_key_func
from django.utils.module_loading import import_string

from ..cache import BLOB_REGISTRY, NAMESPACE, BucketHeadCache
from ..cache_blobs import BLOB_MARK
from ..engine import BucketSQLite
from .source import ExportError, Progress, no_progress

#: Entries read (and written) per round.
BATCH = 500
#: What the reachability check reads from a target cache: any key will do, it is never written.
PROBE_KEY = "buckethead-export-probe"


@dataclass(frozen=True)
class Route:
    """One BucketHead cache (``source``) and the cache alias its entries go to (``target``)."""

    source: str
    target: str


@dataclass
class RouteEntries:
    """The entries of one route: how many, their stored bytes, and how many were copied."""

    route: Route
    location: str
    #: Stored keys (without the namespace) of the live entries this route takes.
    keys: list[str] = field(default_factory=list, repr=False)
    bytes: int = 0
    copied: int = 0
    #: Entries left out after all: expired between the plan and their write (or whose blob is missing).
    missed: int = 0

    @property
    def entries(self) -> int:
        return len(self.keys)


@dataclass
class CachePlan:
    """Every KV row of the state, sorted: the routes' entries, and what is not exported."""

    routes: list[RouteEntries]
    #: Live entries of BucketHead caches no route takes, per cache alias.
    other_caches: dict[str, int] = field(default_factory=dict)
    #: Live entries under ``django-cache:`` that no configured cache makes (a removed cache, another KEY_PREFIX).
    orphaned: int = 0
    #: Application KV keys (outside ``django-cache:``), not exported, and their stored bytes.
    app_keys: list[str] = field(default_factory=list)
    app_bytes: int = 0
    #: Expired rows not purged yet (none is exported).
    expired: int = 0

    @property
    def entries(self) -> int:
        return sum(r.entries for r in self.routes)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.routes)


@dataclass
class CacheResult:
    plan: CachePlan
    seconds: float

    @property
    def copied(self) -> int:
        return sum(r.copied for r in self.plan.routes)


# -- routes -----------------------------------------------------------------------------------------


def buckethead_caches() -> list[str]:
    """The aliases of ``settings.CACHES`` whose backend is a BucketHeadCache (no cache is built to find out)."""
    found = []
    for alias, configured in settings.CACHES.items():
        try:
            backend = import_string(configured["BACKEND"])
        except (ImportError, KeyError):
            continue  # a cache the site cannot build is no BucketHead cache; using it says what is wrong
        if isinstance(backend, type) and issubclass(backend, BucketHeadCache):
            found.append(alias)
    return found


def parse_routes(values: list[str]) -> list[Route]:
    """``TARGET`` (from the site's one BucketHead cache) or ``SOURCE=TARGET``, each checked."""
    ours = buckethead_caches()
    routes = []
    for value in values:
        source, sep, target = value.rpartition("=")
        if not sep:
            if len(ours) != 1:
                which = (
                    f"the site has several ({', '.join(ours)}): say which goes where, as "
                    + " ".join(f"--cache {a}=ALIAS" for a in ours)
                    if ours
                    else "settings.CACHES has none"
                )
                raise ExportError(f"--cache {value}: which BucketHead cache should go there? {which}")
            source = ours[0]
        routes.append(_checked(Route(source, target)))
    return routes


def _checked(route: Route) -> Route:
    known = ", ".join(settings.CACHES) or "none"
    for alias in (route.source, route.target):
        if alias not in settings.CACHES:
            raise ExportError(f"there is no cache {alias!r} in settings.CACHES (it has: {known})")
    if not isinstance(caches[route.source], BucketHeadCache):
        raise ExportError(
            f"cache {route.source!r} is not a BucketHead cache ({settings.CACHES[route.source]['BACKEND']}): the "
            "export copies the entries of the BucketHead caches"
        )
    if isinstance(caches[route.target], BucketHeadCache):
        raise ExportError(
            f"cache {route.target!r} is BucketHead's own cache (BACKEND {settings.CACHES[route.target]['BACKEND']}): "
            "give the alias of the cache to copy into, such as a django-redis one"
        )
    source, target = caches[route.source], caches[route.target]
    if source.key_func is not default_key_func and (
        target.key_func is not source.key_func or target.key_prefix != source.key_prefix
    ):
        raise ExportError(
            f"cache {route.source!r} makes its keys with KEY_FUNCTION {source.key_func!r}, whose keys cannot be taken "
            f"apart: give cache {route.target!r} the same KEY_FUNCTION and KEY_PREFIX, and its entries are copied "
            "under the same keys"
        )
    return route


def reach(alias: str) -> None:
    """Read a key from cache ``alias``, so that an unreachable server is one clear error before any work."""
    try:
        caches[alias].get(PROBE_KEY)
    except Exception as exc:  # noqa: BLE001 - every cache client raises its own errors
        configured = settings.CACHES[alias]
        where = configured.get("LOCATION") or "its default location"
        raise ExportError(
            f"cannot reach cache {alias!r} ({configured['BACKEND']} at {where}): "
            f"{str(exc).strip() or type(exc).__name__}. Check that the server runs and that settings.CACHES names "
            "it. Nothing was written."
        ) from None


# -- what is there --------------------------------------------------------------------------------------


def plan(engine: BucketSQLite, routes: list[Route]) -> CachePlan:
    """Sort every KV row of the state: entries of the routes, of other caches, orphans, application keys."""
    kv = engine.kv
    claimed: dict[str, set[str]] = {}  # cache alias -> full KV keys of its live entries
    for alias in buckethead_caches():
        cache = caches[alias]
        claimed[alias] = {cache.namespace + made for made in _made_keys(engine, cache)}
    everything = kv.keys()
    in_caches = [k for k in everything if k.startswith(NAMESPACE) and not k.startswith(BLOB_REGISTRY)]
    routed: set[str] = set()
    result = CachePlan([])
    for route in routes:
        cache = caches[route.source]
        keys = sorted(k[len(cache.namespace) :] for k in claimed[route.source])
        entries = RouteEntries(route, cache.location, keys, _stored_bytes(engine, [cache.namespace + k for k in keys]))
        result.routes.append(entries)
        routed |= claimed[route.source]
    for alias, keys in claimed.items():
        if keys - routed:
            result.other_caches[alias] = len(keys - routed)
    known = set().union(*claimed.values()) if claimed else set()
    result.orphaned = sum(1 for k in in_caches if k not in known)
    result.app_keys = [k for k in everything if not k.startswith(NAMESPACE)]
    result.app_bytes = _stored_bytes(engine, result.app_keys)
    result.expired = kv.count(include_expired=True) - len(everything)
    return result


def _made_keys(engine: BucketSQLite, cache: BucketHeadCache) -> list[str]:
    """The stored keys (namespace removed) of the live entries this cache made."""
    made = [k[len(cache.namespace) :] for k in engine.kv.keys(cache.namespace)]
    if cache.key_func is not default_key_func:
        return made  # a key function of the site's own: every entry of its LOCATION is taken as its
    return [k for k in made if _split(cache, k) is not None]


def _split(cache: BaseCache, made: str) -> tuple[int, str] | None:
    """``(version, key)`` of a key Django's default key function made with this cache's KEY_PREFIX."""
    head = f"{cache.key_prefix}:"
    if not made.startswith(head):
        return None
    version, sep, key = made[len(head) :].partition(":")
    if not sep or not version.lstrip("-").isdigit():
        return None
    return int(version), key


def _stored_bytes(engine: BucketSQLite, keys: list[str]) -> int:
    """The bytes these KV rows hold; for a cache value over the KV limit, its blob's."""
    total = 0
    for start in range(0, len(keys), BATCH):
        for raw in engine.kv.get_many_bytes(keys[start : start + BATCH]).values():
            if raw.startswith(BLOB_MARK):
                info = engine.files.head(raw[len(BLOB_MARK) :].decode("ascii"))
                total += info.size if info is not None else 0
            else:
                total += len(raw)
    return total


# -- the copy -----------------------------------------------------------------------------------------


def copy(engine: BucketSQLite, plan: CachePlan, *, progress: Progress = no_progress) -> CacheResult:
    """Write every planned entry into its route's target cache, with the time it has left."""
    started = time.monotonic()
    with warnings.catch_warnings():
        # Keys the source accepted; a memcached-style warning about their length or characters says nothing new.
        warnings.simplefilter("ignore", CacheKeyWarning)
        for entries in plan.routes:
            try:
                _copy_route(engine, entries, progress)
            except ExportError:
                raise
            except Exception as exc:  # noqa: BLE001 - every cache client raises its own errors
                raise ExportError(
                    f"could not write to cache {entries.route.target!r}: {str(exc).strip() or type(exc).__name__}. "
                    "Run the export again once it is reachable: entries are written by key, so none is duplicated."
                ) from None
    return CacheResult(plan, time.monotonic() - started)


def _copy_route(engine: BucketSQLite, entries: RouteEntries, progress: Progress) -> None:
    source = caches[entries.route.source]
    reader = _twin(type(source), source.location, {})
    verbatim = source.key_func is not default_key_func
    write = _writer(_target_twin(entries.route.target) if verbatim else caches[entries.route.target])
    for start in range(0, entries.entries, BATCH):
        made_keys = entries.keys[start : start + BATCH]
        values = reader.get_many(made_keys)
        deadlines = _deadlines(engine, source, values)
        writes: list[Write] = []
        now = time.time()
        for made, value in values.items():
            deadline = deadlines.get(made, 0.0)
            if deadline is not None and deadline <= now:
                continue  # expired since the plan
            version, key = (None, made) if verbatim else _split(source, made)  # type: ignore[misc]
            writes.append((key, value, None if deadline is None else deadline - now, version))
        write(writes)
        entries.copied += len(writes)
        entries.missed += len(made_keys) - len(writes)
        progress(len(made_keys))


#: One entry to write: key, value, seconds to live (None: forever), version.
Write = tuple[str, Any, float | None, int | None]


def _writer(cache: BaseCache) -> Callable[[list[Write]], None]:
    """How to write a batch of entries into ``cache``: with its ``set_many`` (one call per version for those that
    never expire) and ``set``; for django-redis, every ``set`` of the batch in one pipeline, as its own
    ``set_many`` does for entries that share a timeout."""
    pipelined = _redis_pipeline(cache)
    if pipelined is not None:
        return pipelined

    def write(writes: list[Write]) -> None:
        forever: dict[int | None, dict[str, Any]] = {}
        for key, value, timeout, version in writes:
            if timeout is None:
                forever.setdefault(version, {})[key] = value
            else:
                cache.set(key, value, timeout=timeout, version=version)
        for version, batch in forever.items():
            cache.set_many(batch, timeout=None, version=version)

    return write


def _redis_pipeline(cache: BaseCache) -> Callable[[list[Write]], None] | None:
    """django-redis's own ``set`` of each entry, through one pipeline per batch: one round trip, not one per entry."""
    try:
        from django_redis.cache import RedisCache  # noqa: PLC0415 - only where django-redis is installed
        from django_redis.client import DefaultClient, ShardClient  # noqa: PLC0415
    except ImportError:
        return None
    if not isinstance(cache, RedisCache):
        return None
    client = cache.client
    if not isinstance(client, DefaultClient) or isinstance(client, ShardClient):
        return None  # a sharded client sends each key to its own server: no single pipeline

    def write(writes: list[Write]) -> None:
        pipeline = client.get_client(write=True).pipeline(transaction=False)
        for key, value, timeout, version in writes:
            client.set(key, value, timeout, version=version, client=pipeline)
        pipeline.execute()

    return write


def _deadlines(engine: BucketSQLite, cache: BucketHeadCache, values: dict[str, Any]) -> dict[str, float | None]:
    """When each entry expires (Unix time; None: never), as the KV store says now; expired ones are absent."""
    found: dict[str, float | None] = {}
    for made in values:
        now = time.time()
        try:
            left = engine.kv.ttl(cache.namespace + made)
        except KeyError:
            continue
        found[made] = None if left is None else now + left
    return found


def _verbatim(key: str, key_prefix: str, version: int) -> str:
    """A key function that takes a stored key as it is: for twins that read or write stored keys."""
    return key


def _twin(backend: type[BaseCache], location: str, params: dict[str, Any]) -> Any:
    """A cache of ``backend`` on ``location`` whose keys are used as given (``_verbatim``)."""
    return backend(location, {**params, "KEY_FUNCTION": _verbatim})


def _target_twin(alias: str) -> BaseCache:
    """Cache ``alias`` as configured, except that it writes stored keys as they are."""
    params = dict(settings.CACHES[alias])
    backend = params.pop("BACKEND")
    location = params.pop("LOCATION", "")
    try:
        return _twin(import_string(backend), location, params)
    except ImportError as exc:
        raise InvalidCacheBackendError(f"could not find backend {backend!r}: {exc}") from exc
