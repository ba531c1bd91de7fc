"""The Prometheus metrics view: what it reports of the host, whichever of the host's processes answers, and to whom."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import AbstractUser
from django.test import Client, override_settings
from django.urls import reverse
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from buckethead_django import runtime
from buckethead_django.engine import BucketConfig, BucketSQLite, WriterFenced
from buckethead_django.metrics import COUNTERS, GAUGES, render_metrics
from buckethead_django.roles import Decision, Role
from buckethead_django.testing import fresh_buckethead

from .conftest import EngineFactory

METRICS = "/buckethead/metrics/"
PUBLIC = {
    "buckethead_status",
    "buckethead_last_upload_timestamp_seconds",
    "buckethead_last_upload_age_seconds",
    "buckethead_last_good_snapshot_timestamp_seconds",
    "buckethead_last_good_snapshot_age_seconds",
    "buckethead_replica_lag_seconds",
    "buckethead_metrics_details",
}
#: What every process of a host must report alike (the ages and the lag are read at slightly different instants).
HOST_WIDE = [
    "buckethead_status{status=ok}",
    "buckethead_last_upload_timestamp_seconds",
    "buckethead_pending_changes",
    "buckethead_fenced",
    "buckethead_read_only",
    "buckethead_lease_held",
    "buckethead_replicator_running",
    "buckethead_replicator_start_time_seconds",
    "buckethead_database_bytes",
    "buckethead_kv_entries",
    "buckethead_stored_files",
]


@pytest.fixture
def public_details(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every metric for anyone, as a deployment scraped on a private network chooses (``HEALTH_DETAILS``)."""
    monkeypatch.setenv("BUCKETHEAD_HEALTH_DETAILS", "public")


def parse(text: str, *, openmetrics: bool = False) -> dict[str, float]:
    """The samples of an exposition, as ``name`` or ``name{label=value}``; a family without a sample is absent."""
    families = openmetrics_families(text) if openmetrics else text_string_to_metric_families(text)
    samples = {}
    for family in families:
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def scrape(client: Client) -> dict[str, float]:
    response = client.get(METRICS)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def families(client: Client) -> set[str]:
    """The metric families a scrape describes, with or without a sample."""
    return {family.name for family in text_string_to_metric_families(client.get(METRICS).content.decode())}


def metrics_of(engine: BucketSQLite) -> dict[str, float]:
    return parse(render_metrics(engine)[0].decode())


@pytest.mark.usefixtures("public_details")
@fresh_buckethead()
def test_a_flush_makes_the_last_upload_recent_and_clears_the_lag(client: Client) -> None:
    assert reverse("buckethead_django:metrics") == METRICS
    engine = runtime.get_buckethead()
    before = scrape(client)
    assert before["buckethead_status{status=ok}"] == 1
    assert before["buckethead_status{status=failing}"] == 0
    assert "buckethead_last_upload_age_seconds" not in before, "nothing uploaded yet: no value, rather than a fake 0"
    assert before["buckethead_lease_held"] == 1, "the host's replicator holds the bucket's lease"
    assert before["buckethead_pending_changes"] == 0
    assert before["buckethead_replication_lag_seconds"] == 0

    engine.kv.set("k", "v")
    time.sleep(0.05)
    pending = scrape(client)
    assert pending["buckethead_pending_changes"] == 1
    assert pending["buckethead_replication_lag_seconds"] >= 0.05, "the bucket's copy is behind since the change"

    engine.force_flush()
    after = scrape(client)
    assert after["buckethead_flushes_total"] == pending["buckethead_flushes_total"] + 1, "counted once per upload"
    assert after["buckethead_uploaded_bytes_total"] > pending["buckethead_uploaded_bytes_total"]
    assert after["buckethead_flush_failures_total"] == 0
    assert 0 < after["buckethead_lease_expires_in_seconds"] <= engine.lease_seconds
    assert 0 <= after["buckethead_last_upload_age_seconds"] < 5
    assert after["buckethead_last_upload_timestamp_seconds"] == pytest.approx(engine.last_upload.at)
    assert after["buckethead_last_good_snapshot_age_seconds"] < 5
    assert (after["buckethead_pending_changes"], after["buckethead_replication_lag_seconds"]) == (0, 0)
    assert (after["buckethead_lease_held"], after["buckethead_replicator_running"]) == (1, 1)
    assert (after["buckethead_fenced"], after["buckethead_read_only"], after["buckethead_last_flush_failed"]) == (
        0,
        0,
        0,
    )
    assert after["buckethead_kv_entries"] == 1
    assert after["buckethead_database_bytes"] > 0
    assert after["buckethead_metrics_details"] == 1
    described = {"buckethead_status", "buckethead_metrics_details"} | {g.name for g in GAUGES}
    assert families(client) == described | {c.name for c in COUNTERS}


def test_every_process_of_the_host_reports_the_same(make_engine: EngineFactory, tmp_path: Path) -> None:
    """A scrape reaches one worker at random: a member answers for the host as its replicator does."""
    replicator = make_engine(local_dir=tmp_path / "host").start()
    member = make_engine(local_dir=tmp_path / "host").start()
    assert (replicator.role, member.role) == ("replicator", "member")
    member.kv.set("k", "written by a member")
    member.files.put(b"hello")
    time.sleep(0.05)
    by_replicator, by_member = metrics_of(replicator), metrics_of(member)
    assert by_member["buckethead_pending_changes"] == by_replicator["buckethead_pending_changes"] == 1
    assert by_member["buckethead_replication_lag_seconds"] >= 0.05
    assert by_member["buckethead_replication_lag_seconds"] == pytest.approx(
        by_replicator["buckethead_replication_lag_seconds"], abs=1
    )

    replicator.force_flush()
    by_replicator, by_member = metrics_of(replicator), metrics_of(member)
    assert {name: by_member.get(name) for name in HOST_WIDE} == {name: by_replicator.get(name) for name in HOST_WIDE}
    assert by_member["buckethead_last_upload_timestamp_seconds"] == pytest.approx(replicator.last_upload.at)
    assert by_member["buckethead_last_upload_age_seconds"] < 5
    assert (by_member["buckethead_lease_held"], by_member["buckethead_pending_changes"]) == (1, 0)
    assert (by_member["buckethead_kv_entries"], by_member["buckethead_stored_files"]) == (1, 1)


