"""BucketHeadStorage against the local backend and a moto S3 server over HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import re
import time
import tracemalloc
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3.session
import pytest
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import storages
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.db import models
from django.db.models.fields.files import FieldFile
from django.template import Context, Template
from django.test import Client, override_settings

from buckethead_django.engine import BucketConfig, BucketSQLite, ReadOnlyError
from buckethead_django.engine.objectstore import iter_objects
from buckethead_django.storage import BucketHeadStorage
from buckethead_django.testing import fresh_buckethead

from .conftest import s3_config
from .moto_server import CREDENTIALS, MotoServer
from .test_files import GeneratedStream

#: A URLconf without the buckethead_django URLs, for the misconfiguration test.
urlpatterns: list[Any] = []


def moto_options(moto: MotoServer, cfg: BucketConfig) -> dict[str, Any]:
    """Storage OPTIONS that point at the moto server and the engine's bucket."""
    return {
        "bucket_name": cfg.bucket,
        "endpoint_url": moto.endpoint_url,
        "region_name": "us-east-1",
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
    }


def moto_buckethead(moto: MotoServer, cfg: BucketConfig, **extra: Any) -> dict[str, Any]:
    """A BUCKETHEAD settings dict for the engine's bucket on the moto server."""
    return {
        "BACKEND": "s3",
        "BUCKET": cfg.bucket,
        "ENDPOINT_URL": moto.endpoint_url,
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        **extra,
    }


@dataclass
class Backend:
    """A storage, the engine it writes through, and a way to make more storages on the same bucket."""

    kind: str
    engine: BucketSQLite
    make: Callable[..., BucketHeadStorage]

    @property
    def storage(self) -> BucketHeadStorage:
        return self.make()

    def blobs(self) -> list[str]:
        """The blob objects really in the bucket (or directory)."""
        return sorted(o.key for o in iter_objects(self.engine.store, "files/"))


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "local":
        with fresh_buckethead() as engine:
            yield Backend("local", engine, BucketHeadStorage)
        return
    moto: MotoServer = request.getfixturevalue("moto")
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg) as engine:
        yield Backend("s3", engine, lambda **kw: BucketHeadStorage(**{**moto_options(moto, cfg), **kw}))


def sha256_of(name: str, storage: BucketHeadStorage) -> str:
    digest = hashlib.sha256()
    with storage.open(name) as f:
        for chunk in f.chunks():
            digest.update(chunk)
    return digest.hexdigest()


# -- the Storage API ---------------------------------------------------------------------


def test_save_open_exists_size_delete(backend: Backend) -> None:
    storage = backend.storage
    name = storage.save("docs/hello.txt", ContentFile(b"hello world"))
    assert name == "docs/hello.txt"
    assert storage.exists(name)
    assert not storage.exists("docs/other.txt")
    assert storage.size(name) == 11
    with storage.open(name) as f:
        assert f.name == "docs/hello.txt"
        assert f.read() == b"hello world"
    with storage.open(name, "r") as f:
        assert f.read() == "hello world"
    storage.delete(name)
    assert not storage.exists(name)
    backend.engine.force_flush()  # the object goes once a snapshot without its name is in the bucket
    assert backend.blobs() == []
    storage.delete(name)  # deleting a missing name is not an error, as in every Django storage


def test_missing_names_raise_file_not_found(backend: Backend) -> None:
    storage = backend.storage
    for call in (storage.open, storage.size, storage.get_modified_time, storage.get_created_time):
        with pytest.raises(FileNotFoundError):
            call("nope.txt")


# -- writing with open() -------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "data"), [("wb", b"x"), ("w+b", b"x"), ("w", "x"), ("wt", "x")])
def test_open_for_writing_stores_the_content_when_closed(backend: Backend, mode: str, data: bytes | str) -> None:
    storage = backend.storage
    with storage.open("notes/a.txt", mode) as f:
        f.write(data)
        assert not storage.exists("notes/a.txt"), "nothing is stored before the file is closed"
    assert f.closed
    assert f.name == "notes/a.txt"
    with storage.open("notes/a.txt") as f:
        assert f.read() == b"x"
    named = backend.engine.files.resolve("notes/a.txt")
    assert named is not None
    assert (named.size, named.content_type) == (1, "text/plain"), "typed from the name, as save() does"
    assert backend.blobs() == [f"files/{hashlib.sha256(b'x').hexdigest()}"]


