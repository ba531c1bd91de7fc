"""Startup rules with real processes: exactly one writer per serving process, none elsewhere."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import s3_config
from .moto_server import MotoServer
from .servers import Server, example_env, manage, s3_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")


def test_runserver_with_the_autoreloader_writes_only_in_its_serving_child(tmp_path: Path) -> None:
    with Server("runserver", tmp_path) as server:
        parent = server.proc.pid
    log = server.log()
    assert len(server.writer_pids()) == 1, log
    assert server.writer_pids()[0] != parent, "the autoreloader's parent must never be the writer"


@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c-to-the-group", "sigint-to-the-parent"])
def test_runserver_autoreloader_child_flushes_on_interrupt(tmp_path: Path, to_group: bool) -> None:
    with Server("runserver", tmp_path) as server:
        code = server.stop(signal.SIGINT, group=to_group)
    writers = server.writer_pids()
    assert len(writers) == 1, server.log()
    assert server.stopped_pids() == writers, "the serving child made its final flush before the parent exited"
    assert code != -signal.SIGKILL


def test_runserver_noreload_is_the_writer_itself(tmp_path: Path) -> None:
    with Server("runserver", tmp_path, "--noreload") as server:
        pid = server.proc.pid
        server.stop(signal.SIGINT)
    assert server.writer_pids() == [pid], server.log()
    assert server.stopped_pids() == [pid], "Ctrl-C makes the final flush"


def test_runserver_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    with Server("runserver", tmp_path, "--noreload") as server:
        code = server.stop(signal.SIGTERM)
    assert server.stopped_pids() == [server.proc.pid], server.log()
    assert code != -signal.SIGKILL


def test_gunicorn_worker_is_the_one_writer(tmp_path: Path) -> None:
    with Server("gunicorn", tmp_path, "--workers", "1", "--threads", "4") as server:
        master = server.proc.pid
        code = server.stop(signal.SIGTERM)
    log = server.log()
    writers = server.writer_pids()
    assert len(writers) == 1, log
    assert writers[0] != master, "the master only supervises; the worker serves and writes"
    assert server.stopped_pids() == writers, "the worker made its final flush on SIGTERM"
    assert code == 0, "gunicorn's own graceful shutdown still ran"
    assert "Shutting down: Master" in log


def test_uvicorn_is_the_writer_and_shuts_down_gracefully(tmp_path: Path) -> None:
    with Server("uvicorn", tmp_path) as server:
        pid = server.proc.pid
        server.stop(signal.SIGTERM)
    log = server.log()
    assert server.writer_pids() == [pid], log
    assert server.stopped_pids() == [pid], log
    assert "Finished server process" in log, "uvicorn's own graceful shutdown still ran"


def test_migrate_and_other_commands_never_start_a_writer(tmp_path: Path) -> None:
    for command in (["migrate", "--noinput"], ["check"], ["showmigrations"]):
        result = manage(tmp_path, *command)
        assert "started as writer" not in result.stdout + result.stderr, command


def test_a_command_reads_the_latest_snapshot_and_refuses_writes(tmp_path: Path) -> None:
    manage(tmp_path, "migrate", "--noinput")
    with Server("runserver", tmp_path, "--noreload") as server:
        pass  # the writer started and stopped: a snapshot now exists
    del server
    write = manage(tmp_path, "shell", "-c", "from buckethead_django import get_buckethead as g; g().kv.set('k', 'v')",
                   check=False)  # fmt: skip
    assert write.returncode != 0
    assert "ReadOnlyError" in write.stderr
    assert "read-only in this process" in write.stderr
    assert "AUTOSTART" in write.stderr, "the error says what to do"

    seeded = manage(
        tmp_path,
        "shell",
        "-c",
        "from buckethead_django import get_buckethead as g; g().kv.set('k', 'seeded'); print('ok')",
        BUCKETHEAD_AUTOSTART="true",
    )
    assert "ok" in seeded.stdout
    read = manage(tmp_path, "shell", "-c", "from buckethead_django import get_buckethead as g; print(g().kv.get('k'))")
    assert read.stdout.strip().splitlines()[-1] == "seeded", "a command sees what the last writer flushed"


def test_a_second_server_on_the_same_bucket_is_refused(tmp_path: Path) -> None:
    with Server("runserver", tmp_path, "--noreload") as first:
        second = Server("runserver", tmp_path, "--noreload", BUCKETHEAD_LEASE_WAIT="1")
        code = second.proc.wait(timeout=60)
        second.stop()  # already exited: this only closes its log
        log = second.log()
        assert code != 0
        assert "held by another writer" in log, log
        assert f":{first.proc.pid}" in log, "the refusal names the running writer"
        assert "started as writer" not in log
        assert first.get("/cached/"), "the first server keeps serving"


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
