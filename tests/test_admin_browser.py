"""The BucketHead admin end to end, in headless Chromium against a live server, as an operator uses it.

Driven with selenium like Django's own admin tests. The tests also take the
screenshots the documentation shows: into a temporary directory, or, with
``BUCKETHEAD_SCREENSHOTS=docs/images`` set, over ``docs/images/admin-*.png``
(a test run otherwise leaves the tree as it found it).

Chromium and its driver come from the system (Debian's ``chromium`` and
``chromium-driver``). Without them the tests are skipped on a developer's
machine, but fail in CI (where ``CI`` is set), so they can never be lost silently.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.cache import learn_cache_key

from buckethead_django.cache import BucketHeadCache
from buckethead_django.engine import BucketSQLite, WriterFenced
from buckethead_django.runtime import use_engine
from buckethead_django.testing import fresh_buckethead

from .conftest import s3_config
from .moto_server import MotoServer
from .tcp_proxy import TcpProxy

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
#: Where screenshots go: the docs' images only when asked, so that a test run never changes the tree.
IMAGES = Path(os.environ.get("BUCKETHEAD_SCREENSHOTS") or tempfile.mkdtemp(prefix="buckethead-screenshots-"))
# No network here: without these switches Chromium keeps calling home and floods the log with refused connections.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]
WAIT_SECONDS = 10
DASHBOARD = "/admin/buckethead_django/dashboard/"
SNAPSHOTS = "/admin/buckethead_django/snapshot/"
NEEDS_BUCKET = "Needs the bucket, which cannot be reached."
SEP = "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}"  # the admin's breadcrumb separator

pytestmark = pytest.mark.django_db(transaction=True)


def unavailable(reason: str) -> None:
    """Skip, except in CI, where a browser test that cannot run is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def downloads() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="buckethead-downloads-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(live_server: Any, downloads: Path) -> Iterator[Any]:
    """One headless Chromium for the session, with a fresh profile.

    It depends on ``live_server`` so that it quits first: the server must
    still be up when the browser closes its keep-alive connections.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[dev]')")
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            unavailable(f"{program} not found: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="buckethead-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Operator:
    """A superuser at the browser: navigates, clicks, reads the page like a person would."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def log_in(self, username: str, password: str) -> None:
        self.driver.delete_all_cookies()
        self.open("/admin/")
        self.css("#id_username").send_keys(username)
        self.css("#id_password").send_keys(password)
        self.css("#login-form input[type=submit]").click()
        self.wait(lambda: "Site administration" in self.text())

    def css(self, selector: str) -> Any:
        """The element ``selector`` finds, waiting for it while a page loads."""
        from selenium.webdriver.common.by import By

        return self.find(By.CSS_SELECTOR, selector)

    def find(self, by: str, value: str) -> Any:
        from selenium.webdriver.support.wait import WebDriverWait

        return WebDriverWait(self.driver, WAIT_SECONDS).until(lambda d: d.find_element(by, value))

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def click_link(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.find(By.LINK_TEXT, text).click()

    def text(self, selector: str = "body") -> str:
        return self.css(selector).text

    def messages(self) -> list[str]:
        return [m.text for m in self.all("ul.messagelist li")]

    def wait(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds; elements replaced by a page load meanwhile are looked up again."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.wait import WebDriverWait

        ignored = (NoSuchElementException, StaleElementReferenceException)
        WebDriverWait(self.driver, WAIT_SECONDS, ignored_exceptions=ignored).until(lambda _: condition())

    def screenshot(self, name: str) -> Path:
        """Save the whole page (not just the window) for the docs."""
        IMAGES.mkdir(parents=True, exist_ok=True)
        width = self.driver.get_window_size()["width"]
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(width, max(600, height + 140))  # the window is taller than its viewport
        path = IMAGES / name
        assert self.driver.save_screenshot(str(path)), path
        self.driver.set_window_size(1280, 900)
        return path


@pytest.fixture
def bh() -> Iterator[BucketSQLite]:
    with fresh_buckethead() as engine:
        yield engine


@pytest.fixture
def operator(browser: Any, live_server: Any, bh: BucketSQLite) -> Operator:
    get_user_model().objects.create_superuser("operator", "ops@example.com", "a-long-password")
    person = Operator(browser, live_server.url)
    person.log_in("operator", "a-long-password")
    return person


def test_log_in_open_the_dashboard_and_flush_now(operator: Operator, bh: BucketSQLite) -> None:
    for i in range(12):
        bh.kv.set(f"feature:{i}", "on")
    bh.files.save_name("reports/2025/q4.csv", b"region,total\nnorth,12\n")
    bh.force_flush()
    bh.kv.set("feature:new-checkout", "on")

    operator.click_link("Dashboard")
    operator.wait(lambda: bool(operator.all("#buckethead-flush")))
    assert operator.text(".breadcrumbs") == f"Home {SEP} BucketHead {SEP} Dashboard"
    assert "Unflushed changes yes" in operator.text("#buckethead-flush")
    assert "KV entries 13" in operator.text("#buckethead-contents")
    assert "Files 1" in operator.text("#buckethead-contents")
    assert "(this process)" in operator.text("#writer-lease")
    operator.screenshot("admin-dashboard.png")

    operator.css("#flush-now").click()
    operator.wait(lambda: bool(operator.messages()))
    assert operator.messages()[0].startswith("Flushed")
    assert "Unflushed changes no" in operator.text("#buckethead-flush")
    assert "uploaded" in operator.text("#last-flush")
    assert not bh.dirty


def test_find_a_key_by_prefix_and_delete_it(operator: Operator, bh: BucketSQLite) -> None:
    bh.kv.set("session:alice", '{"cart": [3, 7]}', ttl=3600)
    bh.kv.set("session:bob", '{"cart": []}', ttl=1800)
    bh.kv.set_bytes("session:carol", b"\x80\x05\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94.")
    bh.kv.set("feature:new-checkout", "on")

    operator.click_link("KV entries")
    search = operator.css("#searchbar")
    search.send_keys("session:")
    search.submit()
    operator.wait(lambda: "3 KV entries" in operator.text(".paginator"))
    keys = [row.get_attribute("data-key") for row in operator.all("tr.kv-entry")]
    assert keys == ["session:alice", "session:bob", "session:carol"]
    assert "hex 80 05 95" in operator.text("tr.kv-entry[data-key='session:carol']")
    operator.screenshot("admin-kv.png")

    operator.css("tr.kv-entry[data-key='session:bob'] a.deletelink").click()
    operator.css("#confirm-delete")
    assert "Are you sure you want to delete the KV entry “session:bob”?" in operator.text("#content-main")
    operator.css("#confirm-delete").click()
    operator.wait(lambda: bool(operator.messages()))
    assert operator.messages() == ["Deleted the KV entry “session:bob”."]
    assert [row.get_attribute("data-key") for row in operator.all("tr.kv-entry")] == [
        "session:alice",
        "session:carol",
    ]
    assert bh.kv.get("session:bob") is None


def test_restore_a_snapshot(operator: Operator, bh: BucketSQLite) -> None:
    bh.kv.set("price:widget", "10")
    bh.force_flush()
    bh.kv.set("price:widget", "1000")  # a mistake, flushed before anyone noticed
    bh.force_flush()

    operator.click_link("Snapshots")
    operator.css("tr.snapshot")
    current, previous = operator.all("tr.snapshot[data-kind='generation']")
    assert "current" in current.text
    assert "current" not in previous.text
    assert "unsigned" in previous.text, "the test engine does not sign its snapshots"
    name, current_name = previous.get_attribute("data-name"), current.get_attribute("data-name")
    previous.find_element("css selector", "a.restore-link").click()
    operator.css("#confirm-restore")
    assert f"Are you sure you want to restore the snapshot “{name}”?" in operator.text("#content-main")
    operator.css("#confirm-restore").click()
    operator.wait(lambda: bool(operator.messages()))
    (message,) = operator.messages()
    assert message.startswith(f"Restored snapshot “{name}”.")
    assert bh.kv.get("price:widget") == "10"
    names = [row.get_attribute("data-name") for row in operator.all("tr.snapshot")]
    assert any(name.startswith("pre-restore-") for name in names)
    (new_current,) = operator.all("tr.snapshot.current")
    assert new_current.get_attribute("data-name") not in (name, current_name), "the restore is a new generation"


def test_a_fenced_writer_is_the_first_thing_the_dashboard_says(operator: Operator, bh: BucketSQLite) -> None:
    bh.kv.set("k", "mine")
    bh.force_flush()
    with fresh_buckethead(bh.config) as successor, use_engine(bh):  # another writer takes the bucket over
        bh.kv.set("k", "lost")
        with pytest.raises(WriterFenced):
            bh.force_flush()
        operator.click_link("Dashboard")
        alarm = operator.css("#fenced")
        assert alarm.is_displayed()
        assert alarm.text.startswith("Fenced off: this host no longer writes to the bucket.")
        assert alarm.location["y"] < operator.css("#buckethead-storage").location["y"], "it comes before the facts"
        assert not operator.all("#flush-now")
        assert successor.kv.get("k") == "mine"


def test_download_a_file(operator: Operator, bh: BucketSQLite, downloads: Path) -> None:
    bh.files.save_name("notes/readme.txt", b"plain text, shown by the browser\n")
    bh.files.save_name("reports/2025/q4.csv", b"region,total\nnorth,12\nsouth,9\n")
    bh.files.put(b"\x89PNG\r\n\x1a\n" + bytes(200), filename="logo.png")

    operator.click_link("Files")
    operator.css("tr.stored-file")
    assert len(operator.all("tr.stored-file")) == 2
    operator.screenshot("admin-files.png")
    operator.css("tr.stored-file[data-name='notes/readme.txt'] a.download-link").click()
    operator.wait(lambda: "plain text, shown by the browser" in operator.text())

    operator.open("/admin/buckethead_django/storedfile/")
    operator.click_link("All stored content, newest first")
    operator.css("tr.stored-file[data-name='logo.png'] a.download-link").click()
    saved = downloads / "logo.png"
    deadline = time.monotonic() + WAIT_SECONDS
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert saved.read_bytes() == b"\x89PNG\r\n\x1a\n" + bytes(200)


def disabled_with_its_reason(operator: Operator, control: str) -> bool:
    """Whether the button ``#control`` is disabled and the reason is shown right beside it, on the same line."""
    button, reason = operator.css(f"#{control}"), operator.css(f"#{control}-reason")
    beside = (
        reason.location["x"] > button.location["x"]
        and abs(reason.location["y"] - button.location["y"]) < button.size["height"]
    )
    return not button.is_enabled() and reason.is_displayed() and reason.text == NEEDS_BUCKET and beside


def test_a_bucket_outage_is_shown_with_what_it_disables_until_the_endpoint_is_back(
    operator: Operator, moto: MotoServer
) -> None:
    with (
        TcpProxy("127.0.0.1", moto.port) as endpoint,
        fresh_buckethead(replace(s3_config(moto), endpoint_url=endpoint.url)) as bh,
    ):
        bh.kv.set("feature:new-checkout", "on")
        bh.force_flush()
        bh.kv.set("feature:new-checkout", "off")  # only in memory from here on

        with endpoint.down():
            operator.open(DASHBOARD)
            alarm = operator.css("#degraded")
            assert alarm.is_displayed()
            assert alarm.location["y"] < operator.css("#buckethead-storage").location["y"], "it comes before the facts"
            assert alarm.text.startswith("Degraded: the bucket cannot be reached.")
            assert re.search(r"The bucket's copy is from .+ \(0 minutes ago\); changes since then are only", alarm.text)
            assert f"cannot reach bucket '{bh.config.bucket}' at {endpoint.url}" in operator.text("#bucket-error")
            assert disabled_with_its_reason(operator, "flush-now")
            assert operator.text("#writer-lease").startswith("unknown: the bucket cannot be reached")
            assert "KV entries 1" in operator.text("#buckethead-contents"), "what is in memory is shown"
            operator.screenshot("admin-outage.png")

            operator.click_link("history")
            operator.wait(lambda: "Snapshots" in operator.text(".breadcrumbs"))
            assert operator.text("#degraded").startswith("Degraded: the bucket cannot be reached.")
            assert "(0 minutes ago)" in operator.text("#degraded")
            assert operator.text("#snapshots-unavailable") == (
                "The snapshots cannot be listed while the bucket cannot be reached."
            )
            assert not operator.all("a.restore-link")
            assert disabled_with_its_reason(operator, "keep-snapshot")

        operator.driver.refresh()
        operator.wait(lambda: bool(operator.all("tr.snapshot")))
        assert not operator.all("#degraded"), "the page is normal again once the endpoint is back"
        assert operator.css("tr.snapshot.current").get_attribute("data-name") == bh.last_upload.generation
        assert operator.css("#keep-snapshot").is_enabled()
        assert not operator.all("#keep-snapshot-reason")

        operator.open(DASHBOARD)
        assert not operator.all("#degraded")
        assert "(this process)" in operator.text("#writer-lease")
        operator.css("#flush-now").click()
        operator.wait(lambda: bool(operator.messages()))
        assert operator.messages()[0].startswith("Flushed")
        assert bh.kv.get("feature:new-checkout") == "off"
        assert not bh.dirty


def test_the_kv_list_keeps_every_column_on_screen_with_real_cache_page_keys(
    operator: Operator, bh: BucketSQLite
) -> None:
    cache = BucketHeadCache("default", {})
    request = RequestFactory().get("/reports/2026/quarterly-summary/", {"region": "north", "page": "3"})
    response = HttpResponse("<html>" + "x" * 2000 + "</html>")
    for prefix in ("", "site-a"):
        key = learn_cache_key(request, response, cache_timeout=600, key_prefix=prefix, cache=cache)
        cache.set(key, response, 600)
    long_keys = [k for k in bh.kv.keys("django-cache:") if "cache_page" in k or "cache_header" in k]
    assert long_keys, "the keys cache_page writes"
    assert max(map(len, long_keys)) > 90

    operator.click_link("KV entries")
    operator.wait(lambda: bool(operator.all("tr.kv-entry")))
    overflow = operator.driver.execute_script(
        "const t = document.querySelector('#result_list');"
        "return t.getBoundingClientRect().right - document.documentElement.clientWidth;"
    )
    assert overflow <= 0, f"the table runs {overflow}px past the window"
    for link in operator.all("tr.kv-entry a.deletelink"):
        assert link.is_displayed()
        assert link.rect["x"] + link.rect["width"] <= operator.driver.execute_script("return window.innerWidth")
    assert "HttpResponse" in operator.text("#result_list"), "a cached page shows as what it is"
