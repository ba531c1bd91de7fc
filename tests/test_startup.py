"""Startup rules with real processes: each process attaches to its host's database; one is its replicator."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path

import pytest

from buckethead_django.engine import BucketConfig, BucketSQLite

from .conftest import s3_config
from .moto_server import MotoServer
from .servers import LEFT_LINE, STARTED_LINE, STOPPED_LINE, Server, example_env, manage, s3_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

VISITS = re.compile(r'<strong id="visits">(\d+)</strong>')
G = "from buckethead_django import get_buckethead as g; "


def visit(server: Server) -> int:
    """One visit to the example's index page: the cached counter it shows, incremented by this visit."""
    match = VISITS.search(server.get("/"))
    assert match, server.log()
    return int(match.group(1))


def in_the_bucket(state: Path) -> BucketSQLite:
    """A read-only view of what the bucket of ``state`` holds, as a new host would restore it."""
    return BucketSQLite(BucketConfig.local(state / "bucket"), read_only_reason="checking the bucket")


def test_runserver_with_the_autoreloader_attaches_only_in_its_serving_child(tmp_path: Path) -> None:
    with Server("runserver", tmp_path) as server:
        parent = server.proc.pid
    log = server.log()
    assert len(server.started()) == 1, log
    ((role, child),) = server.started()
    assert role == "replicator", log
    assert child != parent, "the autoreloader's parent never attaches to the database"


@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c-to-the-group", "sigint-to-the-parent"])
def test_runserver_autoreloader_child_flushes_on_interrupt(tmp_path: Path, to_group: bool) -> None:
    with Server("runserver", tmp_path) as server:
        code = server.stop(signal.SIGINT, group=to_group)
    replicators = server.started_pids("replicator")
    assert len(replicators) == 1, server.log()
    assert server.stopped_pids() == replicators, "the serving child made its final flush before the parent exited"
    assert code != -signal.SIGKILL


def test_runserver_noreload_is_the_replicator_itself(tmp_path: Path) -> None:
    with Server("runserver", tmp_path, "--noreload") as server:
        pid = server.proc.pid
        server.stop(signal.SIGINT)
    assert server.started() == [("replicator", pid)], server.log()
    assert server.stopped_pids() == [pid], "Ctrl-C makes the final flush"


def test_runserver_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    with Server("runserver", tmp_path, "--noreload") as server:
        code = server.stop(signal.SIGTERM)
    assert server.stopped_pids() == [server.proc.pid], server.log()
    assert code != -signal.SIGKILL


def test_a_gunicorn_worker_is_the_hosts_replicator(tmp_path: Path) -> None:
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4") as server:
        master = server.proc.pid
        code = server.stop(signal.SIGTERM)
    log = server.log()
    assert len(server.started()) == 1, log
    ((role, worker),) = server.started()
    assert role == "replicator", log
    assert worker != master, "the master only supervises; the worker serves and replicates"
    assert server.stopped_pids() == [worker], "the worker made its final flush on SIGTERM"
    assert code == 0, "gunicorn's own graceful shutdown still ran"
    assert "Shutting down: Master" in log


def test_uvicorn_is_the_replicator_and_shuts_down_gracefully(tmp_path: Path) -> None:
    with Server("uvicorn", tmp_path) as server:
        pid = server.proc.pid
        server.stop(signal.SIGTERM)
    log = server.log()
    assert server.started() == [("replicator", pid)], log
    assert server.stopped_pids() == [pid], log
    assert "Finished server process" in log, "uvicorn's own graceful shutdown still ran"


def test_commands_attach_on_first_use_and_ship_at_exit_when_no_server_runs(tmp_path: Path) -> None:
    check = manage(tmp_path, "check")
    assert "BucketHead started" not in check.stdout + check.stderr, "a command that needs no data attaches nothing"
    migrate = manage(tmp_path, "migrate", "--noinput")
    output = migrate.stdout + migrate.stderr
    started = STARTED_LINE.findall(output)
    assert len(started) == 1, output
    ((role, pid),) = started
    assert role == "replicator", "the host's only process is its replicator"
    assert STOPPED_LINE.findall(output) == [pid], "its exit made the final flush"
    with in_the_bucket(tmp_path) as bucket:
        applied = bucket.connection.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
    assert applied > 0, "the migrations reached the bucket"


