"""Shared fixtures: a moto S3 server over real HTTP, and stores/engines on it and on a local directory."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from buckethead_django.engine import BucketConfig, BucketHeadError, BucketSQLite, SnapshotConfig
from buckethead_django.engine.database import SHM_ROOT
from buckethead_django.engine.host import Host
from buckethead_django.engine.objectstore import ObjectStore, open_object_store

from .moto_server import CREDENTIALS, MotoServer, free_port
from .recording_store import RecordingStore
from .servers import kill_leftover_servers

FIXTURE_BUCKET = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "buckethead-0.4.1"


@pytest.fixture(scope="session", autouse=True)
def _forget_host_databases_of_the_run() -> Iterator[None]:
    """Remove the host databases that engines started without a ``local_dir`` left in /dev/shm during the run.

    Only those no process is attached to any more: another worker of the run may still be using its own.
    """
    before = set(SHM_ROOT.glob("buckethead-*"))
    yield
    for leftover in set(SHM_ROOT.glob("buckethead-*")) - before:
        host = Host(leftover)
        if host.claim_alone():
            host.leave()
            shutil.rmtree(leftover, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    yield
    kill_leftover_servers()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


def s3_config(moto: MotoServer, **kwargs: Any) -> BucketConfig:
    """A BucketConfig for a new, empty bucket on the moto server."""
    name = f"bh-test-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(name)
    return BucketConfig(
        bucket=name,
        endpoint_url=moto.endpoint_url,
        region="us-east-1",
        access_key_id=CREDENTIALS["aws_access_key_id"],
        secret_access_key=CREDENTIALS["aws_secret_access_key"],
        **kwargs,
    )


def unreachable_config(bucket: str) -> BucketConfig:
    """A BucketConfig for an S3 endpoint where nothing listens: every request fails at once."""
    return BucketConfig(
        bucket=bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key_id="x",
        secret_access_key="y",
        max_attempts=1,
        connect_timeout=1,
    )


@pytest.fixture(params=["local", "s3"])
def bucket_config(request: pytest.FixtureRequest, tmp_path: Path) -> BucketConfig:
    """A fresh, empty bucket: a local directory, or a bucket on the moto server."""
    if request.param == "local":
        return BucketConfig.local(tmp_path / "bucket")
    return s3_config(request.getfixturevalue("moto"))


@pytest.fixture
def store(bucket_config: BucketConfig) -> ObjectStore:
    return open_object_store(bucket_config)


EngineFactory = Callable[..., BucketSQLite]


@pytest.fixture
def make_engine(bucket_config: BucketConfig, tmp_path: Path) -> Iterator[EngineFactory]:
    """Build engines on the test's bucket; whatever is still running is stopped afterwards.

    Each engine is on a host of its own (its own ``local_dir``) unless the
    test passes one: a second engine restores from the bucket, as a
    process on a new host would.
    """
    engines: list[BucketSQLite] = []

    def factory(
        config: BucketConfig | None = None,
        snapshot: SnapshotConfig | None = None,
        **kwargs: Any,
    ) -> BucketSQLite:
        kwargs.setdefault("background_flush", False)
        kwargs.setdefault("local_dir", tmp_path / f"host-{len(engines)}")
        engine = BucketSQLite(config or bucket_config, snapshot or SnapshotConfig(min_interval_seconds=0), **kwargs)
        engines.append(engine)
        return engine

    yield factory
    # The newest first: a host's first engine is its replicator, which would otherwise wait for the others to leave.
    for engine in reversed(engines):
        with contextlib.suppress(BucketHeadError, OSError):  # OSError: a test that filled its disk on purpose
            engine.stop()


@pytest.fixture
def engine(make_engine: EngineFactory) -> BucketSQLite:
    """A started engine on an empty bucket."""
    return make_engine().start()


@pytest.fixture
def recording(bucket_config: BucketConfig) -> RecordingStore:
    """The test's bucket, through a store that records every request."""
    return RecordingStore(open_object_store(bucket_config))
