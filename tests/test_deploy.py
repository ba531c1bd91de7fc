"""The example project as it is deployed: WhiteNoise under gunicorn, and the container's entrypoint script.

The entrypoint (``example_project/docker-entrypoint.sh``) is what the Dockerfile, the Procfile and the
deployment guides start; it is run here as a real process against the moto S3 server, the way a container
runs it: static files, ``migrate``, then gunicorn exec'd with several workers, stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import s3_config
from .moto_server import MotoServer, free_port
from .servers import BIN, EXAMPLE, Server, example_env, manage, s3_env
from .test_example_project import visits

ROOT = EXAMPLE.parent
ENTRYPOINT = EXAMPLE / "docker-entrypoint.sh"


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def assert_admin_css(url: str) -> None:
    status, headers, body = fetch(url + "/static/admin/css/base.css")
    assert status == 200, body[:500]
    assert headers["Content-Type"].startswith("text/css")
    assert b"body {" in body or b"body{" in body, body[:200]


class Entrypoint(Server):
    """``docker-entrypoint.sh`` run as a container runs it: in its own session, the environment its only input."""

    def __init__(self, state: Path, host: str, **env: str) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state / f"entrypoint-{host.replace('/', '-')}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["/bin/sh", str(ENTRYPOINT)],
            env=example_env(
                state,
                BUCKETHEAD_LOCAL_DIR=str(state / host),  # a new container: an empty /dev/shm directory
                PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",  # `python` is the image's interpreter
                GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{self.port}",  # not 0.0.0.0:$PORT on a shared machine
                **env,
            ),
            cwd="/",
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        Server.running.add(self)

    def wait_healthy(self, timeout: float = 90) -> dict[str, object]:
        """The health view's JSON, once the site answers it with 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _, body = fetch(self.url + "/buckethead/health/")
            except OSError:
                time.sleep(0.3)
                continue
            if status == 200:
                return json.loads(body)
            time.sleep(0.3)
        self.stop(signal.SIGKILL)
        raise AssertionError(f"the entrypoint did not become healthy:\n{self.log()}")


def test_gunicorn_workers_serve_the_admin_css_with_whitenoise_after_collectstatic(tmp_path: Path) -> None:
    static_root = tmp_path / "static"
    collected = manage(tmp_path, "collectstatic", "--noinput", DJANGO_STATIC_ROOT=str(static_root))
    assert "static files copied" in collected.stdout
    assert (static_root / "staticfiles.json").is_file(), "the manifest storage wrote its manifest"
    assert not (tmp_path / "host").exists(), "collectstatic never opens the host's database"
    assert not (tmp_path / "bucket").exists(), "… nor the bucket"
    manage(tmp_path, "migrate", "--noinput")

    production = {"DJANGO_DEBUG": "0", "DJANGO_STATIC_ROOT": str(static_root)}
    with Server("gunicorn", tmp_path, "--workers", "3", **production) as server:
        server.wait_started(3)
        for _ in range(6):  # sync workers: successive connections reach the workers in turn
            assert_admin_css(server.url)
        status, _, page = fetch(server.url + "/admin/login/")
        assert status == 200
        hashed = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)
        assert hashed, "with DEBUG off the admin links the hashed name from the manifest"
        status, headers, body = fetch(server.url + hashed.group(1).decode())
        assert status == 200
        assert "immutable" in headers["Cache-Control"], "a hashed name is cached forever"
        assert body == (static_root / hashed.group(1).decode().removeprefix("/static/")).read_bytes()
        assert fetch(server.url + "/static/admin/css/no-such.css")[0] == 404
        server.stop(signal.SIGTERM)