def test_a_command_on_the_servers_host_is_a_member_that_reads_and_writes(tmp_path: Path) -> None:
    seeded = manage(tmp_path, "shell", "-c", G + "g().kv.set('k', 'seeded'); print('ok')")
    assert "ok" in seeded.stdout
    with Server("runserver", tmp_path, "--noreload") as server:
        replicator = server.proc.pid
        command = G + "b = g(); print(b.kv.get('k')); b.kv.set('k', 'from a command'); print(b.role)"
        write = manage(tmp_path, "shell", "-c", command)
        assert write.stdout.split()[-2:] == ["seeded", "member"], write.stdout + write.stderr
        assert len(LEFT_LINE.findall(write.stderr)) == 1, "the command left the host's database at exit"
        assert f"the host's replicator (pid {replicator}) ships what it changed" in write.stderr
        read = manage(tmp_path, "shell", "-c", G + "print(g().kv.get('k'))")
        assert read.stdout.strip().splitlines()[-1] == "from a command", "every process of the host sees it at once"
        server.stop(signal.SIGTERM)
    assert server.stopped_pids() == [replicator], server.log()
    with in_the_bucket(tmp_path) as bucket:
        assert bucket.kv.get("k") == "from a command", "the replicator's final flush shipped the command's write"


def test_a_command_on_another_host_is_refused_or_reads_a_read_only_copy(tmp_path: Path) -> None:
    manage(tmp_path, "shell", "-c", G + "g().kv.set('k', 'seeded')")
    elsewhere = {"BUCKETHEAD_LOCAL_DIR": str(tmp_path / "another-host"), "BUCKETHEAD_LEASE_WAIT": "1"}
    with Server("runserver", tmp_path, "--noreload") as server:
        refused = manage(tmp_path, "shell", "-c", G + "g()", check=False, **elsewhere)
        assert refused.returncode != 0
        assert "WriterConflict" in refused.stderr, refused.stderr
        assert "held by another writer" in refused.stderr
        assert f":{server.proc.pid}" in refused.stderr, "the refusal names the host's replicator"
        assert "this process gave up after waiting 1s" in refused.stderr
        assert "BucketHead started" not in refused.stderr

        command = G + "b = g(); print(b.role, b.kv.get('k')); b.kv.set('k', 'changed')"
        reader = manage(
            tmp_path, "shell", "-c", command, check=False, BUCKETHEAD_LEASE_CONFLICT="read-only", **elsewhere
        )
        assert reader.stdout.split()[-2:] == ["read-only", "seeded"], reader.stdout + reader.stderr
        assert reader.returncode != 0
        assert "ReadOnlyError" in reader.stderr
        assert "read-only on this host" in reader.stderr, "the error says why"
        assert "held by another writer" in reader.stderr
        server.stop(signal.SIGTERM)
    with in_the_bucket(tmp_path) as bucket:
        assert bucket.kv.get("k") == "seeded", "the other host changed nothing in the bucket"


def test_a_second_server_on_the_same_host_is_a_member_and_serves_the_same_data(tmp_path: Path) -> None:
    manage(tmp_path, "migrate", "--noinput")
    with Server("runserver", tmp_path, "--noreload") as first:
        with Server("runserver", tmp_path, "--noreload") as second:
            assert second.started() == [("member", second.proc.pid)], second.log()
            assert f"the host's replicator is pid {first.proc.pid}" in second.log()
            counted = [visit(first), visit(second), visit(first), visit(second)]
            assert counted == list(range(counted[0], counted[0] + 4)), "one database, one visit counter"
            second.stop(signal.SIGTERM)
        assert second.left_pids() == [second.proc.pid], second.log()
        assert second.stopped_pids() == [], "a member makes no final flush: the replicator ships"
        assert f"the host's replicator (pid {first.proc.pid}) ships what it changed" in second.log()
        assert visit(first) == counted[-1] + 1, "the first server keeps serving"
        first.stop(signal.SIGTERM)
    assert first.stopped_pids() == [first.proc.pid], first.log()
    with Server("runserver", tmp_path, "--noreload", BUCKETHEAD_LOCAL_DIR=str(tmp_path / "new-host")) as again:
        assert visit(again) == counted[-1] + 2, "the last process out shipped every visit"


