"""The BucketHead admin section, through Django's test client: what each user sees, may do, and what it changes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from html import unescape

import pytest
from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import path, reverse
from django.utils.http import urlencode

from buckethead_django import runtime
from buckethead_django.admin import SnapshotAdmin
from buckethead_django.cache import BucketHeadCache
from buckethead_django.engine import BucketConfig, BucketSQLite, ObjectStoreError
from buckethead_django.testing import fresh_buckethead

from .conftest import s3_config
from .moto_server import MotoServer
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db

ADMIN = "/admin/buckethead_django"
DASHBOARD = f"{ADMIN}/dashboard/"
FLUSH = f"{ADMIN}/dashboard/flush/"
KV = f"{ADMIN}/kventry/"
FILES = f"{ADMIN}/storedfile/"
BLOBS = f"{ADMIN}/storedfile/blobs/"
SNAPSHOTS = f"{ADMIN}/snapshot/"
KEEP = f"{ADMIN}/snapshot/keep/"

# A site that includes the admin but not buckethead_django.urls (see test_downloads_without_the_apps_urls).
urlpatterns = [path("admin/", admin.site.urls)]


@pytest.fixture
def bh() -> Iterator[BucketSQLite]:
    with fresh_buckethead() as engine:
        yield engine


def staff_client(django_user_model, username: str, *permissions: str) -> Client:
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(django_user_model) -> Client:
    """Staff without any BucketHead permission."""
    return staff_client(django_user_model, "viewer")


@pytest.fixture
def flusher(django_user_model) -> Client:
    return staff_client(django_user_model, "flusher", "flush_buckethead")


@pytest.fixture
def manager(django_user_model) -> Client:
    """Staff with both permissions, but not a superuser."""
    return staff_client(django_user_model, "manager", "flush_buckethead", "manage_buckethead_data")


def text(response) -> str:
    """The page's visible text, tags removed and whitespace collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", response.content.decode(), flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def kv_url(view: str, **query: str) -> str:
    return f"{KV}{view}/?{urlencode(query)}"


# -- access ---------------------------------------------------------------------------------------

PAGES = [DASHBOARD, KV, FILES, BLOBS, SNAPSHOTS]


def test_the_admin_index_lists_the_section(bh, viewer) -> None:
    page = text(viewer.get("/admin/"))
    assert "BucketHead" in page
    for section in ("Dashboard", "Files", "KV entries", "Snapshots"):
        assert section in page


@pytest.mark.parametrize("url", [*PAGES, FLUSH, kv_url("entry", key="k"), f"{ADMIN}/snapshot/restore/?name=latest"])
def test_anonymous_users_are_sent_to_the_login_page(bh, client, url) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_non_staff_users_are_sent_to_the_login_page(bh, client, django_user_model) -> None:
    user = django_user_model.objects.create_user("customer", password="pw")
    client.force_login(user)
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    response = client.post(FLUSH)
    assert response.status_code == 302
    assert bh.last_flush is None


@pytest.mark.parametrize("url", PAGES)
def test_staff_without_permissions_can_look(bh, viewer, url) -> None:
    assert viewer.get(url).status_code == 200


def test_staff_without_permissions_see_no_destructive_buttons(bh, viewer) -> None:
    bh.kv.set("greeting", "hello")
    bh.files.save_name("docs/a.txt", b"a")
    bh.force_flush()
    pages = [viewer.get(url).content.decode() for url in PAGES]
    for html in pages:
        for control in ('id="flush-now"', 'class="deletelink"', "restore-link", 'id="keep-snapshot"'):
            assert control not in html