def test_open_for_writing_goes_through_save_so_content_is_stored_once(backend: Backend) -> None:
    storage = backend.storage
    storage.save("saved.bin", ContentFile(b"shared bytes"))
    f = storage.open("written.bin", "wb")
    f.write(b"shared ")
    f.write(b"bytes")
    f.close()
    f.close()  # closing again stores nothing more
    assert storage.listdir("") == ([], ["saved.bin", "written.bin"])
    assert backend.blobs() == [f"files/{hashlib.sha256(b'shared bytes').hexdigest()}"]


def test_open_for_writing_text_stores_utf8(backend: Backend) -> None:
    storage = backend.storage
    with storage.open("cv.txt", "w") as f:
        f.write("résumé\r\nline two\n")
    with storage.open("cv.txt", "rb") as f:
        assert f.read() == "résumé\r\nline two\n".encode(), "UTF-8, newlines written as given"


def test_open_for_writing_a_file_larger_than_memory_spools_it(backend: Backend) -> None:
    storage = backend.make(max_memory_size=1024 * 1024)
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with storage.open("big.bin", "wb") as f:
        for _ in range(3):
            f.write(chunk)
    assert storage.size("big.bin") == 3 * len(chunk)
    assert sha256_of("big.bin", storage) == hashlib.sha256(chunk * 3).hexdigest()


def test_open_for_writing_a_taken_name_follows_file_overwrite(backend: Backend) -> None:
    keeping = backend.storage
    keeping.save("report.txt", ContentFile(b"first"))
    with keeping.open("report.txt", "wb") as f:
        f.write(b"second")
    assert f.name != "report.txt"
    assert f.name.startswith("report_"), "another free name, as save() chooses, reported by the file"
    with keeping.open("report.txt") as old, keeping.open(f.name) as new:
        assert (old.read(), new.read()) == (b"first", b"second")

    overwriting = backend.make(file_overwrite=True)
    created = overwriting.get_created_time("report.txt")
    with overwriting.open("report.txt", "wb") as f:
        f.write(b"third")
    assert f.name == "report.txt"
    with overwriting.open("report.txt") as f:
        assert f.read() == b"third"
    assert overwriting.get_created_time("report.txt") == created, "replaced in place, as save() does"
    backend.engine.force_flush()
    assert backend.blobs() == sorted(f"files/{hashlib.sha256(c).hexdigest()}" for c in (b"second", b"third"))


def test_a_with_block_that_fails_while_writing_stores_nothing(backend: Backend) -> None:
    def write_half(f: File) -> None:
        with f:
            f.write(b"half of it")
            raise RuntimeError("the rest never came")

    storage = backend.storage
    f = storage.open("half.txt", "wb")
    with pytest.raises(RuntimeError, match="the rest never came"):
        write_half(f)
    assert f.closed
    assert not storage.exists("half.txt")
    assert backend.blobs() == []


@pytest.mark.parametrize("mode", ["a", "ab", "a+b", "r+", "r+b", "x", "xb", "rw", "wbt", "wwb", "", "rb+"])
def test_unsupported_modes_say_what_to_do(backend: Backend, mode: str) -> None:
    storage = backend.storage
    storage.save("r.txt", ContentFile(b"r"))
    with pytest.raises(ValueError, match=re.escape(f"cannot open files in mode {mode!r}")) as err:
        storage.open("r.txt", mode)
    assert "open(name, 'wb')" in str(err.value), "the message says how to write instead"
    with storage.open("r.txt") as f:
        assert f.read() == b"r"


def test_listdir(backend: Backend) -> None:
    storage = backend.storage
    for name in ("top.txt", "docs/a.txt", "docs/b.txt", "docs/sub/c.txt"):
        storage.save(name, ContentFile(name.encode()))
    assert storage.listdir("") == (["docs"], ["top.txt"])
    assert storage.listdir("docs") == (["sub"], ["a.txt", "b.txt"])
    assert storage.listdir("docs/") == (["sub"], ["a.txt", "b.txt"])
    assert storage.listdir("empty") == ([], [])


