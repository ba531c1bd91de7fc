"""Plain-dataclass configuration for the engine, and every default it has.

`BucketConfig` says *where* state lives (an S3-compatible bucket, Cloudflare R2,
or a local directory); `SnapshotConfig` says *when* it is written. Both are
immutable so one instance can be shared safely between threads.

Every default of the engine is written once, here: the dataclasses,
`BucketSQLite`'s arguments, the interfaces and the Django app's settings
all read these constants (``DEFAULT_FLUSH_INTERVAL`` is the default of the
setting ``FLUSH_INTERVAL``, and of ``SnapshotConfig.interval_seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# -- where: BucketConfig ---------------------------------------------------------------

DEFAULT_SNAPSHOT_KEY = "bucketsqlite/snap.db"
DEFAULT_FILES_PREFIX = "files/"
#: Attempts per S3 request, the first one included.
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MULTIPART_THRESHOLD = 8 * 1024 * 1024
DEFAULT_MULTIPART_CHUNKSIZE = 8 * 1024 * 1024
#: Size of one chunk of a snapshot's image (the last is shorter): each is one object, verified on its own.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
#: Chunks uploaded or downloaded at once. At most botocore's connection pool (10): more workers than pooled
#: connections would open and drop a connection per request.
DEFAULT_TRANSFER_CONCURRENCY = 8

# -- when: SnapshotConfig -----------------------------------------------------------------

DEFAULT_FLUSH_INTERVAL = 5.0
DEFAULT_MIN_FLUSH_INTERVAL = 1.0
#: A flush writes a new base instead of a delta once the deltas since the last base would exceed this fraction
#: of the database's size: a generation then holds at most about 1.5 times the database.
DEFAULT_COMPACT_RATIO = 0.5
#: ... or once the generation has this many deltas (about six days of 5-second flushes). Merged deltas keep a
#: restore to a few dozen objects however long the chain (see `chain`); this bounds the generation's listing.
DEFAULT_COMPACT_DELTAS = 100_000
DEFAULT_KEEP_PREVIOUS = True
#: Generations (bases, each with its deltas) kept whatever their age.
DEFAULT_KEEP_SNAPSHOTS = 24
#: Every generation younger than this is kept, so every flush of the last day can be restored.
DEFAULT_KEEP_SNAPSHOTS_MAX_AGE: float | None = 24 * 3600.0
#: Every flush younger than this stays a point; an older delta a merged delta stands for is deleted, so older
#: points are every 16th flush (until the age rule, past which merged deltas a longer one covers go too).
DEFAULT_KEEP_EVERY_FLUSH: float | None = 3600.0
#: Beyond that, the newest generation of each of this many days is kept.
DEFAULT_KEEP_DAILY = 30
#: The automatic ``pre-restore-*`` labels a restore keeps, newest first (labels given by hand are never pruned).
DEFAULT_KEEP_PRE_RESTORE = 10

# -- how: BucketSQLite's arguments --------------------------------------------------------

#: Seconds a connection waits for another connection's lock.
DEFAULT_BUSY_TIMEOUT = 30.0
#: The largest KV value, in bytes (1 MiB).
DEFAULT_KV_MAX_VALUE_BYTES = 1024 * 1024
#: How long the writer lease lasts; it is renewed at half its life.
DEFAULT_LEASE_SECONDS = 300.0
#: How long a starting writer waits for another live writer to release the lease (a rolling deploy's handover).
DEFAULT_LEASE_WAIT = 20.0
#: How long a starting engine retries while the bucket cannot be reached.
DEFAULT_STARTUP_TIMEOUT = 30.0
#: What a process does when another host keeps the bucket's lease past the wait: "exit" (raise
#: `WriterConflict`) or "read-only" (serve a read-only copy of the latest snapshot).
DEFAULT_LEASE_CONFLICT = "exit"
LEASE_CONFLICT_CHOICES = ("exit", "read-only")
#: What a host is to its bucket: the one "writer", or a read "replica" that follows what the writer flushes.
DEFAULT_ROLE = "writer"
ROLE_CHOICES = ("writer", "replica")
#: How often a replica looks for the writer's new flushes (None: every flush interval). Two Class B requests a look.
DEFAULT_REPLICA_POLL_INTERVAL: float | None = None
#: How far behind the bucket a replica may be before its health check answers "lagging" (503).
DEFAULT_REPLICA_MAX_LAG = 60.0

# -- maintenance ----------------------------------------------------------------------------

#: How old an unreferenced blob must be before `FileStore.gc` deletes it (a writer may not have recorded it yet).
DEFAULT_GC_GRACE_SECONDS = 3600.0

R2_ENDPOINT_TEMPLATE = "https://{account_id}.r2.cloudflarestorage.com"


@dataclass(frozen=True)
class BucketConfig:
    """Where the snapshot and the file blobs are stored.

    With ``local_path`` set, the "bucket" is a directory on disk (development,
    tests, the zero-config default); otherwise it is an S3-compatible bucket
    reached through boto3.
    """

    bucket: str = ""
    key: str = DEFAULT_SNAPSHOT_KEY
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    files_prefix: str = DEFAULT_FILES_PREFIX
    local_path: Path | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE

    def __post_init__(self) -> None:
        if self.local_path is None and not self.bucket:
            raise ValueError(
                "BucketConfig needs a bucket name, or local_path for the local "
                "directory backend (BucketConfig.local(path))."
            )
        if not self.key or self.key.startswith("/") or self.key.endswith("/"):
            raise ValueError(f"snapshot key {self.key!r} must be a non-empty object key like 'bucketsqlite/snap.db'")
        if self.files_prefix and not self.files_prefix.endswith("/"):
            raise ValueError(f"files_prefix {self.files_prefix!r} must end with '/' (for example 'files/')")
        if self.local_path is not None and not isinstance(self.local_path, Path):
            object.__setattr__(self, "local_path", Path(self.local_path))

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def identity(self) -> str:
        """Which bucket and snapshot key this is, as one string (no secrets): what a host's database replicates."""
        if self.local_path is not None:
            return f"local:{self.local_path.resolve()}|{self.key}"
        return f"s3:{self.endpoint_url or 'aws'}|{self.bucket}|{self.key}"

    @classmethod
    def local(cls, path: str | Path, **kwargs: object) -> BucketConfig:
        """A local directory acting as the bucket."""
        return cls(local_path=Path(path), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_r2(
        cls,
        *,
        account_id: str,
        bucket: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        **kwargs: object,
    ) -> BucketConfig:
        """A Cloudflare R2 bucket: endpoint derived from the account id, region ``auto``."""
        if not account_id or not account_id.isalnum():
            raise ValueError(
                f"Cloudflare account id {account_id!r} is not valid: copy the 32-character "
                "id from the R2 page of the Cloudflare dashboard."
            )
        return cls(
            bucket=bucket,
            endpoint_url=R2_ENDPOINT_TEMPLATE.format(account_id=account_id),
            region="auto",
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            **kwargs,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class SnapshotConfig:
    """When snapshots are written.

    ``interval_seconds`` drives the background flush loop; ``min_interval_seconds``
    debounces ``flush()`` so a burst of callers costs one upload. A flush
    writes a delta of the pages changed since the previous one, or a new
    generation (a whole base) once the deltas since the last base exceed
    ``compact_ratio`` of the database's size or number ``compact_deltas``;
    retention keeps the newest ``keep_snapshots`` generations
    and any younger than ``keep_max_age_seconds`` (None: no age rule).
    Inside a generation, every flush younger than ``keep_every_flush_seconds``
    is a point; older ones are thinned out to the ends of merged deltas (see
    `chain`), and past ``keep_max_age_seconds`` to the longest of those.
    ``keep_previous`` (buckethead's name) guarantees at least the snapshot
    before the current one survives retention.
    """

    interval_seconds: float = DEFAULT_FLUSH_INTERVAL
    min_interval_seconds: float = DEFAULT_MIN_FLUSH_INTERVAL
    compact_ratio: float = DEFAULT_COMPACT_RATIO
    compact_deltas: int = DEFAULT_COMPACT_DELTAS
    keep_previous: bool = DEFAULT_KEEP_PREVIOUS
    keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS
    keep_max_age_seconds: float | None = DEFAULT_KEEP_SNAPSHOTS_MAX_AGE
    keep_every_flush_seconds: float | None = DEFAULT_KEEP_EVERY_FLUSH
    keep_daily: int = DEFAULT_KEEP_DAILY
    keep_pre_restore: int = DEFAULT_KEEP_PRE_RESTORE

    @property
    def generations_kept(self) -> int:
        """How many of the newest generations retention always keeps."""
        return max(self.keep_snapshots, 2 if self.keep_previous else 1)

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0:
            raise ValueError("SnapshotConfig.interval_seconds must be > 0")
        if self.min_interval_seconds < 0:
            raise ValueError("SnapshotConfig.min_interval_seconds must be >= 0")
        if not self.compact_ratio > 0:
            raise ValueError("SnapshotConfig.compact_ratio must be > 0 (a fraction of the database's size)")
        if self.compact_deltas < 1:
            raise ValueError("SnapshotConfig.compact_deltas must be >= 1")
        if self.keep_snapshots < 1:
            raise ValueError("SnapshotConfig.keep_snapshots must be >= 1 (the current generation is always kept)")
        if self.keep_pre_restore < 1:
            raise ValueError("SnapshotConfig.keep_pre_restore must be >= 1 (the restore just made keeps its own)")
        if self.keep_daily < 0:
            raise ValueError("SnapshotConfig.keep_daily must be >= 0 (0: no daily rule)")
        if self.keep_max_age_seconds is not None and self.keep_max_age_seconds <= 0:
            raise ValueError("SnapshotConfig.keep_max_age_seconds must be > 0, or None for no age rule")
        if self.keep_every_flush_seconds is not None and self.keep_every_flush_seconds <= 0:
            raise ValueError("SnapshotConfig.keep_every_flush_seconds must be > 0, or None to keep every flush")
