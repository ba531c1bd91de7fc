"""The example project as a new user runs it: real runserver, cache, uploads, downloads, restarts, a new host."""

from __future__ import annotations

import http.cookiejar
import re
import signal
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .servers import Server, manage


class Browser:
    """Just enough of a browser: cookies, GET, and a multipart POST with the CSRF token."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[bytes, dict[str, str]]:
        with self.opener.open(urllib.parse.urljoin(self.base_url, path), timeout=20) as response:
            return response.read(), dict(response.headers.items())

    def upload(self, path: str, fields: dict[str, str], file_field: str, filename: str, content: bytes) -> str:
        page = self.get(path)[0].decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page
        boundary = uuid.uuid4().hex
        parts = [
            *(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                for k, v in {**fields, "csrfmiddlewaretoken": token.group(1)}.items()
            ),
            f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        request = urllib.request.Request(
            urllib.parse.urljoin(self.base_url, path),
            data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Referer": self.base_url},
        )
        with self.opener.open(request, timeout=20) as response:
            return response.read().decode()


def visits(page: str) -> int:
    match = re.search(r'<strong id="visits">(\d+)</strong>', page)
    assert match, page
    return int(match.group(1))


def download_link(page: str, name_part: str) -> str:
    for href, label in re.findall(r'<a class="download" href="([^"]+)">([^<]+)</a>', page):
        if name_part in label:
            return href.replace("&amp;", "&")
    raise AssertionError(f"no download link for {name_part!r} in:\n{page}")


def test_cache_and_uploads_survive_a_restart(tmp_path: Path) -> None:
    manage(tmp_path, "migrate", "--noinput")
    content = b"quarterly numbers\n" * 1000
    with Server("runserver", tmp_path, "--noreload") as server:
        browser = Browser(server.url)
        first = visits(browser.get("/")[0].decode())
        assert visits(browser.get("/")[0].decode()) == first + 1
        page = browser.upload("/", {"title": "Report"}, "file", "report.txt", content)
        last = visits(page)  # the upload redirected back to the index page
        body, headers = browser.get(download_link(page, "report"))
        assert body == content
        assert "report" in headers.get("Content-Disposition", "")
        cached = browser.get("/cached/")[0]
        server.stop(signal.SIGINT)

    # Same port: Django's cache_page keys include the host and port.
    with Server("runserver", tmp_path, "--noreload", port=server.port) as server:
        browser = Browser(server.url)
        page = browser.get("/")[0].decode()
        assert visits(page) == last + 1, "the cache counter carried on after the restart"
        body, _ = browser.get(download_link(page, "report"))
        assert body == content, "the uploaded file is still there"
        assert browser.get("/cached/")[0] == cached, "the cached page is still there"
        server.stop(signal.SIGTERM)

    # A new host (a new container: its LOCAL_DIR is empty) restores everything from the bucket.
    new_host = {"BUCKETHEAD_LOCAL_DIR": str(tmp_path / "new-host")}
    with Server("runserver", tmp_path, "--noreload", port=server.port, **new_host) as server:
        assert server.started() == [("replicator", server.proc.pid)], server.log()
        assert "restored snapshot" in server.log(), "it downloaded the bucket's current generation"
        browser = Browser(server.url)
        page = browser.get("/")[0].decode()
        assert visits(page) == last + 2, "the cache counter came back from the bucket"
        body, _ = browser.get(download_link(page, "report"))
        assert body == content, "the uploaded file and its Document row came back from the bucket"
        assert browser.get("/cached/")[0] == cached, "the cached page came back from the bucket"


def test_a_bad_number_in_the_environment_is_a_check_error_that_says_what_to_write(tmp_path: Path) -> None:
    checked = manage(tmp_path, "check", check=False, BUCKETHEAD_FLUSH_INTERVAL="abc")
    assert checked.returncode == 1
    assert "Traceback" not in checked.stderr, "a system check error, not a crash"
    assert (
        "BUCKETHEAD 'FLUSH_INTERVAL' has the value 'abc' (from environment variable BUCKETHEAD_FLUSH_INTERVAL), "
        "which is not valid." in checked.stderr
    )
    assert "HINT: Use a positive number, for example 5.0." in checked.stderr
    assert manage(tmp_path, "check", BUCKETHEAD_FLUSH_INTERVAL="10").returncode == 0
