"""Shared fixtures: a moto S3 server over real HTTP, and stores/engines on it and on a local directory."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from buckethead_django.engine import BucketConfig, BucketHeadError, BucketSQLite, SnapshotConfig
from buckethead_django.engine.objectstore import ObjectStore, open_object_store

from .moto_server import CREDENTIALS, MotoServer, free_port

FIXTURE_BUCKET = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "buckethead-0.4.1"


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
def make_engine(bucket_config: BucketConfig) -> Iterator[EngineFactory]:
    """Build engines on the test's bucket; whatever is still running is stopped afterwards."""
    engines: list[BucketSQLite] = []

    def factory(
        config: BucketConfig | None = None,
        snapshot: SnapshotConfig | None = None,
        **kwargs: Any,
    ) -> BucketSQLite:
        kwargs.setdefault("background_flush", False)
        engine = BucketSQLite(config or bucket_config, snapshot or SnapshotConfig(min_interval_seconds=0), **kwargs)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        with contextlib.suppress(BucketHeadError):
            engine.stop()


@pytest.fixture
def engine(make_engine: EngineFactory) -> BucketSQLite:
    """A started engine on an empty bucket."""
    return make_engine().start()