def test_times_follow_use_tz(backend: Backend, settings: Any) -> None:
    storage = backend.make(file_overwrite=True)
    before = dt.datetime.now(dt.UTC)
    storage.save("t.txt", ContentFile(b"v1"))
    created = storage.get_created_time("t.txt")
    assert created.tzinfo is not None
    assert before - dt.timedelta(seconds=1) <= created <= dt.datetime.now(dt.UTC)
    assert storage.get_modified_time("t.txt") == created
    time.sleep(0.01)
    storage.save("t.txt", ContentFile(b"v2"))
    assert storage.get_created_time("t.txt") == created
    assert storage.get_modified_time("t.txt") > created
    settings.USE_TZ = False
    naive = storage.get_created_time("t.txt")
    assert naive.tzinfo is None
    assert naive == created.astimezone().replace(tzinfo=None), "naive times are local time, as Django's storages"


# -- names and blobs ---------------------------------------------------------------------


def test_identical_content_is_stored_once_and_deleted_with_its_last_name(backend: Backend) -> None:
    storage = backend.storage
    a = storage.save("a/photo.jpg", ContentFile(b"\xff\xd8 same picture"))
    b = storage.save("b/copy.jpg", ContentFile(b"\xff\xd8 same picture"))
    bh_key = hashlib.sha256(b"\xff\xd8 same picture").hexdigest()
    assert backend.blobs() == [f"files/{bh_key}"]
    storage.delete(a)
    assert backend.blobs() == [f"files/{bh_key}"], "b/copy.jpg still uses the blob"
    with storage.open(b) as f:
        assert f.read() == b"\xff\xd8 same picture"
    storage.delete(b)
    backend.engine.force_flush()
    assert backend.blobs() == []


def test_a_taken_name_gets_an_alternative_name(backend: Backend) -> None:
    storage = backend.storage
    first = storage.save("report.pdf", ContentFile(b"first"))
    assert storage.get_available_name("report.pdf") != "report.pdf"
    assert storage.get_available_name("free.pdf") == "free.pdf"
    second = storage.save("report.pdf", ContentFile(b"second"))
    assert first == "report.pdf"
    assert second != first
    assert second.startswith("report_")
    assert second.endswith(".pdf")
    with storage.open(first) as f:
        assert f.read() == b"first", "nothing is overwritten silently"
    with storage.open(second) as f:
        assert f.read() == b"second"


def test_a_name_taken_after_it_was_chosen_is_chosen_again(backend: Backend) -> None:
    """``_save`` is what runs after get_available_name(); a name taken in between must not be overwritten."""
    storage = backend.storage
    storage.save("race.txt", ContentFile(b"winner"))
    again = storage._save("race.txt", ContentFile(b"loser"))
    assert again != "race.txt"
    with storage.open(again) as f:
        assert f.read() == b"loser"
    with pytest.raises(FileExistsError):
        storage._save("race.txt", File(GeneratedStream(10), name="race.txt"))  # a one-way stream cannot be re-read
    with storage.open("race.txt") as f:
        assert f.read() == b"winner"


def test_file_overwrite_replaces_content_and_drops_the_unused_blob(backend: Backend) -> None:
    storage = backend.make(file_overwrite=True)
    assert storage.save("avatar.png", ContentFile(b"old")) == "avatar.png"
    assert storage.get_available_name("avatar.png") == "avatar.png"
    assert storage.save("avatar.png", ContentFile(b"new")) == "avatar.png"
    with storage.open("avatar.png") as f:
        assert f.read() == b"new"
    backend.engine.force_flush()
    assert backend.blobs() == [f"files/{hashlib.sha256(b'new').hexdigest()}"]


TRAVERSAL = ["../escape.txt", "a/../../escape.txt", "a/../b.txt", "/etc/passwd", "..\\escape.txt", "docs/../.."]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_traversal_and_absolute_names_are_rejected_everywhere(backend: Backend, name: str) -> None:
    storage = backend.storage
    storage.save("b.txt", ContentFile(b"innocent"))
    calls: list[Callable[[], object]] = [
        lambda: storage.save(name, ContentFile(b"evil")),
        lambda: storage._save(name, ContentFile(b"evil")),
        lambda: storage.open(name),
        lambda: storage.open(name, "wb"),
        lambda: storage.exists(name),
        lambda: storage.delete(name),
        lambda: storage.url(name),
        lambda: storage.size(name),
        lambda: storage.get_modified_time(name),
        lambda: storage.get_created_time(name),
        lambda: storage.get_available_name(name),
        lambda: storage.listdir(name),
    ]
    for call in calls:
        with pytest.raises(SuspiciousFileOperation):
            call()
    assert backend.blobs() == [f"files/{hashlib.sha256(b'innocent').hexdigest()}"]
    assert storage.exists("b.txt")


