"""BucketHeadStorage: a Django storage whose file names map to content-addressed blobs.

It is django-storages' `S3Storage`, so its presigned URLs, custom domains,
CloudFront signing, object parameters and `S3File` reads behave as documented
there, and every option can be overridden per instance in
``STORAGES[...]["OPTIONS"]``. What differs is where names live: a name is a
row in the engine's FileStore (``bh_file_names``) that points at a blob
stored once by content, so identical uploads share one object and a blob is
deleted with the last name that uses it. Writes, existence checks, listings
and deletions therefore go through the engine (one upload path, no bucket
listing or HEAD request); reads and URLs address the blob object directly.

With the local backend the blobs are files in the engine's directory and
`url()` returns a signed, expiring link to `views.serve_file`; boto3 is
never called.

As in Django's other storages, `url()` never checks that a file exists, and
`open()` writes as well as reads: a file opened for writing is saved like
`save()` when it is closed.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import posixpath
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import File
from django.core.files.utils import validate_file_name
from django.urls import NoReverseMatch, reverse
from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage
from storages.utils import ReadBytesWrapper, clean_name, is_seekable

from .conf import BucketHeadSettings, get_settings
from .engine import BucketSQLite, ObjectNotFound, ReadOnlyError
from .engine.interfaces import InvalidName, NamedFile, NameTaken, validate_name
from .engine.objectstore import Source
from .engine.objectstore.s3 import botocore_config, transfer_config
from .runtime import get_buckethead

_URL_SALT = "buckethead_django.storage.SignedBlob"
_NAME_URL_SALT = "buckethead_django.storage.SignedName"
#: Below FILES_PREFIX, where no blob can be (blob keys are bare SHA-256 digests): what S3 URLs of missing names name.
_MISSING_PREFIX = "missing/"


class BucketHeadStorage(S3Storage):
    """A Django storage on the BucketHead engine's FileStore, built on django-storages' S3Storage.

    Defaults come from ``settings.BUCKETHEAD`` (see `get_default_settings`);
    keyword arguments, i.e. ``STORAGES[...]["OPTIONS"]``, win over them.
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if self.location:
            raise ImproperlyConfigured(
                "BucketHeadStorage does not support 'location': names are not bucket keys, and blobs live under "
                "BUCKETHEAD['FILES_PREFIX']. Put a directory in the file field's upload_to instead."
            )
        if self.gzip:
            raise ImproperlyConfigured(
                "BucketHeadStorage does not support 'gzip': blobs are stored byte for byte as saved, so that "
                "identical uploads share one blob and every backend reads them back the same way."
            )
        #: The bucket BUCKETHEAD stores files in (None with the local backend), which a local test engine stands for.
        self._configured_bucket = _configured_bucket(get_settings())

    def get_default_settings(self) -> dict[str, Any]:
        """django-storages' defaults, with the bucket, credentials and URL options taken from ``BUCKETHEAD``.

        ``client_config`` is the engine's botocore config (s3v4 signatures,
        checksums only when required, which R2 needs); django-storages
        ignores ``signature_version`` and ``addressing_style`` when it is set,
        so pass a whole ``client_config`` to change them. No ACL is sent, as
        R2 has none. ``max_memory_size`` is Django's upload threshold, so
        `open()` spools large objects to disk instead of memory (django-storages'
        default, 0, never does).
        """
        conf = get_settings()
        values = conf.values
        # A broken configuration is reported by `manage.py check`, and the engine refuses to start on it.
        cfg = None if conf.errors else conf.bucket_config()
        return {
            **super().get_default_settings(),
            "bucket_name": _configured_bucket(conf),
            "endpoint_url": cfg.endpoint_url if cfg else values["ENDPOINT_URL"],
            "region_name": cfg.region if cfg else values["REGION"],
            "access_key": values["ACCESS_KEY_ID"],
            "secret_key": values["SECRET_ACCESS_KEY"],
            "security_token": values["SESSION_TOKEN"],
            "session_profile": None,
            "custom_domain": values["CUSTOM_DOMAIN"],
            "querystring_auth": True,
            "querystring_expire": values["QUERYSTRING_EXPIRE"],
            "file_overwrite": values["FILE_OVERWRITE"],
            "location": "",
            "default_acl": None,
            "client_config": botocore_config(cfg) if cfg else None,
            "transfer_config": transfer_config(cfg) if cfg else None,
            "max_memory_size": settings.FILE_UPLOAD_MAX_MEMORY_SIZE,
        }

    # -- helpers -------------------------------------------------------------------

    def _engine(self) -> BucketSQLite:
        """The process's engine, after checking that this storage reads the bucket the engine writes.

        A local engine writes no bucket at all, so a storage that names one
        would silently keep every file on local disk; it is refused, unless
        it names the configured bucket that a test run's throwaway engine
        stands in for.
        """
        engine = get_buckethead()
        bucket = self.bucket_name or None
        if not engine.config.is_local:
            if bucket != engine.config.bucket:
                raise ImproperlyConfigured(
                    f"BucketHeadStorage reads bucket {bucket!r} but the BucketHead engine stores files in "
                    f"{engine.config.bucket!r}. Remove 'bucket_name' from the storage OPTIONS, or make it match "
                    "BUCKETHEAD['BUCKET']."
                )
        elif bucket is not None and bucket != self._configured_bucket:
            if self._configured_bucket is not None:
                raise ImproperlyConfigured(
                    f"BucketHeadStorage reads bucket {bucket!r} but BUCKETHEAD['BUCKET'] is "
                    f"{self._configured_bucket!r}. Remove 'bucket_name' from the storage OPTIONS, or make it match "
                    "BUCKETHEAD['BUCKET']."
                )
            raise ImproperlyConfigured(
                f"BucketHeadStorage names bucket {bucket!r} in its OPTIONS, but BucketHead uses the local backend "
                f"({engine.store.describe()}), so no file would ever reach that bucket. To store files in it, set "
                f"BUCKETHEAD['BACKEND'] = 's3' and BUCKETHEAD['BUCKET'] = {bucket!r} (with its ENDPOINT_URL or "
                "ACCOUNT_ID and credentials: the storage takes them from there) and remove the bucket options "
                "(bucket_name, endpoint_url, credentials) from the storage OPTIONS. To keep files on local disk, "
                "remove those options instead."
            )
        return engine

    def _name(self, name: str | os.PathLike[str]) -> str:
        """The stored form of a file name; '..' parts and absolute paths raise SuspiciousFileOperation.

        Checked before django-storages' `clean_name` runs, because its
        normalisation would silently turn ``a/../b`` into ``b``.
        """
        name = str(name)
        validate_file_name(name, allow_relative_path=True)
        try:
            return validate_name(clean_name(name))
        except InvalidName as exc:
            raise SuspiciousFileOperation(str(exc)) from exc

    def _resolve(self, engine: BucketSQLite, name: str) -> NamedFile:
        named = engine.files.resolve(self._name(name))
        if named is None:
            raise FileNotFoundError(f"File does not exist: {name}")
        return named

    # -- Storage API -----------------------------------------------------------------

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        """A free name (or ``name`` itself with ``file_overwrite``), refusing traversal on every Django version."""
        self._name(name)
        return super().get_available_name(name, max_length)

    def _save(self, name: str, content: File) -> str:
        """Store ``content`` under ``name`` through the engine: hashed, deduplicated, streamed via a temporary file."""
        name = self._name(name)
        files = self._engine().files
        params = self._get_write_parameters(name, content)
        content_type = params.pop("ContentType")
        while True:
            if is_seekable(content):
                content.seek(0)
            try:
                files.save_name(
                    name, _source(content), content_type=content_type, extra=params, overwrite=self.file_overwrite
                )
            except NameTaken:
                # Taken since get_available_name() chose it: choose again, as FileSystemStorage does,
                # unless the content was a one-way stream that the first attempt may have consumed.
                if not is_seekable(content):
                    raise
                name = self._name(self.get_available_name(name))
            else:
                return name

    def _open(self, name: str, mode: str = "rb") -> File:
        """Read a file: the local blob file, or django-storages' S3File on the blob object (spooled, seekable).

        Or write one (``"wb"``, ``"w"``, ``"w+b"``): a `BucketHeadWriteFile`,
        saved through `save()` when it is closed, because a blob's key is the
        hash of its whole content.
        """
        writing = _is_write_mode(mode)
        engine = self._engine()
        if writing:
            name = self._name(name)
            if engine.read_only_reason is not None:  # refused now, not once the content has been written
                raise ReadOnlyError(engine.read_only_reason)
            return BucketHeadWriteFile(self, name, mode)
        named = self._resolve(engine, name)
        if not engine.config.is_local:
            s3_file = super()._open(named.object_key, mode)
            s3_file.name = named.name
            return s3_file
        try:
            stream: Any = engine.files.open(named.bh_key)
        except ObjectNotFound:
            raise FileNotFoundError(f"File {name!r} has no blob {named.object_key!r} in the bucket") from None
        if "b" not in mode:
            stream = io.TextIOWrapper(stream, encoding="utf-8")
        return File(stream, name=named.name)

    def exists(self, name: str) -> bool:
        return self._engine().files.name_exists(self._name(name))

    def delete(self, name: str) -> None:
        """Remove the name; its blob is deleted too when no other name uses it. A missing name is not an error."""
        self._engine().files.delete_name(self._name(name))

    def size(self, name: str) -> int:
        return self._resolve(self._engine(), name).size

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        path = str(path)
        directory = "" if path in ("", ".") else self._name(path.rstrip("/"))
        return self._engine().files.listdir(directory)

    def get_created_time(self, name: str) -> dt.datetime:
        """When the name was first saved (replacing it with ``file_overwrite`` keeps this time)."""
        return _datetime(self._resolve(self._engine(), name).created_at)

    def get_modified_time(self, name: str) -> dt.datetime:
        """When the name was last saved."""
        return _datetime(self._resolve(self._engine(), name).modified_at)

    def url(
        self,
        name: str,
        parameters: dict[str, Any] | None = None,
        expire: int | None = None,
        http_method: str | None = None,
    ) -> str:
        """A URL that downloads the file under its own filename and content type.

        S3/R2: a presigned GET of the blob object (with a custom domain, the
        plain or CloudFront-signed domain URL, which serves the blob's stored
        headers). Local: a signed link to `views.serve_file`. Both expire
        after ``expire`` seconds (default ``querystring_expire``).

        Like Django's other storages it never fails for a missing file (after
        a restore, say), so that rendering ``{{ doc.file.url }}`` cannot fail
        a page: a name with no file gets a URL that answers 404 (see
        `_missing_url`).
        """
        engine = self._engine()
        name = self._name(name)
        named = engine.files.resolve(name)
        expire = self.querystring_expire if expire is None else expire
        if named is None:
            return self._missing_url(engine, name, expire, http_method)
        filename = posixpath.basename(named.name)
        content_type = named.content_type or self.default_content_type
        if engine.config.is_local:
            return SignedBlob(named.bh_key, filename, content_type, int(time.time() + expire)).url()
        if self.custom_domain:
            return super().url(named.object_key, parameters, expire, http_method)
        params = {
            "ResponseContentType": content_type,
            "ResponseContentDisposition": content_disposition_header(False, filename),
            **(parameters or {}),
        }
        return super().url(named.object_key, params, expire, http_method)

    def _missing_url(self, engine: BucketSQLite, name: str, expire: int, http_method: str | None) -> str:
        """The URL of a name with no file: it answers 404, as a missing file's URL does in Django's other storages.

        It is a signed link to `views.serve_file` that looks the name up when
        it is fetched, so it serves the file once the name has one again.
        S3 projects need not include the app's URLs; without them this is a
        presigned GET of a key below ``FILES_PREFIX`` that no blob can have,
        which the bucket answers 404 to (403 on AWS without ``s3:ListBucket``).
        """
        try:
            return SignedName(name, int(time.time() + expire)).url()
        except ImproperlyConfigured:
            if engine.config.is_local:
                raise  # every local URL needs the app's URLs
            return super().url(f"{engine.config.files_prefix}{_MISSING_PREFIX}{name}", None, expire, http_method)


