"""Helpers for the ``manage.py buckethead`` tests: run it in-process or as a real process, and look at buckets."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.management import call_command

from buckethead_django import runtime
from buckethead_django.engine import BucketConfig, BucketSQLite
from buckethead_django.engine.objectstore import iter_objects, open_object_store
from buckethead_django.roles import Role

from .servers import EXAMPLE, example_env

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

    In the reader role each run starts from a fresh read-only view, as each
    real command does in a process of its own.
    """
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    extra: dict[str, Any] = {} if stdin is None else {"stdin": io.StringIO(stdin)}
    try:
        call_command("buckethead", *args, stdout=out, stderr=err, **extra)
    finally:
        if runtime.role() is Role.READER:
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


def seed(config: BucketConfig, **values: str) -> None:
    """Write KV entries through a writer that flushes and stops, as a server would."""
    with BucketSQLite(config, background_flush=False) as writer:
        for key, value in values.items():
            writer.kv.set(key, value)


def kv_in_bucket(config: BucketConfig, name: str = "latest") -> dict[str, str]:
    """The KV entries of a snapshot in the bucket (the latest, or a named one), read without writing anything."""
    if name != "latest":
        key = config.key + (".prev" if name == "previous" else f".label.{name}")
        config = dataclasses.replace(config, key=key)
    with BucketSQLite(config, read_only_reason="tests only read") as reader:
        keys = reader.kv.keys()  # KVStore.keys() lists keys; it is not a dict
        return {k: reader.kv.get(k) or "" for k in keys}


def bucket_state(config: BucketConfig) -> dict[str, str]:
    """Every object in the bucket and its ETag: equal before and after means nothing was changed."""
    return {o.key: o.etag for o in iter_objects(open_object_store(config))}


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