def test_a_read_only_engine_refuses_writes_before_uploading(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    for cfg in (BucketConfig.local(tmp_path / "bucket"), s3_config(request.getfixturevalue("moto"))):
        options = {} if cfg.is_local else moto_options(request.getfixturevalue("moto"), cfg)
        with fresh_buckethead(config=cfg):
            BucketHeadStorage(**options).save("kept.txt", ContentFile(b"kept"))
        with fresh_buckethead(config=cfg, read_only_reason="this process is a reader") as view:
            storage = BucketHeadStorage(**options)
            assert storage.exists("kept.txt")
            with pytest.raises(ReadOnlyError, match="this process is a reader"):
                storage.save("new.txt", ContentFile(b"new content"))
            with pytest.raises(ReadOnlyError, match="this process is a reader"):
                storage.open("new.txt", "wb")  # refused at once, not when the written content is saved
            with pytest.raises(ReadOnlyError):
                storage.delete("kept.txt")
            assert [o.key for o in iter_objects(view.store, "files/")] == [
                f"files/{hashlib.sha256(b'kept').hexdigest()}"
            ]
            with storage.open("kept.txt") as f:
                assert f.read() == b"kept"


def test_an_upload_already_on_disk_is_stored_from_its_temporary_file(backend: Backend) -> None:
    upload = TemporaryUploadedFile("scan.pdf", "application/pdf", 9, None)
    upload.write(b"%PDF scan")
    upload.flush()
    name = backend.storage.save("scans/scan.pdf", upload)
    upload.close()
    with backend.storage.open(name) as f:
        assert f.read() == b"%PDF scan"


def test_a_100_mb_upload_streams_with_bounded_memory(backend: Backend) -> None:
    size = 100 * 1024 * 1024
    expected = hashlib.sha256()
    source = GeneratedStream(size)
    while chunk := source.read(1024 * 1024):
        expected.update(chunk)
    storage = backend.storage
    tracemalloc.start()
    try:
        name = storage.save("big/video.bin", File(GeneratedStream(size), name="video.bin"))
        _, save_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = sha256_of(name, storage)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert storage.size(name) == size
    assert digest == expected.hexdigest()
    assert backend.blobs() == [f"files/{expected.hexdigest()}"]
    # Typically 2 to 10 MiB; the bound leaves room for a busy machine while staying far below the 100 MiB
    # that holding the file would take.
    assert save_peak < 48 * 1024 * 1024, f"saving 100 MiB peaked at {save_peak / 2**20:.0f} MiB of Python memory"
    assert read_peak < 48 * 1024 * 1024, f"reading 100 MiB peaked at {read_peak / 2**20:.0f} MiB of Python memory"


# -- URLs: S3 ----------------------------------------------------------------------------


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


CSV = b"a,b\n1,2\n"


@pytest.mark.parametrize(
    ("name", "disposition"),
    [
        ("reports/q1.csv", 'inline; filename="q1.csv"'),
        ("reports/résumé 2024.csv", "inline; filename*=utf-8''r%C3%A9sum%C3%A9%202024.csv"),
    ],
)
def test_s3_url_downloads_the_bytes_under_the_original_filename(moto: MotoServer, name: str, disposition: str) -> None:
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg):
        storage = BucketHeadStorage(**moto_options(moto, cfg))
        saved = storage.save(name, ContentFile(CSV))
        storage.save("elsewhere/data.bin", ContentFile(CSV))  # same blob, another name and type
        url = storage.url(saved)
        assert url.startswith(f"{moto.endpoint_url}/{cfg.bucket}/files/{hashlib.sha256(CSV).hexdigest()}?")
        assert "X-Amz-Signature=" in url
        status, headers, body = fetch(url)
        assert (status, body) == (200, CSV)
        assert headers["content-disposition"] == disposition
        assert headers["content-type"] == "text/csv"
        _, other, _ = fetch(storage.url("elsewhere/data.bin"))
        assert other["content-disposition"] == 'inline; filename="data.bin"'
        assert other["content-type"] == "application/octet-stream"