def test_failing_flushes_show_as_a_growing_lag(make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine().start()
    engine.kv.set("k", "v")
    engine.force_flush()
    engine.kv.set("k", "w")

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise OSError("bucket unreachable")

    monkeypatch.setattr(engine.store, "put", unreachable)
    with pytest.raises(OSError, match="unreachable"):
        engine.force_flush()
    first = metrics_of(engine)
    time.sleep(0.1)
    second = metrics_of(engine)
    assert (second["buckethead_status{status=degraded}"], second["buckethead_last_flush_failed"]) == (1, 1)
    assert second["buckethead_pending_changes"] == 1
    assert second["buckethead_replication_lag_seconds"] >= first["buckethead_replication_lag_seconds"] + 0.1
    assert second["buckethead_lease_held"] == 1, "a failing upload does not lose the lease"
    assert second["buckethead_flush_failures_total"] == 1
    monkeypatch.undo()
    engine.force_flush()
    recovered = metrics_of(engine)
    assert (recovered["buckethead_last_flush_failed"], recovered["buckethead_replication_lag_seconds"]) == (0, 0)
    assert (recovered["buckethead_flushes_total"], recovered["buckethead_flush_failures_total"]) == (2, 1)


@pytest.mark.usefixtures("public_details")
def test_a_fenced_host_reports_it(client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = BucketConfig.local(tmp_path / "bucket")
    with fresh_buckethead(config) as engine:
        engine.kv.set("k", "mine")
        engine.force_flush()
        # fresh_buckethead() makes a host of its own: another host takes the bucket over.
        with fresh_buckethead(config), runtime.use_engine(engine):
            engine.kv.set("k", "lost")
            with pytest.raises(WriterFenced):
                engine.force_flush()
            samples = scrape(client)
    for saved in re.findall(r"is saved in (\S+\.db)", caplog.text):  # the fenced engine's copy, made at stop
        Path(saved).unlink(missing_ok=True)
    assert samples["buckethead_status{status=failing}"] == 1
    assert (samples["buckethead_fenced"], samples["buckethead_lease_held"]) == (1, 0)
    assert samples["buckethead_last_flush_failed"] == 1
    assert samples["buckethead_pending_changes"] == 1, "what changed here will never reach the bucket"
    assert samples["buckethead_replication_lag_seconds"] > 0


def test_a_read_only_host_reports_it(make_engine: EngineFactory) -> None:
    with make_engine() as writer:
        writer.kv.set("k", "v")
    reader = make_engine(read_only_reason="maintenance").start()
    samples = metrics_of(reader)
    assert (samples["buckethead_read_only"], samples["buckethead_lease_held"]) == (1, 0)
    assert (samples["buckethead_pending_changes"], samples["buckethead_replication_lag_seconds"]) == (0, 0)
    assert samples["buckethead_replicator_running"] == 0, "it is no member of the writer host"
    assert samples["buckethead_kv_entries"] == 1, "the copy it serves"
    assert samples["buckethead_status{status=ok}"] == 1


@pytest.mark.usefixtures("public_details")
def test_without_an_engine_the_scrape_still_answers_failing(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_decision", Decision(Role.PROCESS, False, "test"))
    monkeypatch.setattr(runtime, "_engine", None)
    with override_settings(BUCKETHEAD={"BACKEND": "s3"}):  # no bucket: the engine cannot start
        samples = scrape(client)
    assert samples["buckethead_status{status=failing}"] == 1, "a 200 with the status: Prometheus keeps the series"
    assert "buckethead_lease_held" not in samples, "nothing else is known"


@fresh_buckethead()
def test_prometheus_may_ask_for_openmetrics(client: Client) -> None:
    response = client.get(METRICS, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().endswith("# EOF\n")
    assert parse(response.content.decode(), openmetrics=True)["buckethead_status{status=ok}"] == 1


# -- who sees what: the health view's rule --------------------------------------------------------------------------


@pytest.mark.django_db
@fresh_buckethead()
def test_anyone_gets_the_public_metrics_and_staff_all_of_them(
    client: Client, django_user_model: type[AbstractUser]
) -> None:
    assert families(client) == PUBLIC, "by default (HEALTH_DETAILS 'staff') anyone sees what the health view shows"
    assert scrape(client)["buckethead_metrics_details"] == 0, "and the scrape says it got only those"
    staff = django_user_model.objects.create_user(f"staff-{uuid.uuid4().hex[:8]}", password="pw", is_staff=True)
    client.force_login(staff)
    assert families(client) > PUBLIC
    assert scrape(client)["buckethead_metrics_details"] == 1
    with override_settings(BUCKETHEAD={"HEALTH_DETAILS": "never"}):
        assert families(client) == PUBLIC


# -- without the optional extra ---------------------------------------------------------------------------------------

WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed: importing it raises ImportError
import django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()  # the test client's host name
response = Client().get("/buckethead/metrics/")
print(response.status_code)
print(response.content.decode())
"""


def test_without_prometheus_client_the_view_says_what_to_install() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROMETHEUS],
        check=False,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\n", 1)
    assert status == "501", "not a 500, and no ImportError at startup"
    assert "pip install 'buckethead-django[metrics]'" in message
