"""Prometheus metrics of the host's database, for the scrapers operators already point at Litestream.

Install the optional extra (``pip install buckethead-django[metrics]``, which
brings ``prometheus-client``) and include the app's URLs: the view answers at
``metrics/`` beside ``health/``. Without the extra the view answers 501 and
says what to install; nothing fails at startup.

Every value is one the host's processes share, so whichever gunicorn worker
Prometheus happens to reach answers the same: the host's replicator from its
memory, the others (members) from what it announces and records beside the
database (``replicator.json``, ``state.json``), and the database itself. A
count kept in one worker's memory would jump up and down from one scrape to
the next, so there are none (the flush signals are sent in the replicator
only). Like the health check, a scrape makes no request to the bucket: it
answers when the bucket does not, which is when it matters.

Who sees what follows the health view's rule (``HEALTH_DETAILS``): anyone
gets the metrics of the health view's public fields (the status, and how old
the bucket's copy is); the others only where the request may see the health
details. ``buckethead_metrics_details`` says which of the two a scrape got.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from .engine import BucketHeadError, BucketSQLite
from .health import DEGRADED, FAILING, LAGGING, OK, engine_health
from .runtime import get_buckethead
from .views import shows_health_details

try:
    from prometheus_client import CollectorRegistry, Metric
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import choose_encoder
except ImportError:  # the optional extra is not installed: the view says so (501), nothing fails at import
    AVAILABLE = False
else:
    AVAILABLE = True

logger = logging.getLogger("buckethead_django")

#: What the view answers (HTTP 501) when ``prometheus-client`` is not installed.
NOT_INSTALLED = (
    "BucketHead's metrics need prometheus-client, which is not installed. "
    "Install the optional extra: pip install 'buckethead-django[metrics]'\n"
)

STATUSES = (OK, DEGRADED, FAILING, LAGGING)


@dataclass(frozen=True)
class Gauge:
    """One metric of the endpoint; ``public`` ones are shown to anyone, like the health view's public fields."""

    name: str
    documentation: str
    public: bool = False


STATUS = Gauge(
    "buckethead_status",
    "The host's health status, as the health view says it: 1 for the current one of ok, degraded, failing, lagging.",
    public=True,
)
GAUGES = (
    Gauge(
        "buckethead_last_upload_timestamp_seconds",
        "When the host last committed a snapshot to the bucket (Unix time).",
        public=True,
    ),
    Gauge(
        "buckethead_last_upload_age_seconds",
        "Seconds since the host last committed a snapshot to the bucket.",
        public=True,
    ),
    Gauge(
        "buckethead_last_good_snapshot_timestamp_seconds",
        "When the bucket last held all of the host's data (the last upload, else the snapshot restored), Unix time.",
        public=True,
    ),
    Gauge(
        "buckethead_last_good_snapshot_age_seconds",
        "Seconds since the bucket last held all of the host's data (the last upload, else the snapshot restored).",
        public=True,
    ),
    Gauge(
        "buckethead_pending_changes",
        "1 if the host's database holds changes the bucket does not have yet.",
    ),
    Gauge(
        "buckethead_replication_lag_seconds",
        "How long the bucket's copy has lagged the host's database: 0 with nothing pending, else seconds since the "
        "host's database was last seen equal to it (the oldest unshipped change is at most this old).",
    ),
    Gauge(
        "buckethead_last_flush_failed",
        "1 if the host's last flush failed (it is retried, the change stays pending).",
    ),
    Gauge(
        "buckethead_fenced",
        "1 if another host took the bucket over: nothing this host changes reaches the bucket any more.",
    ),
    Gauge(
        "buckethead_read_only",
        "1 if this host serves a read-only copy of the latest snapshot (another host holds the bucket's lease).",
    ),
    Gauge(
        "buckethead_lease_held",
        "1 if this host holds the bucket's writer lease: its replicator runs, and no other host fenced it off.",
    ),
    Gauge(
        "buckethead_replicator_running",
        "1 if the host's replicator (the process that ships to the bucket) is running and has the database ready.",
    ),
    Gauge(
        "buckethead_replicator_start_time_seconds",
        "When the host's replicator took the role (Unix time): it changes when another process takes it over.",
    ),
    Gauge(
        "buckethead_set_aside_copies",
        "Copies of the host's database set aside at its start: they hold changes the bucket does not have.",
    ),
    Gauge(
        "buckethead_lease_expires_in_seconds",
        "Seconds until the bucket's writer lease this host holds expires (it is renewed at half its life).",
    ),
    Gauge(
        "buckethead_replica_lag_seconds",
        "On a read replica: seconds since its follower last found the bucket held nothing newer than what it serves.",
        public=True,
    ),
    Gauge(
        "buckethead_replica_flushed_timestamp_seconds",
        "On a read replica: when the writer flushed the point it serves (Unix time).",
    ),
    Gauge("buckethead_database_bytes", "Size of the host's database (pages in use times page size), in bytes."),
    Gauge("buckethead_wal_bytes", "Size of the host's database's write-ahead log file, in bytes."),
    Gauge("buckethead_kv_entries", "Live entries of the KV store (the cache's entries included)."),
    Gauge("buckethead_stored_files", "Files kept by the file storage."),
)


