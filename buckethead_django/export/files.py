"""Every file of BucketHeadStorage, into a django-storages ``S3Storage`` under the same name.

- **Which files.** Every storage name (``bh_file_names``). Blobs that no name
  uses (cache values over the KV limit, unreferenced ones) are no files.
- **Where.** The object the target storage gives the name: with its
  ``location``, ``<location>/<name>``, else the name itself. So
  ``S3Storage().open(name)`` and ``.url(name)`` work, the names in the rows'
  FileFields stay valid, and no content-addressed key is left behind.
- **How.** Streamed from the blob in the BucketHead bucket into boto3's
  transfer manager with the storage's ``transfer_config`` (in parts beyond
  its threshold), never whole in memory, and hashed on the way: what
  arrives must be the blob's SHA-256, its bh-key. A name whose content
  another name already carried is a copy inside the target bucket. Each
  object gets the name's content type (as BucketHeadStorage serves it), the
  storage's own object parameters and ACL, and the metadata
  ``buckethead-sha256``. Names are written as they are, as with
  ``file_overwrite``: nothing is ever renamed.
- **Resume.** One listing of the target, then a HEAD for each name already
  there with the right size: if its ``buckethead-sha256`` is the blob's, it is
  skipped. S3 shows an object only once its upload is complete, so an export
  killed half way and run again uploads what is missing, and nothing twice.
- Nothing in the BucketHead bucket is written.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
import types
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import InvalidStorageError, storages
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from ..engine import BucketConfig, BucketSQLite, ObjectNotFound
from ..engine.interfaces import NamedFile
from ..storage import BucketHeadStorage
from .source import ExportError, Progress, no_progress

#: The object metadata that records which content an object holds (its SHA-256, the source's bh-key).
SHA256_METADATA = "buckethead-sha256"
#: Files transferred at once by default (each large file is also sent in parts at once by boto3).
DEFAULT_JOBS = 8


@dataclass
class FilesPlan:
    """The names to copy into storage ``alias`` (bucket ``bucket``), and which are there already."""

    alias: str
    bucket: str
    names: list[NamedFile]
    #: Target objects already holding the right content, by name.
    present: set[str] = field(default_factory=set)

    @property
    def files(self) -> int:
        return len(self.names)

    @property
    def bytes(self) -> int:
        return sum(n.size for n in self.names)

    @property
    def contents(self) -> int:
        """How many distinct contents the names hold (names may share one)."""
        return len({n.bh_key for n in self.names})

    @property
    def present_bytes(self) -> int:
        return sum(n.size for n in self.names if n.name in self.present)


@dataclass
class FilesResult:
    plan: FilesPlan
    uploaded: int = 0
    uploaded_bytes: int = 0
    #: Names whose content another name had carried: copied inside the target bucket.
    copied: int = 0
    #: Names already in the target with the right content, skipped.
    skipped: int = 0
    #: Names whose blob is missing from the BucketHead bucket: not copied (they were broken there already).
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- the target -------------------------------------------------------------------------------------------


def target_storage(alias: str, source: BucketConfig) -> S3Storage:
    """The storage ``alias``, refused unless it is a django-storages S3Storage other than BucketHead's bucket."""
    if alias not in settings.STORAGES:
        known = ", ".join(settings.STORAGES) or "none"
        raise ExportError(f"there is no storage {alias!r} in settings.STORAGES (it has: {known})")
    backend = settings.STORAGES[alias].get("BACKEND")
    try:
        storage = storages[alias]
    except (InvalidStorageError, ImportError) as exc:
        raise ExportError(f"storage {alias!r} cannot be built: {exc}") from None
    if isinstance(storage, BucketHeadStorage):
        raise ExportError(
            f"storage {alias!r} is BucketHead's own storage ({backend}): give the alias of a plain "
            "storages.backends.s3.S3Storage to copy the files into"
        )
    if not isinstance(storage, S3Storage):
        raise ExportError(
            f"storage {alias!r} is {backend}, not an S3 storage: the export writes S3 objects; give the alias of a "
            "storages.backends.s3.S3Storage (docs/outgrow.md shows the settings)"
        )
    if not source.is_local and storage.bucket_name == source.bucket and storage.endpoint_url == source.endpoint_url:
        raise ExportError(
            f"storage {alias!r} writes bucket {storage.bucket_name!r}, which is BucketHead's own bucket: the export "
            "never writes there. Give the storage a bucket of its own"
        )
    return storage


def reach(storage: S3Storage, alias: str) -> None:
    """HEAD the target bucket, so that a missing bucket or an unreachable service is one clear error first."""
    where = f"bucket {storage.bucket_name!r} at {storage.endpoint_url or 'AWS S3'}"
    try:
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            raise ExportError(
                f"storage {alias!r}: {where} does not exist; create it first. Nothing was written."
            ) from None
        raise ExportError(
            f"storage {alias!r}: {where} refused access ({exc}); give the storage credentials that may list, read "
            "and write it. Nothing was written."
        ) from None
    except BotoCoreError as exc:
        raise ExportError(
            f"cannot reach storage {alias!r} ({where}): {exc}. Check that the service runs and that the storage's "
            "endpoint_url names it. Nothing was written."
        ) from None


def object_key(storage: S3Storage, name: str) -> str:
    """The key the storage gives a name (its ``location`` prefix, if any), as its own save and open do."""
    return storage._normalize_name(clean_name(name))


# -- what is there ----------------------------------------------------------------------------------------


