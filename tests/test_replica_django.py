"""A read replica through Django: the ORM, the cache, storage URLs, health, metrics, the admin and ``status``.

A writer engine flushes to a local-directory bucket; the process's engine is
a replica of it (`fresh_buckethead(config, replica=True)`), whose follower the
tests drive by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from buckethead_django import runtime
from buckethead_django.cache import BucketHeadCache
from buckethead_django.engine import BucketConfig, BucketSQLite, ReadOnlyError
from buckethead_django.metrics import read_host
from buckethead_django.storage import BucketHeadStorage
from buckethead_django.testing import fresh_buckethead

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def config(tmp_path: Path) -> BucketConfig:
    return BucketConfig.local(tmp_path / "bucket")


@pytest.fixture
def writer(config: BucketConfig, tmp_path: Path) -> Iterator[BucketSQLite]:
    engine = runtime.throwaway_engine(config, local_dir=tmp_path / "writer-host")
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def replica(config: BucketConfig, writer: BucketSQLite) -> Iterator[BucketSQLite]:
    writer.kv.set("greeting", "hello")
    writer.force_flush()
    with fresh_buckethead(config, replica=True, poll_seconds=0.5, max_lag=30) as engine:
        yield engine


def poll(replica: BucketSQLite) -> None:
    assert replica.follower is not None
    replica.follower.poll()


def test_the_kv_store_and_cache_read_what_the_writer_flushed_and_refuse_writes(
    writer: BucketSQLite, replica: BucketSQLite
) -> None:
    assert replica.kv.get("greeting") == "hello"
    writer.kv.set("greeting", "hello again")
    writer.force_flush()
    poll(replica)
    assert replica.kv.get("greeting") == "hello again"
    cache = BucketHeadCache("default", {})
    with runtime.use_engine(writer):
        cache.set("page", "rendered")
    writer.force_flush()
    poll(replica)
    assert cache.get("page") == "rendered"
    with pytest.raises(ReadOnlyError, match="read replica"):
        cache.set("k", "v")
    assert cache.get("k") is None


def test_storage_serves_the_writers_files_and_refuses_saves(
    writer: BucketSQLite, replica: BucketSQLite, client: Client
) -> None:
    default_storage = BucketHeadStorage()
    with runtime.use_engine(writer):
        name = default_storage.save("reports/q1.txt", ContentFile(b"quarterly"))
    writer.force_flush()
    poll(replica)
    assert default_storage.exists(name)
    with default_storage.open(name) as f:
        assert f.read() == b"quarterly"
    response = client.get(default_storage.url(name))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"quarterly"
    with pytest.raises(ReadOnlyError, match="read replica"):
        default_storage.save("new.txt", ContentFile(b"x"))


def test_health_reports_the_lag_and_says_lagging_when_the_follower_stops_looking(
    client: Client, replica: BucketSQLite, monkeypatch: pytest.MonkeyPatch
) -> None:
    poll(replica)
    body = client.get(reverse("buckethead_django:health")).json()
    assert body["status"] == "ok"
    assert 0 <= body["replica_lag_seconds"] < 30
    info = replica.host.replicator()
    assert info is not None
    replica.host.announce(ready=True, current_snapshot=info.current_snapshot, checked_at=time.time() - 31)
    response = client.get(reverse("buckethead_django:health"))
    assert response.status_code == 503, "a load balancer takes a lagging replica out of rotation"
    assert response.json()["status"] == "lagging"
    status, values = read_host(replica)
    assert status == "lagging"
    assert values["buckethead_replica_lag_seconds"] is not None
    assert values["buckethead_replica_lag_seconds"] > 30


def test_the_admin_dashboard_shows_the_replica_and_offers_no_flush(replica: BucketSQLite) -> None:
    user = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    page = client.get("/admin/buckethead_django/dashboard/").content.decode()
    assert 'id="buckethead-replica"' in page
    assert "Read replica" in page
    assert 'id="flush-now"' not in page


def test_status_says_what_the_replica_holds_and_its_lag(replica: BucketSQLite, capsys) -> None:
    poll(replica)
    call_command("buckethead", "status", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["process"]["role"] == "replica"
    assert data["health"]["replica"]["point"] == replica.replicator_info().current_snapshot  # type: ignore[union-attr]
    call_command("buckethead", "status")
    text = capsys.readouterr().out
    assert "Read replica" in text
    assert "lag" in text
    assert "the replica's copy, which follows the bucket" in text
