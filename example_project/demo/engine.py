"""The example project's one engine, started on first use and stopped (with a final flush) at exit."""

from __future__ import annotations

import atexit
import threading

from django.conf import settings

from buckethead_django.engine import BucketConfig, BucketSQLite, SnapshotConfig

_lock = threading.Lock()
_engine: BucketSQLite | None = None


def get_engine() -> BucketSQLite:
    global _engine  # noqa: PLW0603 - one engine per process, by design
    with _lock:
        if _engine is None:
            engine = BucketSQLite(
                BucketConfig.local(settings.BUCKETHEAD_LOCAL_PATH),
                SnapshotConfig(interval_seconds=10, min_interval_seconds=1),
            )
            engine.start()
            atexit.register(engine.stop)
            _engine = engine
        return _engine