def test_s3_url_expiry_and_caller_parameters(moto: MotoServer) -> None:
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg):
        storage = BucketHeadStorage(**moto_options(moto, cfg), querystring_expire=120)
        storage.save("f.txt", ContentFile(b"x"))
        assert "X-Amz-Expires=120" in storage.url("f.txt")
        assert "X-Amz-Expires=30" in storage.url("f.txt", expire=30)
        url = storage.url("f.txt", parameters={"ResponseContentDisposition": 'attachment; filename="f.txt"'})
        assert fetch(url)[1]["content-disposition"] == 'attachment; filename="f.txt"'


def test_object_parameters_and_content_type_reach_the_blob(moto: MotoServer) -> None:
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg):
        storage = BucketHeadStorage(**moto_options(moto, cfg), object_parameters={"CacheControl": "max-age=86400"})
        storage.save("site.css", ContentFile(b"body{}"))
        bh_key = hashlib.sha256(b"body{}").hexdigest()
        head = moto.client().head_object(Bucket=cfg.bucket, Key=f"files/{bh_key}")
        assert (head["CacheControl"], head["ContentType"]) == ("max-age=86400", "text/css")
        assert fetch(storage.url("site.css"))[1]["cache-control"] == "max-age=86400"


def test_custom_domain_urls_address_the_blob(moto: MotoServer) -> None:
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg):
        storage = BucketHeadStorage(**moto_options(moto, cfg), custom_domain="cdn.example.com")
        storage.save("img/logo.svg", ContentFile(b"<svg/>"))
        bh_key = hashlib.sha256(b"<svg/>").hexdigest()
        assert storage.url("img/logo.svg") == f"https://cdn.example.com/files/{bh_key}"


def test_s3_storage_configured_from_buckethead_settings(moto: MotoServer) -> None:
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg), override_settings(BUCKETHEAD=moto_buckethead(moto, cfg)):
        storage = BucketHeadStorage()
        assert (storage.bucket_name, storage.endpoint_url) == (cfg.bucket, moto.endpoint_url)
        storage.save("from-settings.txt", ContentFile(b"configured"))
        assert fetch(storage.url("from-settings.txt"))[2] == b"configured"


def test_storage_options_override_buckethead(moto: MotoServer) -> None:
    cfg = s3_config(moto)
    buckethead = moto_buckethead(moto, cfg, QUERYSTRING_EXPIRE=100, FILE_OVERWRITE=False)
    backend = {"BACKEND": "buckethead_django.storage.BucketHeadStorage"}
    # Not the "default" alias: Django 4.2's override_settings(STORAGES=...) drops the default alias's OPTIONS.
    with (
        fresh_buckethead(config=cfg),
        override_settings(
            BUCKETHEAD=buckethead,
            STORAGES={
                "default": backend,
                "media": {**backend, "OPTIONS": {"querystring_expire": 42, "file_overwrite": True}},
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
            },
        ),
    ):
        media, plain = storages["media"], storages["default"]
        assert isinstance(media, BucketHeadStorage)
        media.save("o.txt", ContentFile(b"one"))
        assert media.save("o.txt", ContentFile(b"two")) == "o.txt", "OPTIONS file_overwrite wins"
        assert "X-Amz-Expires=42" in media.url("o.txt")
        assert plain.save("o.txt", ContentFile(b"three")) != "o.txt", "BUCKETHEAD FILE_OVERWRITE applies"
        assert "X-Amz-Expires=100" in plain.url("o.txt")


def test_r2_defaults_come_from_the_engine_settings() -> None:
    r2 = {"BACKEND": "s3", "BUCKET": "media", "ACCOUNT_ID": "a" * 32, "ACCESS_KEY_ID": "k", "SECRET_ACCESS_KEY": "s"}
    with override_settings(BUCKETHEAD=r2):
        storage = BucketHeadStorage()
    assert storage.endpoint_url == f"https://{'a' * 32}.r2.cloudflarestorage.com"
    assert (storage.bucket_name, storage.region_name) == ("media", "auto")
    assert (storage.access_key, storage.secret_key) == ("k", "s")
    assert storage.default_acl is None, "R2 has no ACLs"
    assert storage.client_config.signature_version == "s3v4"
    assert storage.client_config.request_checksum_calculation == "when_required"
    assert storage.client_config.response_checksum_validation == "when_required"
    assert storage.location == ""


