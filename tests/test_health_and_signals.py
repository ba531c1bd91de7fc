"""The health view for uptime monitors, and the Django signals sent by flushes."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from buckethead_django import runtime, signals
from buckethead_django.conf import get_settings
from buckethead_django.engine import BucketConfig
from buckethead_django.roles import Decision, Role
from buckethead_django.testing import fresh_buckethead


@fresh_buckethead()
def test_health_is_ok_and_says_how_old_the_bucket_copy_is(client: Client) -> None:
    url = reverse("buckethead_django:health")
    body = client.get(url).json()
    assert body["status"] == "ok"
    assert body["last_upload_age_seconds"] is None, "nothing uploaded yet"
    engine = runtime.get_buckethead()
    engine.kv.set("k", "v")
    assert client.get(url).json()["pending_changes"] is True
    engine.force_flush()
    body = client.get(url).json()
    assert 0 <= body["last_upload_age_seconds"] < 5
    assert body["pending_changes"] is False
    assert client.get(url)["Cache-Control"] == "no-store"


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
    assert body["pending_changes"] is True
    monkeypatch.undo()
    engine.force_flush()
    assert client.get(reverse("buckethead_django:health")).json()["status"] == "ok"


def test_health_is_failing_when_there_is_no_engine(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_decision", Decision(Role.READER, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    with override_settings(BUCKETHEAD={"BACKEND": "s3"}):  # no bucket: the engine cannot start
        assert get_settings().errors
        response = client.get(reverse("buckethead_django:health"))
    assert response.status_code == 503
    assert response.json()["status"] == "failing"
    assert "BUCKET" in response.json()["error"]


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