class BucketHeadWriteFile(File):
    """A file opened for writing: spooled locally, then saved like `save()` when it is closed.

    As with django-storages' S3File, nothing is stored before `close()`
    (leaving the ``with`` block closes it): a blob's key is the hash of the
    whole content. Unlike it, a ``with`` block left by an exception stores
    nothing, so a failed write never leaves a partial file under the name.
    After closing, ``name`` is the name the content was stored under, which
    differs when the name was taken and the storage does not overwrite.
    """

    def __init__(self, storage: BucketHeadStorage, name: str, mode: str) -> None:
        self._storage = storage
        # Memory up to max_memory_size, disk beyond, like S3File and Django's uploads.
        self._spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close() or discard()
            max_size=storage.max_memory_size, suffix=".BucketHead", dir=settings.FILE_UPLOAD_TEMP_DIR
        )
        # Text is written as UTF-8, the encoding open(name, "r") reads, with newlines kept as written.
        stream: Any = self._spool if "b" in mode else io.TextIOWrapper(self._spool, encoding="utf-8", newline="")
        super().__init__(stream, name)
        self.mode = mode

    def close(self) -> None:
        """Save what was written (once: closing again does nothing), then drop the local copy."""
        if self.closed:
            return
        try:
            self.file.flush()
            self.name = self._storage.save(self.name, File(self._spool, name=self.name))
        finally:
            self.discard()

    def discard(self) -> None:
        """Close without saving anything."""
        self.file.close()  # a text wrapper closes the spool too
        self._spool.close()

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