def test_staff_without_permissions_get_403_when_they_post_anyway(bh, viewer) -> None:
    bh.kv.set("greeting", "hello")
    named = bh.files.save_name("docs/a.txt", b"a")
    bh.force_flush()
    bh.kv.set("after", "flush")
    refused = [
        viewer.post(FLUSH),
        viewer.post(KEEP, {"label": "mine"}),
        viewer.post(kv_url("delete", key="greeting")),
        viewer.get(kv_url("delete", key="greeting")),
        viewer.post(f"{FILES}delete/?name=docs/a.txt"),
        viewer.post(f"{BLOBS}{named.bh_key}/delete/"),
        viewer.post(f"{ADMIN}/snapshot/restore/?name=latest"),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert bh.dirty  # not flushed
    assert bh.kv.get("greeting") == "hello"
    assert bh.files.resolve("docs/a.txt") is not None
    assert bh.kv.get("after") == "flush"  # not restored
    assert [e.kind for e in bh.history.snapshots()] == ["generation"], "nothing was kept"


def test_posts_need_the_csrf_token(bh, django_user_model) -> None:
    user = django_user_model.objects.create_superuser("root", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    bh.kv.set("k", "v")
    assert client.post(FLUSH).status_code == 403
    assert bh.dirty
    assert client.post(kv_url("delete", key="k")).status_code == 403
    assert bh.kv.get("k") == "v"

    dashboard = client.get(DASHBOARD).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', dashboard).group(1)
    assert client.post(FLUSH, {"csrfmiddlewaretoken": token}).status_code == 302
    assert not bh.dirty


# -- dashboard and flush ------------------------------------------------------------------------------


def test_a_copy_set_aside_at_start_is_on_the_dashboard(viewer, tmp_path) -> None:
    bucket = BucketConfig.local(tmp_path / "bucket")
    with fresh_buckethead(bucket, local_dir=tmp_path / "a") as first:
        first.kv.set("k", "in the bucket")
    foreign = tmp_path / "b"
    foreign.mkdir(mode=0o700)
    with sqlite3.connect(foreign / "buckethead.sqlite3") as conn:  # a file no replicator recorded
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    with fresh_buckethead(bucket, local_dir=foreign) as bh:
        shown = text(viewer.get(DASHBOARD))
        ((path, _),) = bh.set_aside
    assert f"set aside as {path}" in shown
    assert f"buckethead restore --file {path}" in shown


def test_the_dashboard_shows_where_the_state_is_and_how_big_it_is(bh, viewer) -> None:
    for i in range(3):
        bh.kv.set(f"k{i}", "v")
    bh.files.save_name("a.txt", b"a")
    page = viewer.get(DASHBOARD)
    assert page.context["title"] == "BucketHead"
    shown = text(page)
    assert "Backend local directory" in shown
    assert str(bh.config.local_path) in shown
    assert "Snapshot key bucketsqlite/snap.db" in shown
    assert "Last flush none yet in this process" in shown
    assert "Unflushed changes yes" in shown
    assert "Last error none" in shown
    assert "KV entries 3" in shown
    assert "Files 1" in shown
    assert re.search(r"Database size [\d.]+\s*KB", shown)
    assert f"held by {bh.lease.holder} (this process)" in shown
    assert "the host's replicator: reads, writes and ships the host's changes" in shown
    assert f"Host's replicator pid {os.getpid()} on {socket.gethostname()} (this process)" in shown
    assert f"Host's database {bh.local.path}" in shown


def test_flush_now_uploads_and_the_dashboard_reports_it(bh, flusher) -> None:
    bh.kv.set("k", "v")
    assert 'id="flush-now"' in flusher.get(DASHBOARD).content.decode()

    response = flusher.post(FLUSH, follow=True)
    assert response.redirect_chain == [(DASHBOARD, 302)]
    assert any(m.startswith("Flushed") for m in messages_of(response))
    current = bh.history.find("latest")
    assert current.current
    assert not bh.dirty
    assert f"Current snapshot {current.name}" in text(response)
    assert re.search(r"Last flush .*: uploaded [\d.]+\s*KB in [\d.]+ s", text(response))

    again = flusher.post(FLUSH, follow=True)
    assert any(m.startswith("Nothing to flush") for m in messages_of(again))
    assert "skipped, unchanged" in text(again)


def test_flush_is_post_only(bh, flusher) -> None:
    assert flusher.get(FLUSH).status_code == 405


def test_the_last_error_is_shown(bh, viewer) -> None:
    bh.replicator.last_error = RuntimeError("the bucket said no")
    page = text(viewer.get(DASHBOARD))
    assert "Last error the bucket said no" in page
    assert "Degraded: the last flush failed. Nothing has reached the bucket yet;" in page


def test_a_failing_flush_makes_the_dashboard_say_degraded_and_how_old_the_bucket_copy_is(
    bh, flusher, monkeypatch: pytest.MonkeyPatch
) -> None:
    bh.kv.set("k", "1")
    bh.force_flush()
    bh.kv.set("k", "2")

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise ObjectStoreError("the bucket is unreachable")

    monkeypatch.setattr(bh.store, "put", unreachable)
    response = flusher.post(FLUSH, follow=True)
    assert "the bucket is unreachable" in messages_of(response)[0]
    html = response.content.decode()
    assert 'id="degraded"' in html
    assert 'id="fenced"' not in html
    assert re.search(
        r"Degraded: the last flush failed\. The bucket's copy is from .+ \(0 minutes ago\); changes since then are "
        r"only in this host's database\. Flushing is retried by itself\. the bucket is unreachable",
        text(response),
    ), text(response)
    monkeypatch.undo()
    assert 'id="degraded"' not in flusher.post(FLUSH, follow=True).content.decode(), "a good flush clears it"


def test_a_fenced_writer_shows_a_loud_error_and_offers_no_flush(bh, admin_client) -> None:
    bh.kv.set("k", "mine")
    bh.force_flush()
    with fresh_buckethead(bh.config) as successor:  # another writer takes the bucket over
        bh.kv.set("k", "lost")
        with runtime.use_engine(bh):
            response = admin_client.post(FLUSH, follow=True)
            assert "has taken over" in messages_of(response)[0]
            page = response.content.decode()
            assert 'id="fenced"' in page
            assert 'role="alert"' in page
            assert 'id="flush-now"' not in page
            shown = text(response)
            assert "Fenced off: this host no longer writes to the bucket." in shown
            assert "has taken over" in shown
            assert "stopped shipping" in shown
            snapshots = admin_client.get(SNAPSHOTS).content.decode()
            assert "was fenced off by another writer" in snapshots
            assert "restore-link" not in snapshots
            assert 'id="keep-snapshot"' not in snapshots
        assert successor.kv.get("k") == "mine", "the successor has what the bucket had"


def test_a_read_only_engine_offers_no_actions_and_refuses_them() -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    with fresh_buckethead(read_only_reason="this process only reads") as bh:
        page = client.get(DASHBOARD)
        assert "this process only reads" in text(page)
        assert 'id="flush-now"' not in page.content.decode()
        response = client.post(FLUSH, follow=True)
        assert "this process only reads" in " ".join(messages_of(response))
        assert bh.last_flush is None


# -- KV browser ---------------------------------------------------------------------------------------------


def test_the_kv_browser_finds_keys_by_prefix_and_pages_through_them(bh, viewer) -> None:
    for i in range(60):
        bh.kv.set(f"user:{i:03}", f"name {i}")
    bh.kv.set("other", "x")

    first = viewer.get(KV, {"prefix": "user:"})
    keys = [row.key for row, _, _ in first.context["rows"]]
    assert keys == [f"user:{i:03}" for i in range(50)]
    assert "60 KV entries" in text(first)
    assert "?prefix=user%3A&amp;p=2" in first.content.decode()

    second = viewer.get(KV, {"prefix": "user:", "p": "2"})
    assert [row.key for row, _, _ in second.context["rows"]] == [f"user:{i:03}" for i in range(50, 60)]

    none = viewer.get(KV, {"prefix": "nobody"})
    assert "No key starts with “nobody”." in text(none)


def test_values_are_shown_as_text_or_hex_with_size_and_expiry(bh, viewer) -> None:
    bh.kv.set("greeting", "hello world")
    bh.kv.set_bytes("blob", b"\x80\x04\x95\x00\xff", ttl=3600)
    page = text(viewer.get(KV))
    assert "greeting 11 bytes never text hello world" in page
    assert re.search(r"blob 5 bytes in (59 minutes|1 hour) hex 80 04 95 00 ff", page)

    entry = viewer.get(kv_url("entry", key="blob"))
    assert "00000000  80 04 95 00 ff" in entry.content.decode()
    assert "Not UTF-8 text: shown as hex." in text(entry)
    assert viewer.get(kv_url("entry", key="missing")).status_code == 404


def test_deleting_a_key_asks_first_then_deletes_it(bh, manager) -> None:
    bh.kv.set("session:1", "a")
    bh.kv.set("session:2", "b")
    listing = manager.get(KV, {"prefix": "session:"}).content.decode()
    assert 'class="deletelink"' in listing

    confirm = manager.get(kv_url("delete", key="session:1", prefix="session:"))
    assert "Are you sure you want to delete the KV entry “session:1”?" in text(confirm)
    assert bh.kv.get("session:1") == "a"

    response = manager.post(kv_url("delete", key="session:1", prefix="session:"), follow=True)
    assert response.redirect_chain == [(f"{KV}?prefix=session%3A", 302)]
    assert "Deleted the KV entry “session:1”." in messages_of(response)
    assert bh.kv.get("session:1") is None
    assert bh.kv.get("session:2") == "b"
    assert [row.key for row, _, _ in response.context["rows"]] == ["session:2"]
    entry = LogEntry.objects.get()
    assert (entry.object_repr, entry.action_flag) == ("session:1", DELETION)


def test_a_cache_entry_is_shown_as_its_value_not_as_a_pickle(bh, viewer) -> None:
    cache = BucketHeadCache("default", {})
    cache.set("profile:7", {"name": "Ada", "langs": ["en", "fr"]})
    key = next(k for k in bh.kv.keys("django-cache:") if k.endswith("profile:7"))
    page = text(viewer.get(KV))
    assert f"{key} " in page
    assert "dict {'name': 'Ada', 'langs': ['en', 'fr']}" in page
    entry = text(viewer.get(kv_url("entry", key=key)))
    assert "A cache entry: its value, a dict , shown as Python writes it." in entry
    assert "{'name': 'Ada', 'langs': ['en', 'fr']}" in entry
    assert "Edit" not in entry, "a cache entry changes through the cache"

    cache.set("report", "x" * (bh.kv.max_value_bytes + 10))  # over the KV limit: a blob
    big = next(k for k in bh.kv.keys("django-cache:") if k.endswith("report"))
    assert re.search(r"blob a value over the KV limit, kept as the FileStore blob [0-9a-f]{64}", text(viewer.get(KV)))
    assert "x" * 100 not in text(viewer.get(kv_url("entry", key=big)))


def test_a_kv_entry_is_added_and_its_text_edited_from_the_admin(bh, manager) -> None:
    form = manager.get(kv_url("add"))
    assert form.status_code == 200
    added = manager.post(kv_url("add"), {"key": "feature:checkout", "value": "on", "ttl": ""}, follow=True)
    assert added.redirect_chain == [(kv_url("entry", key="feature:checkout"), 302)]
    assert "Saved the KV entry “feature:checkout”." in messages_of(added)
    assert (bh.kv.get("feature:checkout"), bh.kv.ttl("feature:checkout")) == ("on", None)

    taken = manager.post(kv_url("add"), {"key": "feature:checkout", "value": "off"})
    assert "The key “feature:checkout” exists already: edit it instead." in text(taken)
    assert bh.kv.get("feature:checkout") == "on"
    cache_key = manager.post(kv_url("add"), {"key": "django-cache:default:x", "value": "v"})
    assert "are the cache's" in text(cache_key)
    assert not bh.kv.exists("django-cache:default:x")

    entry = manager.get(kv_url("entry", key="feature:checkout")).content.decode()
    assert 'id="edit-kv-entry"' in entry
    editing = manager.get(kv_url("edit", key="feature:checkout"))
    assert re.search(r'<input[^>]*value="feature:checkout"[^>]*disabled', editing.content.decode())
    changed = manager.post(
        kv_url("edit", key="feature:checkout"), {"key": "ignored", "value": "off\nfor now", "ttl": "600"}
    )
    assert changed.status_code == 302
    assert bh.kv.get("feature:checkout") == "off\nfor now"
    assert 590 < bh.kv.ttl("feature:checkout") <= 600
    assert not bh.kv.exists("ignored"), "the key of an entry being edited comes from the page, not the form"
    assert [(e.object_repr, e.action_flag) for e in LogEntry.objects.order_by("pk")] == [
        ("feature:checkout", ADDITION),
        ("feature:checkout", CHANGE),
    ]

    bh.kv.set_bytes("blob", b"\x00\x01")
    refused = manager.get(kv_url("edit", key="blob"), follow=True)
    assert "Only a text value can be edited here." in messages_of(refused)[-1]


def test_adding_or_editing_needs_the_data_permission(bh, flusher) -> None:
    bh.kv.set("k", "v")
    assert 'id="add-kv-entry"' not in flusher.get(KV).content.decode()
    assert flusher.post(kv_url("add"), {"key": "new", "value": "x"}).status_code == 403
    assert flusher.post(kv_url("edit", key="k"), {"value": "changed"}).status_code == 403
    assert (bh.kv.get("k"), bh.kv.get("new")) == ("v", None)


def test_flush_permission_alone_does_not_allow_deleting(bh, flusher) -> None:
    bh.kv.set("k", "v")
    assert 'class="deletelink"' not in flusher.get(KV).content.decode()
    assert flusher.post(kv_url("delete", key="k")).status_code == 403
    assert bh.kv.get("k") == "v"


# -- files browser ---------------------------------------------------------------------------------------------


def test_the_files_browser_lists_names_with_their_details(bh, viewer) -> None:
    named = bh.files.save_name("reports/q1.csv", b"a,b\n1,2\n")
    bh.files.save_name("other/x.txt", b"x")
    response = viewer.get(FILES, {"prefix": "reports/"})
    page = text(response)
    assert "reports/q1.csv 8 bytes text/csv" in page
    assert named.bh_key[:12] in page
    assert "other/x.txt" not in page
    assert "1 file" in page

    html = response.content.decode()
    link = unescape(re.search(r'class="download-link" href="([^"]+)"', html).group(1))
    download = viewer.get(link)
    assert b"".join(download.streaming_content) == b"a,b\n1,2\n"


@override_settings(ROOT_URLCONF=__name__)
def test_downloads_without_the_apps_urls_are_streamed_by_the_admin(bh, viewer) -> None:
    named = bh.files.save_name("docs/a.txt", b"content")
    html = viewer.get(FILES).content.decode()
    link = unescape(re.search(r'class="download-link" href="([^"]+)"', html).group(1))
    assert link == f"{BLOBS}{named.bh_key}/download/"
    assert b"".join(viewer.get(link).streaming_content) == b"content"


def test_the_blob_list_pages_through_every_blob_newest_first(bh, viewer) -> None:
    for i in range(55):
        bh.files.put(f"blob {i}".encode(), filename=f"b{i}.txt")
    first = viewer.get(BLOBS)
    assert "55 files" in text(first)
    second = viewer.get(BLOBS, {"p": "2"})
    assert len(second.context["rows"]) == 5
    shown = {info.bh_key for info, *_ in first.context["rows"]} | {info.bh_key for info, *_ in second.context["rows"]}
    assert len(shown) == 55


def test_every_blob_is_listed_and_downloads_as_an_attachment(bh, viewer) -> None:
    bh_key = bh.files.put(b"<svg onload=alert(1)>", filename="evil.svg")
    response = viewer.get(BLOBS)
    assert "evil.svg 21 bytes image/svg+xml" in text(response)
    download = viewer.get(f"{BLOBS}{bh_key}/download/")
    assert download["Content-Disposition"].startswith("attachment")
    assert download["Content-Security-Policy"] == "sandbox"
    assert b"".join(download.streaming_content) == b"<svg onload=alert(1)>"
    assert viewer.get(f"{BLOBS}{'0' * 64}/download/").status_code == 404


def test_deleting_a_named_file_asks_first_then_deletes_it(bh, manager) -> None:
    bh.files.save_name("docs/a.txt", b"a")
    bh.files.save_name("docs/b.txt", b"b")
    confirm = manager.get(f"{FILES}delete/", {"name": "docs/a.txt"})
    assert "Are you sure you want to delete the file “docs/a.txt”?" in text(confirm)

    response = manager.post(f"{FILES}delete/?name=docs/a.txt", follow=True)
    assert "Deleted the file “docs/a.txt”." in messages_of(response)
    assert bh.files.resolve("docs/a.txt") is None
    assert [named.name for named, *_ in response.context["rows"]] == ["docs/b.txt"]
    assert manager.get(f"{FILES}delete/", {"name": "docs/a.txt"}).status_code == 404


def test_deleting_a_blob_removes_every_name_of_it(bh, manager) -> None:
    first = bh.files.save_name("one.txt", b"same")
    bh.files.save_name("two.txt", b"same")
    assert "Every name that refers to this content" in text(manager.get(f"{BLOBS}{first.bh_key}/delete/"))
    response = manager.post(f"{BLOBS}{first.bh_key}/delete/", follow=True)
    assert response.redirect_chain == [(BLOBS, 302)]
    assert not bh.files.exists(first.bh_key)
    assert bh.files.list_names() == []


# -- snapshots -----------------------------------------------------------------------------------------------


def test_snapshots_are_listed_and_only_superusers_may_restore(bh, manager, admin_client) -> None:
    bh.kv.set("k", "1")
    bh.force_flush()
    bh.kv.set("k", "2")
    bh.force_flush()
    newest, older = bh.history.snapshots()
    response = manager.get(SNAPSHOTS)
    listing = text(response)
    assert f"{newest.name} current generation" in listing
    assert f"{newest.sha256[:12]} unsigned" in listing, "the test engine does not sign"
    assert f"{older.name} generation" in listing
    assert "Retention keeps the newest 24 generations" in listing
    assert re.findall(r'<tr class="snapshot( current)?"', response.content.decode()) == [" current", ""]
    assert "Restore" not in listing
    assert manager.get(f"{ADMIN}/snapshot/restore/?name=previous").status_code == 403
    assert "Restore…" in text(admin_client.get(SNAPSHOTS))


def test_restoring_a_snapshot_keeps_the_current_state_first(bh, admin_client) -> None:
    bh.kv.set("k", "old")
    bh.force_flush()
    bh.kv.set("k", "new")
    bh.force_flush()

    older = bh.history.find("previous")
    confirm = admin_client.get(f"{ADMIN}/snapshot/restore/", {"name": "previous"})
    shown = text(confirm)
    assert f"Are you sure you want to restore the snapshot “previous” ({older.name})?" in shown
    assert bh.kv.get("k") == "new"
    assert f"Kind: generation Size: {older.size // 1024}.0 KB" in shown
    assert f"SHA-256: {older.sha256} Signature: unsigned" in shown
    response = admin_client.post(f"{ADMIN}/snapshot/restore/?name=previous", follow=True)
    assert response.redirect_chain == [(SNAPSHOTS, 302)]
    assert bh.kv.get("k") == "old"
    (message,) = messages_of(response)
    assert message.startswith(f"Restored snapshot “{older.name}”.")
    kept = re.search(r"kept as snapshot “(pre-restore-[^”]+)”", message).group(1)
    assert kept in text(response)

    undo = admin_client.post(f"{ADMIN}/snapshot/restore/?name={kept}", follow=True)
    assert "Restored snapshot" in messages_of(undo)[0]
    assert bh.kv.get("k") == "new"
    assert admin_client.get(f"{ADMIN}/snapshot/restore/", {"name": "nope"}).status_code == 404


def test_keeping_a_labelled_snapshot(bh, flusher) -> None:
    bh.kv.set("k", "v")
    response = flusher.post(KEEP, {"label": "before-migration"}, follow=True)
    assert "Kept the current state as snapshot “before-migration”." in messages_of(response)
    assert "before-migration labelled" in text(response)
    assert 'data-name="before-migration" data-kind="labelled"' in response.content.decode()

    refused = flusher.post(KEEP, {"label": "../bad"}, follow=True)
    assert "is not valid" in messages_of(refused)[0]
    taken = flusher.post(KEEP, {"label": "before-migration"}, follow=True)
    assert taken.status_code == 200
    assert messages_of(taken) == ["a snapshot labelled 'before-migration' already exists; choose another label"]


# -- a bucket outage ------------------------------------------------------------------------------------------

#: An outage page must not wait out the engine's retries: it renders in a few seconds at most.
OUTAGE_PAGE_SECONDS = 5.0
UNREACHABLE = re.compile(
    r"Degraded: the bucket cannot be reached\. The bucket's copy is from .+ \(0 minutes ago\); (?P<since>[^.]+)\. "
    r"The site keeps working from its database; what needs the bucket is disabled until it answers again\. "
    r"(?:The last flush failed as well; it is retried by itself\. )?cannot reach bucket 'bh-test-\w+' at http://127\.0\.0\.1:\d+"
)
NEEDS_BUCKET = "Needs the bucket, which cannot be reached."


def disabled_with_reason(html: str, control: str) -> bool:
    """Whether the control with id ``control`` is disabled, with the reason right next to it."""
    pattern = (
        rf'id="{control}" disabled aria-describedby="{control}-reason">\s*'
        rf'<span class="buckethead-reason" id="{control}-reason">{re.escape(NEEDS_BUCKET)}</span>'
    )
    return re.search(pattern, html) is not None


@pytest.fixture
def endpoint(moto: MotoServer) -> Iterator[TcpProxy]:
    """The S3 endpoint the engine reaches its bucket through: ``endpoint.down()`` is an outage."""
    with TcpProxy("127.0.0.1", moto.port) as proxy:
        yield proxy


def engine_behind(
    moto: MotoServer, endpoint: TcpProxy, **config: object
) -> contextlib.AbstractContextManager[BucketSQLite]:
    """The process's engine on a new moto bucket through ``endpoint``, started while it is up."""
    return fresh_buckethead(replace(s3_config(moto), endpoint_url=endpoint.url, **config))


@pytest.fixture
def s3_bh(moto: MotoServer, endpoint: TcpProxy) -> Iterator[BucketSQLite]:
    """An engine with the engine's default retries and timeouts, a KV entry and a file, flushed to the bucket."""
    with engine_behind(moto, endpoint) as engine:
        engine.kv.set("greeting", "hello")
        engine.files.save_name("docs/a.txt", b"a")
        engine.force_flush()
        yield engine


def timed_get(client: Client, url: str, **query: str):
    """GET ``url``, which must answer with a page within OUTAGE_PAGE_SECONDS."""
    started = time.monotonic()
    response = client.get(url, query)
    took = time.monotonic() - started
    assert response.status_code == 200, (url, response.status_code)
    assert took < OUTAGE_PAGE_SECONDS, f"{url} took {took:.1f}s to render in an outage"
    return response


def test_in_an_outage_the_dashboard_says_the_bucket_cannot_be_reached_and_disables_flush_now(
    s3_bh, endpoint, flusher
) -> None:
    s3_bh.kv.set("greeting", "changed")  # not flushed yet
    with endpoint.down():
        response = timed_get(flusher, DASHBOARD)
        shown = text(response)
        found = UNREACHABLE.search(shown)
        assert found, shown
        assert found["since"] == "changes since then are only in this host's database until a flush gets through"
        assert disabled_with_reason(response.content.decode(), "flush-now")
        assert "Writer lease unknown: the bucket cannot be reached" in shown
        assert "KV entries 1" in shown, "what is in memory is shown"

        refused = flusher.post(FLUSH, follow=True)
        assert refused.status_code == 200
        (message,) = messages_of(refused)
        assert "cannot reach bucket" in message
        assert s3_bh.dirty, "nothing was flushed"
        assert "The last flush failed as well" in text(refused)

    response = flusher.post(FLUSH, follow=True)
    assert messages_of(response)[0].startswith("Flushed")
    html = response.content.decode()
    assert 'id="degraded"' not in html, "the page is normal again once the bucket answers"
    assert re.search(r'id="flush-now">', html), "and Flush now is enabled again"
    assert f"held by {s3_bh.lease.holder} (this process)" in text(response)


def test_in_an_outage_the_snapshots_page_renders_and_restoring_and_keeping_are_disabled(
    s3_bh, endpoint, admin_client
) -> None:
    current = s3_bh.history.find("latest")
    s3_bh.kv.set("greeting", "changed")
    with endpoint.down():
        response = timed_get(admin_client, SNAPSHOTS)
        shown = text(response)
        assert UNREACHABLE.search(shown), shown
        assert "The snapshots cannot be listed while the bucket cannot be reached." in shown
        html = response.content.decode()
        assert "restore-link" not in html
        assert disabled_with_reason(html, "keep-snapshot")

        kept = admin_client.post(KEEP, {"label": "before-outage"}, follow=True)
        assert kept.redirect_chain == [(SNAPSHOTS, 302)]
        assert "cannot reach bucket" in messages_of(kept)[0]

        confirm = timed_get(admin_client, f"{ADMIN}/snapshot/restore/", name=current.name)
        shown = text(confirm)
        assert UNREACHABLE.search(shown), shown
        assert f"The snapshot “{current.name}” cannot be looked up while the bucket cannot be reached." in shown
        assert disabled_with_reason(confirm.content.decode(), "confirm-restore")

        restored = admin_client.post(f"{ADMIN}/snapshot/restore/?name={current.name}", follow=True)
        assert restored.redirect_chain == [(SNAPSHOTS, 302)]
        assert "cannot reach bucket" in messages_of(restored)[0]
        assert s3_bh.kv.get("greeting") == "changed", "nothing was restored"

    response = admin_client.get(SNAPSHOTS)
    shown = text(response)
    assert "cannot be reached" not in shown, "the page is normal again once the bucket answers"
    assert "Degraded: the last flush failed." in shown, "keeping a snapshot flushed first, and that failed"
    assert f"{current.name} current generation" in shown
    assert "Restore…" in shown
    assert re.search(r'id="keep-snapshot">', response.content.decode())


def test_in_an_outage_the_kv_browser_works_from_memory(s3_bh, endpoint, manager) -> None:
    with endpoint.down():
        listing = timed_get(manager, KV)
        shown = text(listing)
        found = UNREACHABLE.search(shown)
        assert found, shown
        assert found["since"] == "nothing has changed since"
        assert "greeting 5 bytes never text hello" in shown
        assert 'class="deletelink"' in listing.content.decode(), "deleting works from memory, so it is offered"

        entry = timed_get(manager, f"{KV}entry/", key="greeting")
        assert UNREACHABLE.search(text(entry))
        assert 'class="deletelink"' in entry.content.decode()

        confirm = timed_get(manager, f"{KV}delete/", key="greeting")
        assert UNREACHABLE.search(text(confirm))
        assert 'id="confirm-delete">' in confirm.content.decode(), "deleting is not disabled"

        deleted = manager.post(kv_url("delete", key="greeting"), follow=True)
        assert "Deleted the KV entry “greeting”." in messages_of(deleted)
        assert s3_bh.kv.get("greeting") is None
        assert "The KV store is empty." in text(deleted)


def test_in_an_outage_files_are_listed_and_can_be_deleted_but_not_downloaded(s3_bh, endpoint, manager) -> None:
    named = s3_bh.files.resolve("docs/a.txt")
    with endpoint.down():
        for url in (FILES, BLOBS):
            response = timed_get(manager, url)
            shown = text(response)
            assert UNREACHABLE.search(shown), shown
            html = response.content.decode()
            assert 'class="download-link"' not in html
            assert f"Download {NEEDS_BUCKET}" in shown
            assert 'class="deletelink"' in html, "deleting works from memory, so it is offered"

        download = manager.get(
            f"{BLOBS}{named.bh_key}/download/", follow=True, HTTP_REFERER=f"http://testserver{FILES}"
        )
        assert download.redirect_chain == [(f"http://testserver{FILES}", 302)]
        (message,) = messages_of(download)
        assert message.startswith("“a.txt” cannot be downloaded while the bucket cannot be reached: cannot reach")

        for url in (f"{FILES}delete/?name=docs/a.txt", f"{BLOBS}{named.bh_key}/delete/"):
            assert UNREACHABLE.search(text(timed_get(manager, url)))
        deleted = manager.post(f"{FILES}delete/?name=docs/a.txt", follow=True)
        assert "Deleted the file “docs/a.txt”." in messages_of(deleted)
        assert s3_bh.files.resolve("docs/a.txt") is None

    s3_bh.files.save_name("docs/b.txt", b"b")
    response = manager.get(FILES)
    assert 'id="degraded"' not in response.content.decode()
    link = unescape(re.search(r'class="download-link" href="([^"]+)"', response.content.decode()).group(1))
    assert b"".join(manager.get(link).streaming_content) == b"b"


@contextlib.contextmanager
def silent(endpoint: TcpProxy) -> Iterator[None]:
    """The endpoint accepts connections but never answers, like a hung load balancer."""
    with endpoint.down(), socket.create_server(("127.0.0.1", endpoint.port)):
        yield


def test_an_endpoint_that_never_answers_does_not_hold_up_the_admin(moto, endpoint, admin_client) -> None:
    """The engine may wait 2 x 20 s for an answer; an admin page gives up after a few seconds."""
    with engine_behind(moto, endpoint, read_timeout=20.0, max_attempts=2) as bh:
        bh.kv.set("greeting", "hello")
        bh.force_flush()
        with silent(endpoint):
            for url in (DASHBOARD, SNAPSHOTS):
                started = time.monotonic()
                response = admin_client.get(url)
                took = time.monotonic() - started
                assert response.status_code == 200
                assert took < 8, f"{url} took {took:.1f}s"
                assert "Degraded: the bucket cannot be reached." in text(response)
                assert "timeout" in text(response).lower()


def test_the_state_at_a_time_is_found_and_confirmed_before_it_is_restored(bh, admin_client) -> None:
    bh.kv.set("k", "morning")
    bh.force_flush()
    morning = bh.history.find("latest")
    time.sleep(1.1)  # the bucket dates objects to the second
    between = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.1)
    bh.kv.set("k", "evening")
    bh.force_flush()

    assert 'id="restore-at-form"' in admin_client.get(SNAPSHOTS).content.decode()
    found = admin_client.get(f"{ADMIN}/snapshot/restore/", {"at": between})
    assert found.status_code == 302
    confirm = admin_client.get(found["Location"])
    assert f"restore the snapshot “{morning.name}+0”" in text(confirm), "the point flushed then is shown"
    assert bh.kv.get("k") == "evening", "nothing is restored before it is confirmed"

    refused = admin_client.get(f"{ADMIN}/snapshot/restore/", {"at": "yesterday-ish"}, follow=True)
    assert "Cannot restore the state at “yesterday-ish”: 'yesterday-ish' is not a time" in messages_of(refused)[0]
    too_early = admin_client.get(f"{ADMIN}/snapshot/restore/", {"at": "2000-01-01T00:00:00Z"}, follow=True)
    assert "no restorable point was flushed at or before it" in messages_of(too_early)[0]


def test_the_snapshots_page_shows_the_points_a_page_at_a_time(bh, admin_client, monkeypatch) -> None:
    monkeypatch.setattr(SnapshotAdmin, "list_per_page", 2)
    for n in range(3):
        bh.kv.set("k", str(n))
        bh.force_flush()
    names = [e.name for e in bh.history.snapshots()]
    first, second = (admin_client.get(SNAPSHOTS, {"p": p}).content.decode() for p in (1, 2))
    assert re.findall(r'data-name="([^"]+)"', first) == names[:2]
    assert re.findall(r'data-name="([^"]+)"', second) == names[2:4]
    assert f"{len(names)} snapshots" in text(admin_client.get(SNAPSHOTS))