def test_the_entrypoint_migrates_serves_and_makes_the_final_flush_on_sigterm(tmp_path: Path, moto: MotoServer) -> None:
    bucket = s3_config(moto).bucket
    env = {
        **s3_env(bucket, moto.endpoint_url),
        "DJANGO_DEBUG": "0",
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "WEB_CONCURRENCY": "3",
        "PORT": str(free_port()),
    }

    first = Entrypoint(tmp_path, "first-host", **env)
    health = first.wait_healthy()
    assert health["status"] == "ok", health
    log = first.log()
    assert "static files copied" in log, "no build step ran collectstatic, so the entrypoint did"
    assert "Applying demo.0001_initial... OK" in log
    assert log.index("Applying demo.0001_initial") < log.index("Listening at"), "migrate ran before gunicorn"
    assert re.search(r"BucketHead stopped in pid \d+ after its final flush", log[: log.index("Listening at")]), (
        "migrate shipped its database and let the lease go before gunicorn started"
    )
    cmdline = Path(f"/proc/{first.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"gunicorn" in cmdline, f"the script exec'd gunicorn: the platform's SIGTERM reaches it ({cmdline})"
    roles = [role for role, _ in first.wait_started(4)[1:]]  # migrate first, then one engine per worker
    assert sorted(roles) == ["member", "member", "replicator"], first.log()
    assert_admin_css(first.url)

    for _ in range(3):
        count = visits(first.get("/"))  # each visit is a cache write in the host's database
    first.stop(signal.SIGTERM)  # to the process, as `docker stop` sends it to PID 1
    assert first.proc.returncode == 0, first.log()
    assert len(first.stopped_pids()) == 2, f"migrate's final flush, then the workers' at exit:\n{first.log()}"

    # A new container: an empty LOCAL_DIR, the same bucket and the same image (static files already there).
    second = Entrypoint(tmp_path, "second-host", **env)
    second.wait_healthy()
    log = second.log()
    assert "static files copied" not in log, "the static files of the first start were kept"
    assert "restored snapshot" in log, "the new host restored the bucket's generation"
    assert "No migrations to apply." in log
    assert visits(second.get("/")) == count + 1, "every visit before SIGTERM reached the bucket"
    second.stop(signal.SIGTERM)
    assert second.proc.returncode == 0, second.log()


def test_the_readme_installs_what_the_example_needs() -> None:
    """A fresh machine's first command installs the example's extra, which has WhiteNoise (its middleware)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("whitenoise") for req in extras["example"])
    assert any(req.startswith("gunicorn") for req in extras["example"])
    assert any(req.startswith("whitenoise") for req in extras["dev"]), "the tests import the example's settings"
    assert ".venv/bin/pip install -e '.[example]'" in (ROOT / "README.md").read_text().split("```")[1]


DOCKER = shutil.which("docker")


def docker(*args: str, timeout: float = 120) -> str:
    """Run the docker client; its output."""
    assert DOCKER
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True, timeout=timeout).stdout


def docker_works() -> bool:
    """A Docker engine answers (the client alone is not enough to build)."""
    if not DOCKER:
        return False
    try:
        return subprocess.run([DOCKER, "info"], capture_output=True, check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:  # a client whose engine does not answer
        return False


@pytest.mark.slow
@pytest.mark.skipif(not docker_works(), reason="no Docker engine on this machine")
def test_the_docker_image_builds_serves_and_makes_the_final_flush_on_docker_stop() -> None:
    tag = f"buckethead-example-test:{os.getpid()}"
    name = f"buckethead-example-{os.getpid()}"
    docker("build", "-f", str(EXAMPLE / "Dockerfile"), "-t", tag, str(ROOT), timeout=900)
    try:
        docker("run", "-d", "--name", name, "--shm-size=512m", "-p", "127.0.0.1::8000", tag)
        url = "http://" + docker("port", name, "8000").split()[0]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if fetch(url + "/buckethead/health/")[0] == 200:
                    break
            except OSError:
                time.sleep(1)
        assert_admin_css(url)
        docker("stop", "--time", "30", name, timeout=60)
        logs = subprocess.run([DOCKER, "logs", name], capture_output=True, text=True, check=True)
        assert re.search(r"BucketHead stopped in pid \d+ after its final flush", logs.stdout + logs.stderr)
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True, check=False)
        subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True, check=False)