@dataclass(frozen=True)
class Counter:
    """A count the host keeps across its replicators (see `ReplicatorInfo`); shown with the details."""

    name: str
    documentation: str
    #: The `ReplicatorInfo` field that holds it.
    field: str


COUNTERS = (
    Counter("buckethead_flushes", "Flushes of the host that uploaded a snapshot to the bucket.", "flushes"),
    Counter("buckethead_flush_failures", "Flushes of the host that failed (each is retried).", "flush_failures"),
    Counter("buckethead_uploaded_bytes", "Bytes the host's flushes uploaded to the bucket.", "uploaded_bytes"),
)
DETAILS = Gauge(
    "buckethead_metrics_details",
    "1 if this scrape got every metric, 0 if only the public ones (see the HEALTH_DETAILS setting).",
    public=True,
)


def read_host(engine: BucketSQLite | None) -> tuple[str, dict[str, float | None]]:
    """The host's status and each gauge's value (None: unknown), from what every process of the host can read.

    ``engine`` None means there is no engine (it could not start): the host is failing, and nothing else is known.
    """
    if engine is None:
        return FAILING, {}
    now = time.time()
    health = engine_health(engine)
    info = engine.replicator_info()
    fenced = health.fenced is not None
    pending = not engine.read_only and engine.dirty
    lag: float | None = 0.0
    if pending:
        state = engine.host.state()  # written by the replicator when the file last equalled the bucket's copy
        lag = None if state is None else max(0.0, now - state.recorded_at)
    replicator_running = info is not None and info.ready and info.running
    # The replicator holds the lease from its start to its stop; elsewhere, its running is what the host knows of it.
    holds = engine.lease is not None if engine.replicator is not None else replicator_running
    values: dict[str, float | None] = {
        "buckethead_last_upload_timestamp_seconds": health.last_upload_at,
        "buckethead_last_upload_age_seconds": _age(health.last_upload_at, now),
        "buckethead_last_good_snapshot_timestamp_seconds": health.last_good_at,
        "buckethead_last_good_snapshot_age_seconds": _age(health.last_good_at, now),
        "buckethead_pending_changes": float(pending),
        "buckethead_replication_lag_seconds": lag,
        "buckethead_last_flush_failed": float(health.last_error is not None),
        "buckethead_fenced": float(fenced),
        "buckethead_read_only": float(engine.read_only),
        "buckethead_lease_held": float(holds and not fenced and not engine.read_only),
        "buckethead_replicator_running": float(replicator_running),
        "buckethead_replicator_start_time_seconds": info.started_at if info is not None else None,
        "buckethead_set_aside_copies": float(len(health.set_aside)),
        "buckethead_wal_bytes": _file_bytes(Path(f"{engine.database.path}-wal")),
        "buckethead_lease_expires_in_seconds": _age(now, info.lease_expires_at) if info and holds else None,
        "buckethead_replica_lag_seconds": health.replica.lag_seconds if health.replica is not None else None,
        "buckethead_replica_flushed_timestamp_seconds": health.replica.flushed_at if health.replica else None,
    }
    for counter in COUNTERS:
        values[counter.name] = float(getattr(info, counter.field)) if info is not None else None
    try:
        stats = engine.stats()
    except (sqlite3.Error, BucketHeadError) as exc:  # a scrape still answers (an engine stopping, say): the rest
        logger.warning("BucketHead metrics could not read the host's database: %s", exc)
    else:
        values["buckethead_database_bytes"] = float(stats["database_bytes"])
        values["buckethead_kv_entries"] = float(stats["kv_entries"])
        values["buckethead_stored_files"] = float(stats["files"])
    return health.status, values


