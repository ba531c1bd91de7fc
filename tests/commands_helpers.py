"""Helpers for the ``manage.py buckethead`` tests: run it in-process or as a real process, and look at buckets."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections

from buckethead_django import runtime
from buckethead_django.conf import get_settings
from buckethead_django.engine import BucketConfig, BucketSQLite, History, SnapshotEntry, WriterLease, read_lease
from buckethead_django.engine.lease import lease_key
from buckethead_django.engine.objectstore import iter_objects, open_object_store
from buckethead_django.roles import Role

from .servers import EXAMPLE, example_env
from .snapshots import current_record, snapshot_bytes

#: A secret no output may ever show; moto accepts any credentials.
SECRET = "do-not-print-this-secret"


@dataclass(frozen=True)
class Output:
    out: str
    err: str


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, as an operator's would."""

    def isatty(self) -> bool:
        return True


def call(*args: str, stdin: str | None = None, stderr: io.StringIO | None = None) -> Output:
    """Run ``manage.py buckethead <args>`` in this process.

    In the role a command has (`Role.PROCESS`) the process's engine is
    stopped after each run, as each real command's is when its process exits:
    the next run attaches to the host again.
    """
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    extra: dict[str, Any] = {} if stdin is None else {"stdin": io.StringIO(stdin)}
    try:
        call_command("buckethead", *args, stdout=out, stderr=err, **extra)
    finally:
        if runtime.role() is Role.PROCESS:
            runtime.stop()
    return Output(out.getvalue(), err.getvalue())


def call_json(*args: str) -> Any:
    return json.loads(call(*args, "--json").out)


def settings_for(config: BucketConfig) -> dict[str, Any]:
    """The BUCKETHEAD setting that points at ``config``'s bucket."""
    if config.local_path is not None:
        return {"LOCAL_PATH": str(config.local_path)}
    return {
        "BACKEND": "s3",
        "BUCKET": config.bucket,
        "ENDPOINT_URL": config.endpoint_url,
        "REGION": config.region,
        "ACCESS_KEY_ID": config.access_key_id,
        "SECRET_ACCESS_KEY": SECRET,
    }


def env_for(config: BucketConfig) -> dict[str, str]:
    """The same as BUCKETHEAD_* environment variables, for example-project processes."""
    return {f"BUCKETHEAD_{k}": str(v) for k, v in settings_for(config).items()}


def signing() -> dict[str, Any]:
    """The engine arguments that sign snapshots as this project's server does (with a key from SECRET_KEY)."""
    keys = get_settings().signing_keys()
    return {"signing_key": keys[0] if keys else None, "verify_keys": keys[1:]}


@contextlib.contextmanager
def server_engine(config: BucketConfig, **kwargs: Any) -> Iterator[BucketSQLite]:
    """A writer on ``config`` that signs like this project's server, started for the block; no flush loop.

    It is on a host of its own (a temporary ``local_dir``) unless ``local_dir`` is given, so it restores
    from the bucket at its start and its final flush ships everything at its stop, as a server on
    another host does.
    """
    with tempfile.TemporaryDirectory(prefix="bh-server-host-") as host:
        engine = BucketSQLite(config, **{"background_flush": False, "local_dir": Path(host), **signing(), **kwargs})
        with engine:
            yield engine


def seed(config: BucketConfig, **values: str) -> None:
    """Write KV entries through a writer that flushes and stops, as a server would."""
    with server_engine(config) as writer:
        for key, value in values.items():
            writer.kv.set(key, value)


def lease_in(config: BucketConfig) -> WriterLease | None:
    """The bucket's writer lease as it is now (None: no process holds the bucket)."""
    return read_lease(open_object_store(config), config.key)


def other_host_holds(config: BucketConfig, *, host: str = "web-2", pid: int = 4242) -> WriterLease:
    """Make the bucket's lease that of a live writer on another machine, as a server there would hold it."""
    assert host != socket.gethostname()
    now = time.time()
    lease = WriterLease(
        f"{host}:{pid}", host, pid, started_at=now - 300, renewed_at=now - 5, expires_at=now + 300, token="t0ken",
        host_token="elsewhere",
    )  # fmt: skip
    open_object_store(config).put(lease_key(config.key), lease.to_json())
    return lease


def query_bucket(config: BucketConfig, sql: str, name: str = "latest") -> list[tuple[Any, ...]]:
    """The rows ``sql`` selects from a snapshot in the bucket (the current one, or a named one)."""
    data = snapshot_bytes(open_object_store(config), name, key=config.key)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.db"
        path.write_bytes(data)
        db = sqlite3.connect(path)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()


def sqlite_file(path: Path, script: str) -> Path:
    """A SQLite database file at ``path`` made by ``script``, as another program would leave it."""
    db = sqlite3.connect(path)
    try:
        db.executescript(script)
        db.commit()
    finally:
        db.close()
    return path


@contextlib.contextmanager
def django_database(alias: str, **settings_dict: Any) -> Iterator[None]:
    """A Django database alias for the block, besides the test settings' own (which cannot be changed mid-run)."""
    databases = {"default": dict(django_settings.DATABASES["default"]), alias: settings_dict}
    connections.settings[alias] = connections.configure_settings(databases)[alias]
    try:
        yield
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


def kv_in_bucket(config: BucketConfig, name: str = "latest") -> dict[str, str]:
    """The live KV entries of a snapshot in the bucket (the current one, or a named one), changing nothing."""
    data = snapshot_bytes(open_object_store(config), name, key=config.key)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.db"
        path.write_bytes(data)
        db = sqlite3.connect(path)
        try:
            rows = db.execute(
                "SELECT key, value FROM bh_kv WHERE expires_at IS NULL OR expires_at > ? ORDER BY key", (time.time(),)
            ).fetchall()
        finally:
            db.close()
    return {key: bytes(value).decode("utf-8") for key, value in rows}


def entries(config: BucketConfig) -> list[SnapshotEntry]:
    """Every restorable snapshot in the bucket, as `history` lists them."""
    return History(open_object_store(config), config.key).snapshots()


def damage_current(config: BucketConfig) -> str:
    """Overwrite the current generation's data with garbage, as a bad disk or a bad hand would; its name."""
    store = open_object_store(config)
    current = current_record(store, config.key)
    assert current is not None, "the bucket has no current generation to damage"
    store.put(current.chunks[0].key, b"SQLite format 3\x00 but not really")
    return current.name


def bucket_state(config: BucketConfig) -> dict[str, str]:
    """Every object in the bucket and its ETag: equal before and after means nothing was changed.

    The current record is the exception: every writer that starts rewrites
    it to claim the bucket (which fences off any earlier writer), so it
    stands for the generation it names.
    """
    store = open_object_store(config)
    state = {o.key: o.etag for o in iter_objects(store) if o.key != History(store, config.key).current_key}
    current = current_record(store, config.key)
    state["current generation"] = current.name if current is not None else ""
    return state


def run(state: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``python example_project/manage.py buckethead <args>`` as a real process, stdin fed from ``stdin``."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "buckethead", *args],
        env=example_env(state, **env),
        cwd=EXAMPLE,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the example project's INFO log lines about engines starting and stopping."""
    return [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("BucketSQLite ", "BucketHead started", "BucketHead stopped"))
    ]