def test_a_storage_on_another_bucket_than_the_engine_is_refused(moto: MotoServer) -> None:
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg):
        storage = BucketHeadStorage(**{**moto_options(moto, cfg), "bucket_name": "somewhere-else"})
        with pytest.raises(ImproperlyConfigured, match="somewhere-else"):
            storage.exists("x.txt")


def test_a_storage_naming_a_bucket_while_buckethead_stores_files_locally_is_refused() -> None:
    """Only the storage's OPTIONS point at S3: its files would silently stay on local disk."""
    backend = {"BACKEND": "buckethead_django.storage.BucketHeadStorage"}
    options = {"bucket_name": "media", "endpoint_url": "https://s3.example.com", "access_key": "k", "secret_key": "s"}
    with (
        fresh_buckethead() as engine,
        override_settings(
            STORAGES={
                "default": backend,
                "media": {**backend, "OPTIONS": options},
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
            }
        ),
    ):
        media = storages["media"]
        with pytest.raises(ImproperlyConfigured) as err:
            media.save("report.pdf", ContentFile(b"quarterly numbers"))
        with pytest.raises(ImproperlyConfigured):
            media.exists("report.pdf")
        assert list(iter_objects(engine.store, "files/")) == [], "nothing was stored on local disk instead"
        assert not engine.files.name_exists("report.pdf")
    message = str(err.value)
    assert "names bucket 'media'" in message
    assert "local backend" in message
    assert "BUCKETHEAD['BACKEND'] = 's3' and BUCKETHEAD['BUCKET'] = 'media'" in message, "it says what to set"
    assert "To keep files on local disk, remove those options" in message


def test_under_tests_the_storage_of_an_s3_project_works_on_the_throwaway_engine() -> None:
    """The test engine stands in for the configured bucket: the storage is only refused if it names another one."""
    s3 = {"BACKEND": "s3", "BUCKET": "media", "ENDPOINT_URL": "https://s3.example.com", "REGION": "us-east-1"}
    with fresh_buckethead() as engine, override_settings(BUCKETHEAD=s3):
        storage = BucketHeadStorage()
        assert storage.bucket_name == "media"
        name = storage.save("notes/a.txt", ContentFile(b"in a test"))
        with storage.open(name) as f:
            assert f.read() == b"in a test"
        assert [o.key for o in iter_objects(engine.store, "files/")] == [
            f"files/{hashlib.sha256(b'in a test').hexdigest()}"
        ]
        same = BucketHeadStorage(bucket_name="media")
        assert same.exists(name)
        with pytest.raises(
            ImproperlyConfigured, match="reads bucket 'elsewhere' but BUCKETHEAD\\['BUCKET'\\] is 'media'"
        ):
            BucketHeadStorage(bucket_name="elsewhere").exists(name)


def test_a_bucket_set_without_the_s3_backend_is_not_the_storage_bucket() -> None:
    """BACKEND decides: with 'local', a BUCKET left in the environment names no bucket for the storage either."""
    with fresh_buckethead(), override_settings(BUCKETHEAD={"BUCKET": "media"}):
        storage = BucketHeadStorage()
        assert storage.bucket_name is None
        assert storage.save("local.txt", ContentFile(b"local")) == "local.txt"