def _age(at: float | None, now: float | None) -> float | None:
    """Seconds from ``at`` to ``now`` (not below 0); None if either is unknown."""
    return None if at is None or now is None else max(0.0, now - at)


def _file_bytes(path: Path) -> float:
    with contextlib.suppress(FileNotFoundError):
        return float(path.stat().st_size)
    return 0.0


class BucketHeadCollector:
    """A prometheus-client collector of the host's metrics, read afresh at each collection.

    ``details`` False keeps to the public gauges. A gauge whose value is
    unknown (no upload yet, say) is described but has no sample, as
    Prometheus expects of a value that does not exist.
    """

    def __init__(self, engine: BucketSQLite | None, *, details: bool = True) -> None:
        self.engine = engine
        self.details = details

    def collect(self) -> Iterator[Metric]:
        status, values = read_host(self.engine)
        family = GaugeMetricFamily(STATUS.name, STATUS.documentation, labels=["status"])
        for name in STATUSES:
            family.add_metric([name], float(name == status))
        yield family
        for gauge in GAUGES:
            if not (gauge.public or self.details):
                continue
            family = GaugeMetricFamily(gauge.name, gauge.documentation)
            value = values.get(gauge.name)
            if value is not None:
                family.add_metric([], value)
            yield family
        for counter in COUNTERS if self.details else ():
            total = CounterMetricFamily(counter.name, counter.documentation)
            if values.get(counter.name) is not None:
                total.add_metric([], values[counter.name])
            yield total
        yield GaugeMetricFamily(DETAILS.name, DETAILS.documentation, value=float(self.details))


def render_metrics(engine: BucketSQLite | None, *, details: bool = True, accept: str = "") -> tuple[bytes, str]:
    """The exposition of ``engine``'s metrics and its content type, in the format the ``Accept`` header prefers.

    For a project that serves them behind its own access check (a token, a
    separate port) rather than through `metrics`. Raises `ImportError` when
    ``prometheus-client`` is not installed.
    """
    if not AVAILABLE:
        raise ImportError(NOT_INSTALLED.strip())
    registry = CollectorRegistry()  # private: the process's default registry holds the process's own metrics
    registry.register(BucketHeadCollector(engine, details=details))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """The host's metrics in Prometheus's text format (or OpenMetrics, when asked for); never cached.

    Anyone gets the status and the upload ages, as from the health view;
    the rest where ``HEALTH_DETAILS`` lets the request see the health
    details. It answers 200 even when the engine could not start (the
    status says ``failing``), so Prometheus keeps the series rather than
    losing the scrape; 501 when ``prometheus-client`` is not installed.
    """
    if not AVAILABLE:
        response = HttpResponse(NOT_INSTALLED, status=501, content_type="text/plain; charset=utf-8")
    else:
        try:
            engine: BucketSQLite | None = get_buckethead()
        except Exception:  # noqa: BLE001 - an engine that cannot start is reported as failing, not raised
            engine = None
        body, content_type = render_metrics(
            engine, details=shows_health_details(request), accept=request.headers.get("Accept", "")
        )
        response = HttpResponse(body, content_type=content_type)
    patch_cache_control(response, no_store=True)
    return response