def plan(engine: BucketSQLite, storage: S3Storage, alias: str, *, jobs: int = DEFAULT_JOBS) -> FilesPlan:
    """Every name of the state, and those the target already holds with the right content (reads only).

    One listing finds the objects of the right size; only those are asked for their hash, ``jobs`` at a time.
    """
    names = engine.files.list_names()
    found = FilesPlan(alias, storage.bucket_name, names)
    try:
        sizes = _listing(storage)
        client = storage.connection.meta.client
        candidates = [n for n in names if sizes.get(object_key(storage, n.name)) == n.size]
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            held = pool.map(lambda n: _holds(client, storage.bucket_name, object_key(storage, n.name), n), candidates)
            found.present = {n.name for n, there in zip(candidates, held, strict=True) if there}
    except (ClientError, BotoCoreError) as exc:
        raise ExportError(f"could not list storage {alias!r} (bucket {storage.bucket_name!r}): {exc}") from None
    return found


def _listing(storage: S3Storage) -> dict[str, int]:
    """Every key under the storage's location, with its size."""
    client = storage.connection.meta.client
    prefix = storage.location.rstrip("/") + "/" if storage.location else ""
    sizes: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket_name, Prefix=prefix):
        for obj in page.get("Contents", []):
            sizes[obj["Key"]] = int(obj["Size"])
    return sizes


def _holds(client: Any, bucket: str, key: str, named: NamedFile) -> bool:
    """Whether the object ``key`` holds the name's content, as its SHA-256 metadata says."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise
    return head.get("ContentLength") == named.size and head.get("Metadata", {}).get(SHA256_METADATA) == named.bh_key


# -- the copy ------------------------------------------------------------------------------------------


def copy(
    engine: BucketSQLite,
    storage: S3Storage,
    plan: FilesPlan,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: Progress = no_progress,
) -> FilesResult:
    """Upload every name the target lacks, ``jobs`` contents at a time; see the module's docstring."""
    started = time.monotonic()
    result = FilesResult(plan)
    groups: dict[str, list[NamedFile]] = {}
    for named in plan.names:
        groups.setdefault(named.bh_key, []).append(named)
    # One client for every thread (botocore clients are thread-safe): the storage's own connection is made per
    # thread, and making one costs a tenth of a second.
    client = storage.connection.meta.client
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="buckethead-export") as pool:
        job = _Job(engine, storage, client, plan, progress)
        futures = [pool.submit(job.transfer, group) for group in groups.values()]
        try:
            for future in concurrent.futures.as_completed(futures):
                done = future.result()
                result.uploaded += done.uploaded
                result.uploaded_bytes += done.uploaded_bytes
                result.copied += done.copied
                result.skipped += done.skipped
                result.missing += done.missing
        except (ClientError, BotoCoreError) as exc:
            pool.shutdown(cancel_futures=True)
            raise ExportError(
                f"could not write to storage {plan.alias!r} (bucket {plan.bucket!r}): {exc}. Run the export again "
                "once it is reachable: files already there are skipped."
            ) from None
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    result.missing.sort()
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class _Job:
    """What every transfer of one copy shares."""

    engine: BucketSQLite
    storage: S3Storage
    client: Any
    plan: FilesPlan
    progress: Progress

    def transfer(self, group: list[NamedFile]) -> FilesResult:
        """One content and its names: skip those there, upload the first missing one, copy it to the rest."""
        done = FilesResult(self.plan)
        bucket = self.storage.bucket_name
        carrier: str | None = None  # a key of the target that holds this content
        for named in group:
            key = object_key(self.storage, named.name)
            if named.name in self.plan.present:
                done.skipped += 1
                carrier = carrier or key
                self.progress(named.size)
                continue
            extra = _write_parameters(self.storage, key, named)
            if carrier is None:
                try:
                    source = self.engine.files.open(named.bh_key)
                except ObjectNotFound:
                    done.missing.append(named.name)
                    self.progress(named.size)
                    continue
                _upload(self.client, self.storage, key, source, named, extra=extra, progress=self.progress)
                done.uploaded += 1
                done.uploaded_bytes += named.size
                carrier = key
            else:
                self.client.copy(
                    {"Bucket": bucket, "Key": carrier},
                    bucket,
                    key,
                    ExtraArgs={**extra, "MetadataDirective": "REPLACE"},
                    Callback=self.progress,
                    Config=self.storage.transfer_config,
                )
                done.copied += 1
        return done


def _write_parameters(storage: S3Storage, key: str, named: NamedFile) -> dict[str, Any]:
    """What the storage's own save would send (object parameters, content type, ACL), plus the content's hash."""
    content = types.SimpleNamespace(content_type=named.content_type)
    params = storage._get_write_parameters(key, content)
    params["Metadata"] = {**params.get("Metadata", {}), SHA256_METADATA: named.bh_key}
    return params


def _upload(
    client: Any,
    storage: S3Storage,
    key: str,
    source: BinaryIO,
    named: NamedFile,
    *,
    extra: dict[str, Any],
    progress: Progress,
) -> None:
    """Stream ``source`` to ``key``; an object that is not the blob's content is deleted again, and an error."""
    bucket = storage.bucket_name
    stream = _Hashing(source)
    try:
        client.upload_fileobj(stream, bucket, key, ExtraArgs=extra, Callback=progress, Config=storage.transfer_config)
    finally:
        source.close()
    if stream.count != named.size or stream.sha256.hexdigest() != named.bh_key:
        client.delete_object(Bucket=bucket, Key=key)
        raise ExportError(
            f"the blob of {named.name!r} in the BucketHead bucket is not the content its record names "
            f"({stream.count} bytes read, {named.size} recorded): it was not copied. "
            "`manage.py buckethead files list` shows the file."
        )


class _Hashing:
    """A read-only stream that counts and hashes what boto3 reads from it (and has no ``seek``, so that boto3
    reads it in order, part by part, rather than whole)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.sha256.update(data)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True