def test_a_second_server_on_another_host_is_refused_or_serves_read_only(tmp_path: Path) -> None:
    manage(tmp_path, "migrate", "--noinput")
    another_host = {"BUCKETHEAD_LOCAL_DIR": str(tmp_path / "another-host"), "BUCKETHEAD_LEASE_WAIT": "1"}
    with Server("runserver", tmp_path, "--noreload") as first:
        second = Server("runserver", tmp_path, "--noreload", **another_host)
        code = second.proc.wait(timeout=60)
        second.stop()  # already exited: this only closes its log
        log = second.log()
        assert code != 0
        assert "held by another writer" in log, log
        assert f":{first.proc.pid}" in log, "the refusal names the running replicator"
        assert "BucketHead could not start in pid" in log
        assert "BucketHead started" not in log
        assert first.get("/cached/"), "the first server keeps serving"

        details = {"BUCKETHEAD_LEASE_CONFLICT": "read-only", "BUCKETHEAD_HEALTH_DETAILS": "public"}
        with Server("runserver", tmp_path, "--noreload", **another_host, **details) as reader:
            assert reader.started() == [("read-only", reader.proc.pid)], reader.log()
            health = json.loads(reader.get("/buckethead/health/"))
            assert (health["status"], health["role"], health["read_only"]) == ("ok", "read-only", True), health
            assert "held by another writer" in health["read_only_reason"]
            with pytest.raises(urllib.error.HTTPError) as refused:
                reader.get("/")  # the visit counter is a write
            assert refused.value.code == 500
            assert "read-only on this host" in reader.log()
            reader.stop(signal.SIGTERM)
        assert visit(first) >= 1, "the first server keeps serving"
    assert first.stopped_pids() == [first.proc.pid]


def test_the_final_flush_at_exit_reaches_an_s3_bucket(tmp_path: Path, moto) -> None:
    """atexit runs after concurrent.futures has shut down; the final upload must still go through."""
    from buckethead_django.engine import BucketSQLite

    from .conftest import s3_config

    cfg = s3_config(moto, multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    env = s3_env(cfg.bucket, moto.endpoint_url, BUCKETHEAD_AUTOSTART="true")
    # 12 MB of rows: the final snapshot is a multipart upload, which the transfer manager runs on threads.
    script = (
        "import os; from buckethead_django import get_buckethead as g; c = g().connect(); "
        "c.execute('CREATE TABLE big (b BLOB)'); "
        "c.executemany('INSERT INTO big VALUES (?)', [(os.urandom(1 << 20),) for _ in range(12)]); c.commit(); "
        "g().kv.set('written', 'before exit')"
    )
    result = manage(tmp_path, "shell", "-c", script, **env)
    assert "uploaded" in result.stderr, result.stderr
    with BucketSQLite(cfg, read_only_reason="check") as reader:
        assert reader.kv.get("written") == "before exit"
        assert reader.connection.execute("SELECT count(*) FROM big").fetchone() == (12,)


#: A project's test, run by its own pytest: it uses the cache and the file storage, and flushes.
PROJECT_TEST = """
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from buckethead_django import get_buckethead


def test_uses_the_cache_and_the_storage():
    cache.set("visits", 41, None)
    assert cache.incr("visits") == 42
    name = default_storage.save("notes/hello.txt", ContentFile(b"hello from a test"))
    with default_storage.open(name) as f:
        assert f.read() == b"hello from a test"
    get_buckethead().force_flush()
"""


def bucket_contents(moto: MotoServer, bucket: str) -> dict[str, tuple[str, bytes]]:
    """Every object in the bucket: key -> (ETag, content)."""
    client = moto.client()
    contents = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            contents[obj["Key"]] = (obj["ETag"], client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return contents


def test_a_test_run_never_writes_the_configured_bucket_even_with_autostart(tmp_path: Path, moto: MotoServer) -> None:
    """BUCKETHEAD_AUTOSTART=true left in a developer's shell, and the real bucket configured: pytest changes nothing."""
    bucket = s3_config(moto).bucket
    env = s3_env(bucket, moto.endpoint_url, BUCKETHEAD_AUTOSTART="true")
    seed = (
        "from django.core.cache import cache; from django.core.files.base import ContentFile; "
        "from django.core.files.storage import default_storage; cache.set('visits', 7, None); "
        "default_storage.save('notes/real.txt', ContentFile(b'real data')); print('seeded')"
    )
    assert "seeded" in manage(tmp_path, "shell", "-c", seed, **env).stdout  # a real writer fills the bucket
    before = bucket_contents(moto, bucket)
    assert any(key.startswith("files/") for key in before), sorted(before)
    assert len(before) >= 3, sorted(before)

    (tmp_path / "project_tests").mkdir()
    (tmp_path / "project_tests" / "test_project.py").write_text(textwrap.dedent(PROJECT_TEST))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_project.py"],
        cwd=tmp_path / "project_tests",
        env=example_env(tmp_path, DJANGO_SETTINGS_MODULE="example_site.settings", **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert bucket_contents(moto, bucket) == before, "the test run changed the configured bucket"