@dataclass(frozen=True)
class SignedName:
    """What the local link of a name that had no file grants: whatever the name holds when fetched, until a deadline.

    The name is looked up by the view, so the link answers 404 while the
    name has no file, and serves the file once it has one, as a missing
    file's URL does in Django's other storages.
    """

    name: str
    expires_at: int

    @property
    def filename(self) -> str:
        return posixpath.basename(self.name)

    def token(self) -> str:
        return signing.dumps([self.name, self.expires_at], salt=_NAME_URL_SALT, compress=True)

    def url(self) -> str:
        return _file_view_url(self.token(), self.filename)

    @classmethod
    def from_token(cls, token: str) -> SignedName:
        """The grant in ``token``; `signing.BadSignature` if it was altered, `signing.SignatureExpired` if stale."""
        name, expires_at = signing.loads(token, salt=_NAME_URL_SALT)
        if time.time() > expires_at:
            raise signing.SignatureExpired(f"the link expired at {expires_at}")
        return cls(name, int(expires_at))


def file_grant(token: str) -> SignedBlob | SignedName:
    """What a file link's token grants; `signing.BadSignature` if it is not a valid token, `SignatureExpired` if stale.

    The two kinds are signed with different salts, so neither can pass for the other.
    """
    try:
        return SignedBlob.from_token(token)
    except signing.SignatureExpired:
        raise
    except signing.BadSignature:
        return SignedName.from_token(token)


