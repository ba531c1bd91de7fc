"""Appends one JSON line to ``BENCH_EVENTS`` per snapshot the process writes: pid, end time, duration, bytes."""

import json
import os
import time

from django.apps import AppConfig


def record_flush(sender: object, duration_seconds: float, bytes: int, **kwargs: object) -> None:
    path = os.environ.get("BENCH_EVENTS")
    if not path:
        return
    line = json.dumps({"pid": os.getpid(), "end": time.time(), "duration": duration_seconds, "bytes": bytes})
    with open(path, "a") as f:
        f.write(line + "\n")


class BenchAppConfig(AppConfig):
    name = "bench_app"

    def ready(self) -> None:
        try:
            from buckethead_django import signals
        except ImportError:
            return
        signals.snapshot_written.connect(record_flush, dispatch_uid="bench-record-flush")
