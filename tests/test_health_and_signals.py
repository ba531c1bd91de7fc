"""The health view for uptime monitors (in the replicator, a member, a read-only process), and the Django signals
sent by flushes."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from buckethead_django import runtime, signals
from buckethead_django.conf import get_settings
from buckethead_django.engine import BucketConfig, BucketSQLite, WriterFenced, WriterLease
from buckethead_django.engine.objectstore import open_object_store
from buckethead_django.roles import Decision, Role
from buckethead_django.testing import fresh_buckethead

from .conftest import s3_config
from .moto_server import CREDENTIALS, MotoServer, free_port
from .snapshots import KEY

HEALTH = "/buckethead/health/"
PUBLIC_FIELDS = {"status", "last_upload_age_seconds", "last_good_snapshot_age_seconds", "replica_lag_seconds"}


@pytest.fixture
def public_details(monkeypatch: pytest.MonkeyPatch) -> None:
    """Health details for anyone, as a deployment on a private network may choose (``BUCKETHEAD_HEALTH_DETAILS``)."""
    monkeypatch.setenv("BUCKETHEAD_HEALTH_DETAILS", "public")


@pytest.fixture
def fenced(moto: MotoServer, caplog: pytest.LogCaptureFixture) -> Iterator[BucketSQLite]:
    """The process's engine on a moto bucket, fenced off by another host; its errors name the bucket and endpoint."""
    with fresh_buckethead(s3_config(moto)) as engine:
        engine.kv.set("k", "mine")
        engine.force_flush()
        # fresh_buckethead() makes a host of its own: another host takes the bucket over.
        with fresh_buckethead(engine.config), runtime.use_engine(engine):
            engine.kv.set("k", "lost")
            with pytest.raises(WriterFenced):
                engine.force_flush()
            yield engine
    for saved in re.findall(r"is saved in (\S+\.db)", caplog.text):  # the fenced engine's copy, made at stop
        Path(saved).unlink(missing_ok=True)


def login(client: Client, django_user_model: type[AbstractUser], **flags: bool) -> Client:
    user = django_user_model.objects.create_user(f"user-{uuid.uuid4().hex[:8]}", password="pw", **flags)
    client.force_login(user)
    return client


def secrets_in(body: bytes, engine: BucketSQLite) -> list[str]:
    """Which of the bucket's name and its endpoint (host and port included) ``body`` gives away."""
    endpoint = engine.config.endpoint_url or ""
    where = [engine.config.bucket, endpoint, endpoint.removeprefix("http://")]
    return [s for s in where if s and s in body.decode()]


@pytest.mark.usefixtures("public_details")
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
    assert body["current_snapshot"] == engine.history.find("latest").name
    assert client.get(url)["Cache-Control"] == "no-store"