@pytest.mark.parametrize(("option", "message"), [({"location": "media"}, "location"), ({"gzip": True}, "gzip")])
def test_unsupported_options_are_refused(option: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        BucketHeadStorage(**option)


# -- URLs: local ---------------------------------------------------------------------------


@pytest.fixture
def local() -> Iterator[BucketHeadStorage]:
    with fresh_buckethead():
        yield BucketHeadStorage()


def test_local_url_is_served_by_the_signed_view(local: BucketHeadStorage, client: Client) -> None:
    local.save("docs/résumé.pdf", ContentFile(b"%PDF-1.7"))
    url = local.url("docs/résumé.pdf")
    assert url.startswith("/buckethead/files/")
    assert url.endswith("/r%C3%A9sum%C3%A9.pdf")
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"%PDF-1.7"
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == "inline; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"
    assert response["Content-Length"] == "8"
    assert response["Content-Security-Policy"] == "sandbox"


def test_local_url_keeps_each_names_filename_and_type(local: BucketHeadStorage, client: Client) -> None:
    local.save("a.txt", ContentFile(b"same"))
    local.save("b.json", ContentFile(b"same"))
    response = client.get(local.url("b.json"))
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'inline; filename="b.json"'


def test_local_url_refuses_tampered_and_expired_links(
    local: BucketHeadStorage, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.save("secret.txt", ContentFile(b"secret"))
    local.save("other.txt", ContentFile(b"other"))
    url = local.url("secret.txt", expire=60)
    prefix, token, filename = url.rsplit("/", 2)
    tampered_token = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get(f"{prefix}/{tampered_token}/{filename}").status_code == 403
    other_token = local.url("other.txt").rsplit("/", 2)[1]
    assert client.get(f"{prefix}/{other_token}/secret.txt").status_code == 403, "a token is bound to its filename"
    assert client.get(url).status_code == 200
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)
    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 405


def test_local_url_of_a_deleted_last_name_is_gone(local: BucketHeadStorage, client: Client) -> None:
    local.save("gone.txt", ContentFile(b"gone"))
    url = local.url("gone.txt")
    local.delete("gone.txt")
    assert client.get(url).status_code == 404


def test_local_url_without_the_app_urls_says_what_to_add(local: BucketHeadStorage) -> None:
    local.save("x.txt", ContentFile(b"x"))
    missing = r"include\(\"buckethead_django\.urls\"\)"
    for name in ("x.txt", "missing.txt"):
        with override_settings(ROOT_URLCONF=__name__), pytest.raises(ImproperlyConfigured, match=missing):
            local.url(name)


def test_the_local_backend_never_touches_boto3(
    local: BucketHeadStorage, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("boto3 was used with the local backend")

    monkeypatch.setattr(boto3.session.Session, "client", refuse)
    monkeypatch.setattr(boto3.session.Session, "resource", refuse)
    local.save("a/b.txt", ContentFile(b"local only"))
    assert local.exists("a/b.txt")
    assert local.listdir("a") == ([], ["b.txt"])
    with local.open("a/b.txt") as f:
        assert f.read() == b"local only"
    assert b"".join(client.get(local.url("a/b.txt")).streaming_content) == b"local only"
    local.delete("a/b.txt")


# -- URLs of names that have no file ---------------------------------------------------------


def rendered_url(storage: BucketHeadStorage, name: str) -> str:
    """``{{ doc.file.url }}`` in a template, as a page renders a model's file field."""
    doc = SimpleNamespace(file=FieldFile(None, models.FileField(storage=storage), name))
    return html.unescape(Template("{{ doc.file.url }}").render(Context({"doc": doc})))


def test_the_url_of_a_missing_name_renders_and_answers_404(backend: Backend, client: Client) -> None:
    """A restore or a lost row must not turn a page into a 500: url() never checks that the file exists."""
    storage = backend.storage
    url = storage.url("missing.txt")
    assert isinstance(url, str)
    assert client.get(url).status_code == 404
    assert client.get(rendered_url(storage, "docs/lost report.pdf")).status_code == 404


def test_the_link_of_a_missing_name_looks_the_name_up_when_fetched(
    backend: Backend, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = backend.storage
    url = storage.url("later/data.json", expire=60)
    assert client.get(url).status_code == 404
    storage.save("later/data.json", ContentFile(b'{"a": 1}'))
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b'{"a": 1}'
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'inline; filename="data.json"'
    assert response["Content-Security-Policy"] == "sandbox"
    assert "no-cache" in response["Cache-Control"], "what the name holds may change while the link lives"
    storage.delete("later/data.json")
    assert client.get(url).status_code == 404

    prefix, token, _ = url.rsplit("/", 2)
    assert client.get(f"{prefix}/{token}/other.json").status_code == 403, "a token is bound to its filename"
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)
    assert client.get(url).status_code == 403


def test_the_s3_url_of_a_missing_name_without_the_app_urls_answers_404(moto: MotoServer) -> None:
    """S3 projects need not include the app's URLs: the bucket itself answers 404 then."""
    cfg = s3_config(moto)
    with fresh_buckethead(config=cfg), override_settings(ROOT_URLCONF=__name__):
        storage = BucketHeadStorage(**moto_options(moto, cfg))
        url = rendered_url(storage, "docs/lost report.pdf")
        assert url.startswith(f"{moto.endpoint_url}/{cfg.bucket}/files/missing/docs/lost%20report.pdf?")
        with pytest.raises(urllib.error.HTTPError) as err:
            fetch(url)
        assert err.value.code == 404