@dataclass(frozen=True)
class SignedBlob:
    """What a local file URL grants: one blob, under one filename and content type, until a deadline.

    The deadline travels inside the signed value rather than being checked
    with ``max_age`` at the view, so each storage instance (and each `url()`
    call) can choose its own lifetime.
    """

    bh_key: str
    filename: str
    content_type: str
    expires_at: int

    def token(self) -> str:
        return signing.dumps(
            [self.bh_key, self.filename, self.content_type, self.expires_at], salt=_URL_SALT, compress=True
        )

    def url(self) -> str:
        return _file_view_url(self.token(), self.filename)

    @classmethod
    def from_token(cls, token: str) -> SignedBlob:
        """The grant in ``token``; `signing.BadSignature` if it was altered, `signing.SignatureExpired` if stale."""
        bh_key, filename, content_type, expires_at = signing.loads(token, salt=_URL_SALT)
        if time.time() > expires_at:
            raise signing.SignatureExpired(f"the link expired at {expires_at}")
        return cls(bh_key, filename, content_type, int(expires_at))


def _file_view_url(token: str, filename: str) -> str:
    """The path of `views.serve_file` for a grant; `ImproperlyConfigured`, naming the line to add, without it."""
    try:
        return reverse("buckethead_django:file", kwargs={"token": token, "filename": filename})
    except NoReverseMatch:
        raise ImproperlyConfigured(
            "BucketHeadStorage.url() with the local backend links to the buckethead_django file view: add "
            'path("buckethead/", include("buckethead_django.urls")) to your ROOT_URLCONF.'
        ) from None


def _is_write_mode(mode: str) -> bool:
    """Whether ``mode`` writes a file whole (True) or reads it (False); any other mode raises a ValueError.

    A name stands for one immutable blob, so there is no appending or updating in place.
    """
    chars = set(mode)
    if len(chars) == len(mode) and not {"b", "t"} <= chars:
        if "r" in chars and chars <= {"r", "b", "t"}:
            return False
        if "w" in chars and chars <= {"w", "b", "t", "+"}:
            return True
    raise ValueError(
        f"BucketHeadStorage cannot open files in mode {mode!r}: a file is read ('rb', 'r') or written whole "
        "('wb', 'w', 'w+b'), because each name stands for one stored content. To append to or change a file, "
        "read it, then write the new content whole with open(name, 'wb') (or save()) on a storage with "
        "file_overwrite=True."
    )


def _configured_bucket(conf: BucketHeadSettings) -> str | None:
    """The bucket the configuration stores files in: None with the local backend, whose files stay on disk."""
    return (conf["BUCKET"] or None) if conf["BACKEND"] == "s3" else None


def _source(content: File) -> Source:
    """What the engine reads: the upload's temporary file if Django already spooled it to disk, else its stream."""
    if hasattr(content, "temporary_file_path"):
        return Path(content.temporary_file_path())
    return ReadBytesWrapper(content)  # type: ignore[return-value]


def _datetime(timestamp: float) -> dt.datetime:
    """Aware UTC with USE_TZ, naive local time without, as Django's own storages return."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC if settings.USE_TZ else None)
