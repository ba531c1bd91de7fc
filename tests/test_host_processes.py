"""Every process of a host on one database, with real servers on a moto bucket over HTTP.

gunicorn with four workers, a ``shell`` and a ``migrate`` beside it, writes of
every kind (ORM rows, cache entries, uploaded files) spread over the workers;
then the host is lost (its ``LOCAL_DIR`` deleted) and a new one restores
everything from the bucket. And the replicator killed with ``kill -9`` while
the other workers serve.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import s3_config
from .moto_server import MotoServer
from .servers import EXAMPLE, Server, example_env, manage, s3_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SITES = Path(__file__).resolve().parent / "sites"
VISITS = re.compile(r'id="visits">(\d+)<')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
SERVE_SECONDS = float(os.environ.get("BUCKETHEAD_TEST_SERVE_SECONDS", "60"))


def notes_env(bucket: str, moto: MotoServer, **extra: str) -> dict[str, str]:
    """The example project with the ``notes`` app, on ``bucket``, flushing every second."""
    return s3_env(
        bucket,
        moto.endpoint_url,
        DJANGO_SETTINGS_MODULE="notes_site",
        PYTHONPATH=f"{EXAMPLE}{os.pathsep}{SITES}",
        BUCKETHEAD_FLUSH_INTERVAL="1",
        BUCKETHEAD_MIN_FLUSH_INTERVAL="0",
        BUCKETHEAD_HEALTH_DETAILS="public",
        **extra,
    )


class Visitor:
    """A browser of the example site: visits the counter, uploads documents (with its CSRF cookie).

    Every page it reads counts a visit; ``seen`` collects the counter each one showed.
    """

    def __init__(self, server: Server, seen: list[int] | None = None) -> None:
        self.server = server
        self.seen = seen if seen is not None else []
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def page(self) -> str:
        with self.opener.open(self.server.url + "/", timeout=30) as response:
            return self._read(response)

    def _read(self, response: object) -> str:
        page = response.read().decode()  # type: ignore[attr-defined]
        match = VISITS.search(page)
        assert match
        self.seen.append(int(match.group(1)))
        return page

    def visit(self) -> int:
        self.page()
        return self.seen[-1]

    def upload(self, title: str, content: bytes) -> None:
        token = CSRF.search(self.page())
        assert token
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{token.group(1)}\r\n',
            f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n{title}\r\n',
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{title}.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n",
        ]
        body = "".join(parts).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            self.server.url + "/",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Referer": self.server.url + "/"},
        )
        with self.opener.open(request, timeout=30) as response:
            self._read(response)  # redirected back to the index after the upload


def shell(state: Path, code: str, env: dict[str, str]) -> str:
    result = manage(state, "shell", "-c", code, **env)
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def health(server: Server) -> dict:
    with urllib.request.urlopen(server.url + "/buckethead/health/", timeout=15) as response:
        return json.loads(response.read())


def wait_until_shipped(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while health(server).get("pending_changes") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not health(server).get("pending_changes")


@pytest.mark.slow
def test_four_workers_a_shell_and_a_migrate_share_the_database_and_a_new_host_gets_every_write(
    tmp_path: Path, moto: MotoServer
) -> None:
    bucket = s3_config(moto).bucket
    env = notes_env(bucket, moto)
    state = tmp_path / "host-1"
    manage(state, "migrate", **env)
    manage(state, "migrate", "notes", "0001", **env)  # the column comes later, while the site serves
    visits: list[int] = []
    documents: dict[str, bytes] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    with Server("gunicorn", state, "--workers", "4", "--threads", "2", **env) as server:

        def visiting() -> None:
            visitor = Visitor(server, visits)
            while not stop.is_set():
                try:
                    visitor.visit()
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    errors.append(exc)
                    return

        def uploading(who: int) -> None:
            visitor = Visitor(server, visits)
            n = 0
            while not stop.is_set():
                title = f"doc-{who}-{n}"
                content = f"{title} {uuid.uuid4().hex}".encode()
                try:
                    visitor.upload(title, content)
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    errors.append(exc)
                    return
                documents[title] = content
                n += 1

        workers = [threading.Thread(target=visiting) for _ in range(3)]
        workers += [threading.Thread(target=uploading, args=(i,)) for i in range(2)]
        for thread in workers:
            thread.start()
        started = time.monotonic()
        time.sleep(SERVE_SECONDS / 3)
        assert (
            shell(
                state, "from django.core.cache import cache; cache.set('from-shell', 'hello', None); print('ok')", env
            )
            == "ok"
        )
        manage(state, "migrate", "notes", "0002", **env)  # adds a column while four workers serve
        written = shell(
            state,
            "from notes.models import Note; "
            "[Note.objects.create(body=f'note {i}', author='shell') for i in range(5)]; "
            "print(Note.objects.count())",
            env,
        )
        assert written == "5"
        time.sleep(max(0.0, SERVE_SECONDS - (time.monotonic() - started)))
        stop.set()
        for thread in workers:
            thread.join()
        assert errors == [], errors[:3]
        log = server.log()
        assert log.count("BucketHead started as replicator") == 1, log
        assert log.count("BucketHead started as member") == 3, "every worker serves, on the one database"
        server.stop(signal.SIGTERM)
    assert "after its final flush" in server.log()
    acknowledged = max(visits)
    assert len(documents) > 10
    assert sorted(visits) == list(range(1, acknowledged + 1)), "every visit counted once, whichever worker served it"

    shutil.rmtree(state / "host")  # the host is lost: a redeploy on an ephemeral disk
    with Server("gunicorn", state, "--workers", "2", **env) as again:
        assert Visitor(again).visit() == acknowledged + 1, "every acknowledged visit is there"
        check = (
            "from demo.models import Document; from notes.models import Note; from django.core.cache import cache; "
            "import json; print(json.dumps({"
            "'documents': {d.title: d.file.read().decode() for d in Document.objects.all()}, "
            "'notes': sorted((n.body, n.author) for n in Note.objects.all()), 'shell': cache.get('from-shell')}))"
        )
        found = json.loads(shell(state, check, env))
    assert found["documents"] == {title: content.decode() for title, content in documents.items()}
    assert found["notes"] == [[f"note {i}", "shell"] for i in range(5)]
    assert found["shell"] == "hello"


@pytest.mark.slow
def test_killing_the_replicator_worker_loses_nothing_another_worker_takes_over(
    tmp_path: Path, moto: MotoServer
) -> None:
    bucket = s3_config(moto).bucket
    env = notes_env(bucket, moto)
    state = tmp_path / "host-1"
    manage(state, "migrate", **env)
    with Server("gunicorn", state, "--workers", "3", **env) as server:
        visitor = Visitor(server)
        [visitor.visit() for _ in range(10)]
        replicator = json.loads((state / "host" / "replicator.json").read_text())["pid"]
        os.kill(replicator, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = json.loads((state / "host" / "replicator.json").read_text())
            if info["pid"] != replicator and info["ready"]:
                break
            time.sleep(0.1)
        assert info["pid"] != replicator, "another worker took the role over"
        acknowledged = [visitor.visit() for _ in range(10)][-1]
        wait_until_shipped(server)
        assert health(server)["status"] == "ok"
        server.stop(signal.SIGKILL, group=True)  # nothing gets a final flush: what was shipped is all there is
    shutil.rmtree(state / "host")
    with Server("gunicorn", state, "--workers", "1", **env) as again:
        assert Visitor(again).visit() == acknowledged + 1, "the writes after the kill reached the bucket"


# -- the test runners on a site whose database is BucketHead's ----------------------------------------


def bucket_objects(moto: MotoServer, bucket: str) -> dict[str, str]:
    listing = moto.client().list_objects_v2(Bucket=bucket)
    return {o["Key"]: o["ETag"] for o in listing.get("Contents", [])}


@pytest.mark.parametrize(
    "runner",
    [
        ["manage.py", "test", "demo"],
        ["-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "--ds=example_site.settings", "demo/tests.py"],
    ],
    ids=["django-test-runner", "pytest-django"],
)
def test_the_test_runners_use_a_throwaway_database_never_the_bucket(
    runner: list[str], tmp_path: Path, moto: MotoServer
) -> None:
    bucket = s3_config(moto).bucket
    env = example_env(tmp_path, **s3_env(bucket, moto.endpoint_url))
    manage(tmp_path, "migrate", **s3_env(bucket, moto.endpoint_url))  # the real site has a database in the bucket
    before = bucket_objects(moto, bucket)
    result = subprocess.run(
        [sys.executable, *runner], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert bucket_objects(moto, bucket) == before, "the configured bucket was neither read nor written"


@pytest.mark.parametrize(
    ("kind", "args", "stop"),
    [
        ("uvicorn", ["--workers", "2"], signal.SIGTERM),
        ("runserver", [], signal.SIGINT),  # with its autoreloader: Ctrl-C reaches the whole group
    ],
    ids=["uvicorn-2-workers", "runserver-autoreloader"],
)
def test_other_servers_share_the_database_with_a_shell_and_a_migrate(
    kind: str, args: list[str], stop: signal.Signals, tmp_path: Path, moto: MotoServer
) -> None:
    bucket = s3_config(moto).bucket
    env = notes_env(bucket, moto)
    state = tmp_path / "host-1"
    manage(state, "migrate", **env)
    manage(state, "migrate", "notes", "0001", **env)
    with Server(kind, state, *args, **env) as server:
        visitor = Visitor(server)
        for _ in range(5):
            visitor.visit()
        manage(state, "migrate", "notes", "0002", **env)
        made = "from notes.models import Note; Note.objects.create(body='beside', author='shell'); print('ok')"
        assert shell(state, made, env) == "ok"
        acknowledged = visitor.visit()
        server.stop(stop, group=True)
    assert "after its final flush" in server.log(), server.log()
    shutil.rmtree(state / "host")
    with Server("gunicorn", state, "--workers", "1", **env) as again:
        assert Visitor(again).visit() == acknowledged + 1
        assert shell(state, "from notes.models import Note; print(Note.objects.get().body)", env) == "beside"