@pytest.mark.usefixtures("public_details")
def test_health_names_the_snapshot_a_read_only_process_loaded(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    keys = get_settings().signing_keys()
    config = BucketConfig.local(tmp_path / "bucket")
    with BucketSQLite(config, signing_key=keys[0], local_dir=tmp_path / "writer-host") as writer:
        writer.kv.set("k", "v")
    written = writer.final_flush
    now = time.time()  # another host holds the bucket now: this process gets a read-only copy
    lease = WriterLease("web-2:77", "web-2", 77, started_at=now - 60, renewed_at=now, expires_at=now + 300)
    open_object_store(config).put(f"{KEY}.lease", lease.to_json())
    monkeypatch.setattr(runtime, "_decision", Decision(Role.SERVER, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    bucket_settings = {
        "LOCAL_PATH": str(tmp_path / "bucket"),
        "LOCAL_DIR": str(tmp_path / "host"),
        "LEASE_WAIT": 0,
        "LEASE_CONFLICT": "read-only",
    }
    try:
        with override_settings(BUCKETHEAD=bucket_settings):
            body = Client().get(reverse("buckethead_django:health")).json()
    finally:
        runtime.stop()
    assert (body["status"], body["read_only"], body["role"], body["process"]) == ("ok", True, "read-only", "server")
    assert "held by another writer, web-2:77" in body["read_only_reason"]
    assert body["replicator"] is None, "it is no member of the writer host"
    assert body["current_snapshot"] == written.generation
    assert body["last_upload_age_seconds"] is None, "a read-only process uploads nothing"
    assert 0 <= body["last_good_snapshot_age_seconds"] < 30, "the age of the snapshot it loaded"


@pytest.mark.usefixtures("public_details")
def test_a_member_reports_the_health_the_hosts_replicator_announces(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    config = BucketConfig.local(tmp_path / "bucket")
    with BucketSQLite(config, background_flush=False, local_dir=tmp_path / "host") as replicator:
        replicator.kv.set("k", "v")
        shipped = replicator.force_flush()
        monkeypatch.setattr(runtime, "_decision", Decision(Role.SERVER, False, "test"))
        monkeypatch.setattr(runtime, "_engine", None)
        bucket_settings = {"LOCAL_PATH": str(tmp_path / "bucket"), "LOCAL_DIR": str(tmp_path / "host")}
        url = reverse("buckethead_django:health")
        try:
            with override_settings(BUCKETHEAD=bucket_settings):
                body = client.get(url).json()
                assert (body["status"], body["role"], body["read_only"]) == ("ok", "member", False)
                assert body["replicator"]["pid"] == os.getpid()  # the replicator engine runs in this test's process
                assert body["replicator"]["host"], "the replicator's host name"
                assert body["current_snapshot"] == shipped.generation, "what the replicator shipped last"
                assert 0 <= body["last_upload_age_seconds"] < 30
                assert body["pending_changes"] is False

                runtime.get_buckethead().kv.set("k", "changed by the member")
                assert client.get(url).json()["pending_changes"] is True, "the host's database has unshipped changes"

                def unreachable(*_args: object, **_kwargs: object) -> None:
                    raise OSError("bucket unreachable")

                with monkeypatch.context() as patched:
                    patched.setattr(replicator.store, "put", unreachable)
                    with pytest.raises(OSError, match="unreachable"):
                        replicator.force_flush()
                    body = client.get(url).json()
                assert (body["status"], body["role"]) == ("degraded", "member"), "the replicator's failure"
                assert "bucket unreachable" in body["last_error"]

                replicator.force_flush()
                assert client.get(url).json()["status"] == "ok"
                with BucketSQLite(config, background_flush=False, local_dir=tmp_path / "another-host"):
                    runtime.get_buckethead().kv.set("k", "stale")
                    with pytest.raises(WriterFenced):
                        replicator.force_flush()
                    response = client.get(url)
                assert response.status_code == 503, "every process of a fenced host says so"
                body = response.json()
                assert (body["status"], body["role"]) == ("failing", "member")
                assert "has taken over" in body["fenced"]
                assert body["error"] == body["fenced"]
        finally:
            runtime.stop()
    for saved in re.findall(r"is saved in (\S+\.db)", caplog.text):  # the fenced replicator's copy, made at stop
        Path(saved).unlink(missing_ok=True)


@pytest.mark.usefixtures("public_details")
def test_copies_set_aside_at_the_hosts_start_make_health_degraded(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    config = BucketConfig.local(tmp_path / "bucket")
    keys = get_settings().signing_keys()
    with BucketSQLite(config, signing_key=keys[0], local_dir=tmp_path / "first-host") as first:
        first.kv.set("k", "in the bucket")
    host = tmp_path / "host"  # a database no replicator recorded, brought along to a bucket that holds data
    host.mkdir()
    with contextlib.closing(sqlite3.connect(host / "buckethead.sqlite3")) as brought:
        brought.execute("CREATE TABLE notes (body TEXT)")
        brought.execute("INSERT INTO notes VALUES ('brought along')")
        brought.commit()
    monkeypatch.setattr(runtime, "_decision", Decision(Role.SERVER, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    bucket_settings = {"LOCAL_PATH": str(tmp_path / "bucket"), "LOCAL_DIR": str(host)}
    try:
        with override_settings(BUCKETHEAD=bucket_settings):
            engine = runtime.get_buckethead()
            assert engine.kv.get("k") == "in the bucket", "the bucket's generation was restored in its place"
            response = client.get(reverse("buckethead_django:health"))
            with override_settings(BUCKETHEAD={**bucket_settings, "HEALTH_DETAILS": "never"}):
                anonymous = client.get(reverse("buckethead_django:health"))
    finally:
        runtime.stop()
    assert response.status_code == 200, "the site works: it serves the bucket's data"
    body = response.json()
    assert (body["status"], body["role"], body["last_error"], body["fenced"]) == ("degraded", "replicator", None, None)
    (copy,) = body["set_aside"]
    assert "no replicator of this bucket recorded what it holds" in copy["reason"]
    assert Path(copy["path"]).parent == host / "set-aside"
    with contextlib.closing(sqlite3.connect(copy["path"])) as kept:
        assert kept.execute("SELECT body FROM notes").fetchall() == [("brought along",)]
    assert anonymous.json()["status"] == "degraded", "anyone sees that something needs looking at"
    assert set(anonymous.json()) == PUBLIC_FIELDS, "but only staff see the paths"


@pytest.mark.usefixtures("public_details")
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


@pytest.mark.usefixtures("public_details")
def test_health_is_failing_once_another_writer_has_fenced_this_one_off(client: Client, fenced: BucketSQLite) -> None:
    response = client.get(HEALTH)
    assert response.status_code == 503, "this process's changes can no longer reach the bucket"
    body = response.json()
    assert body["status"] == "failing"
    assert "has taken over" in body["fenced"]
    assert "stopped shipping" in body["fenced"]
    assert body["error"] == body["fenced"] == body["last_error"]
    assert body["current_snapshot"] == fenced.last_upload.generation, "the last generation this process committed"
    assert body["pending_changes"] is True
    assert response["Cache-Control"] == "no-store"


@pytest.mark.usefixtures("public_details")
def test_health_is_failing_when_there_is_no_engine(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_decision", Decision(Role.PROCESS, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    with override_settings(BUCKETHEAD={"BACKEND": "s3"}):  # no bucket: the engine cannot start
        assert get_settings().errors
        response = client.get(reverse("buckethead_django:health"))
    assert response.status_code == 503
    assert response.json()["status"] == "failing"
    assert "BUCKET" in response.json()["error"]
    assert response["Cache-Control"] == "no-store"


# -- who sees what: the status for anyone, the details for staff ------------------------------------------------


def test_anonymous_visitors_see_the_status_but_not_which_bucket_failed(client: Client, fenced: BucketSQLite) -> None:
    response = client.get(HEALTH)
    assert response.status_code == 503, "an uptime monitor still sees that this process is failing"
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["status"] == "failing"
    assert 0 <= body["last_upload_age_seconds"] < 30
    assert secrets_in(response.content, fenced) == []
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_staff_users_see_the_details_and_other_users_do_not(
    client: Client, django_user_model: type[AbstractUser], fenced: BucketSQLite
) -> None:
    customer = login(Client(), django_user_model)
    body = customer.get(HEALTH).json()
    assert set(body) == PUBLIC_FIELDS, "a logged-in user who is not staff sees what anyone does"
    staff = login(client, django_user_model, is_staff=True)
    response = staff.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert fenced.config.bucket in body["fenced"], "staff see which bucket was taken over, and by whom"
    assert body["error"] == body["fenced"] == body["last_error"]
    assert (body["role"], body["process"], body["read_only"], body["pending_changes"]) == (
        "replicator",
        "test",
        False,
        True,
    )
    assert body["replicator"]["pid"] == os.getpid()
    assert body["current_snapshot"] == fenced.last_upload.generation
    inactive = login(Client(), django_user_model, is_staff=True, is_active=False)
    assert set(inactive.get(HEALTH).json()) == PUBLIC_FIELDS, "a deactivated staff account sees no details"


@pytest.mark.parametrize(
    ("bucket_settings", "environ", "anyone_sees_details"),
    [
        ({"HEALTH_DETAILS": "public"}, {}, True),
        ({"HEALTH_DETAILS": True}, {}, True),
        ({}, {"BUCKETHEAD_HEALTH_DETAILS": "true"}, True),
        ({}, {"BUCKETHEAD_HEALTH_DETAILS": "Public"}, True),
        ({"HEALTH_DETAILS": "staff"}, {}, False),
        ({}, {"BUCKETHEAD_HEALTH_DETAILS": ""}, False),
    ],
)
def test_health_details_can_be_made_public(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    fenced: BucketSQLite,
    bucket_settings: dict[str, Any],
    environ: dict[str, str],
    anyone_sees_details: bool,
) -> None:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with override_settings(BUCKETHEAD=bucket_settings):
        response = client.get(HEALTH)
    assert response.status_code == 503
    if anyone_sees_details:
        assert fenced.config.bucket in response.json()["fenced"]
    else:
        assert set(response.json()) == PUBLIC_FIELDS
        assert secrets_in(response.content, fenced) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bucket_settings", "environ"),
    [({"HEALTH_DETAILS": "never"}, {}), ({"HEALTH_DETAILS": False}, {}), ({}, {"BUCKETHEAD_HEALTH_DETAILS": "off"})],
)
def test_health_details_can_be_hidden_from_staff_too(
    client: Client,
    django_user_model: type[AbstractUser],
    monkeypatch: pytest.MonkeyPatch,
    fenced: BucketSQLite,
    bucket_settings: dict[str, Any],
    environ: dict[str, str],
) -> None:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    staff = login(client, django_user_model, is_staff=True, is_superuser=True)
    with override_settings(BUCKETHEAD=bucket_settings):
        response = staff.get(HEALTH)
    assert response.status_code == 503
    assert set(response.json()) == PUBLIC_FIELDS
    assert secrets_in(response.content, fenced) == []


@pytest.mark.django_db
def test_health_answers_when_the_users_session_cannot_be_read(client: Client) -> None:
    """Whether the user is staff is read from the session: a failing session database must not fail the check."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE django_session")  # rolled back with the test's transaction
    client.cookies["sessionid"] = "s" * 32
    response = client.get(HEALTH)
    assert response.status_code == 200
    assert set(response.json()) == PUBLIC_FIELDS
    assert response.json()["status"] == "ok"


def test_an_engine_that_cannot_start_is_failing_without_saying_where_to_anyone(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setattr(runtime, "_decision", Decision(Role.PROCESS, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    endpoint = f"http://127.0.0.1:{free_port()}"
    unreachable = {
        "BACKEND": "s3",
        "BUCKET": "private-media-bucket",
        "ENDPOINT_URL": endpoint,
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "MAX_ATTEMPTS": 1,
        "CONNECT_TIMEOUT": 1,
        "STARTUP_TIMEOUT": 0,
        "LOCAL_DIR": str(tmp_path / "host"),
    }
    with override_settings(BUCKETHEAD=unreachable):
        anonymous = client.get(HEALTH)
    with override_settings(BUCKETHEAD={**unreachable, "HEALTH_DETAILS": "public"}):
        detailed = client.get(HEALTH)
    assert anonymous.status_code == detailed.status_code == 503
    assert anonymous.json() == {
        "status": "failing",
        "last_upload_age_seconds": None,
        "last_good_snapshot_age_seconds": None,
        "replica_lag_seconds": None,
    }
    assert "private-media-bucket" not in anonymous.content.decode()
    assert endpoint.removeprefix("http://") not in anonymous.content.decode()
    assert "private-media-bucket" in detailed.json()["error"], "where details are allowed, they say what failed"


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
