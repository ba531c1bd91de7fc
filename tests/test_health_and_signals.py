"""The health view for uptime monitors, and the Django signals sent by flushes."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from buckethead_django import runtime, signals
from buckethead_django.conf import get_settings
from buckethead_django.engine import BucketConfig, BucketSQLite, WriterFenced
from buckethead_django.engine.generations import find_snapshot
from buckethead_django.roles import Decision, Role
from buckethead_django.testing import fresh_buckethead


@fresh_buckethead()
def test_health_is_ok_and_says_how_old_the_bucket_copy_is(client: Client) -> None:
    url = reverse("buckethead_django:health")
    body = client.get(url).json()
    assert body["status"] == "ok"
    assert body["last_upload_age_seconds"] is None, "nothing uploaded yet"
    assert (body["current_snapshot"], body["fenced"], body["last_error"]) == (None, None, None)
    engine = runtime.get_buckethead()
    engine.kv.set("k", "v")
    assert client.get(url).json()["pending_changes"] is True
    engine.force_flush()
    body = client.get(url).json()
    assert 0 <= body["last_upload_age_seconds"] < 5
    assert body["last_good_snapshot_age_seconds"] == pytest.approx(body["last_upload_age_seconds"], abs=1)
    assert body["pending_changes"] is False
    assert body["current_snapshot"] == find_snapshot(engine.store, engine.config.key, "latest").name
    assert client.get(url)["Cache-Control"] == "no-store"


def test_health_names_the_snapshot_a_reader_loaded(client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    keys = get_settings().signing_keys()
    with BucketSQLite(BucketConfig.local(tmp_path / "bucket"), signing_key=keys[0]) as writer:
        writer.kv.set("k", "v")
    written = writer.last_upload
    monkeypatch.setattr(runtime, "_decision", Decision(Role.READER, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    try:
        with override_settings(BUCKETHEAD={"LOCAL_PATH": str(tmp_path / "bucket")}):
            body = Client().get(reverse("buckethead_django:health")).json()
    finally:
        runtime.stop()
    assert (body["status"], body["read_only"]) == ("ok", True)
    assert body["current_snapshot"] == written.generation
    assert body["last_upload_age_seconds"] is None, "a reader uploads nothing"
    assert 0 <= body["last_good_snapshot_age_seconds"] < 30, "the age of the snapshot it loaded"


@fresh_buckethead()
def test_health_is_degraded_while_flushes_fail(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = runtime.get_buckethead()
    engine.kv.set("k", "v")

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise OSError("bucket unreachable")

    monkeypatch.setattr(engine.store, "put", unreachable)
    with pytest.raises(OSError, match="unreachable"):
        engine.force_flush()
    response = client.get(reverse("buckethead_django:health"))
    assert response.status_code == 200, "the site still works from memory"
    body = response.json()
    assert body["status"] == "degraded"
    assert "bucket unreachable" in body["last_error"]
    assert body["fenced"] is None
    assert body["pending_changes"] is True
    monkeypatch.undo()
    engine.force_flush()
    assert client.get(reverse("buckethead_django:health")).json()["status"] == "ok"


@fresh_buckethead()
def test_health_is_failing_once_another_writer_has_fenced_this_one_off(client: Client) -> None:
    engine = runtime.get_buckethead()
    engine.kv.set("k", "mine")
    engine.force_flush()
    flushed = engine.last_upload
    with fresh_buckethead(engine.config), runtime.use_engine(engine):  # another writer takes the bucket over
        engine.kv.set("k", "lost")
        with pytest.raises(WriterFenced):
            engine.force_flush()
        response = client.get(reverse("buckethead_django:health"))
    assert response.status_code == 503, "this process's changes can no longer reach the bucket"
    body = response.json()
    assert body["status"] == "failing"
    assert "has taken over" in body["fenced"]
    assert "stopped flushing" in body["fenced"]
    assert body["error"] == body["fenced"] == body["last_error"]
    assert body["current_snapshot"] == flushed.generation, "the last generation this process committed"
    assert body["pending_changes"] is True
    assert response["Cache-Control"] == "no-store"


def test_health_is_failing_when_there_is_no_engine(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_decision", Decision(Role.READER, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    with override_settings(BUCKETHEAD={"BACKEND": "s3"}):  # no bucket: the engine cannot start
        assert get_settings().errors
        response = client.get(reverse("buckethead_django:health"))
    assert response.status_code == 503
    assert response.json()["status"] == "failing"
    assert "BUCKET" in response.json()["error"]
    assert response["Cache-Control"] == "no-store"


def test_flushes_send_signals(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[str, dict]] = []

    def receiver(name: str):
        def handler(sender: object, **kwargs: object) -> None:
            received.append((name, kwargs))

        return handler

    handlers = {name: receiver(name) for name in ("written", "skipped", "failed")}
    signals.snapshot_written.connect(handlers["written"])
    signals.snapshot_skipped.connect(handlers["skipped"])
    signals.snapshot_failed.connect(handlers["failed"])
    try:
        with fresh_buckethead(BucketConfig.local(tmp_path / "b"), **signals.engine_callbacks()) as engine:
            engine.kv.set("k", "v")
            engine.force_flush()
            engine.force_flush()

            def down(*_args: object, **_kwargs: object) -> None:
                raise OSError("down")

            monkeypatch.setattr(engine.store, "put", down)
            engine.kv.set("k", "v2")
            with pytest.raises(OSError, match="down"):
                engine.force_flush()
            monkeypatch.undo()
    finally:
        for name, handler in handlers.items():
            getattr(signals, f"snapshot_{name}").disconnect(handler)
    names = [name for name, _ in received]
    assert names[:3] == ["written", "skipped", "failed"]
    assert received[0][1]["bytes"] > 0
    assert received[1][1]["reason"] == "unchanged"
    assert str(received[2][1]["error"]) == "down"
