"""Fill the site's bucket with a database of SIZE_MB MB (a table of 64 KiB random blobs) and flush it.

    python seed.py SIZE_MB      (with the site's environment: see benchmarks/support.py, seed_site)

Runs on this checkout and on v1's worktree alike; prints one JSON line.
"""

import json
import os
import sys
import time

import django

django.setup()

from buckethead_django import runtime  # noqa: E402

size_mb = int(sys.argv[1])
engine = runtime.get_buckethead()
conn = engine.connect()
conn.execute("CREATE TABLE IF NOT EXISTS bench_blobs (id INTEGER PRIMARY KEY, data BLOB)")
with conn:
    conn.executemany(
        "INSERT INTO bench_blobs (data) VALUES (?)", ((os.urandom(64 * 1024),) for _ in range(size_mb * 16))
    )
conn.close()
started = time.perf_counter()
result = engine.force_flush()
took = time.perf_counter() - started
runtime.stop()
print(json.dumps({"bytes": result.bytes, "flush_seconds": took, "generation": result.generation}))
