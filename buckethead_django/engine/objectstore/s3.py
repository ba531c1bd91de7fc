"""An S3-compatible bucket (Cloudflare R2, AWS S3, MinIO, moto) through boto3.

Retries, timeouts and checksums come from botocore's own `Config`; multipart
uploads, downloads and copies go through boto3's transfer manager. Conditional
writes go through a single ``PutObject`` with ``If-None-Match`` / ``If-Match``,
which both S3 and R2 honour (the transfer manager cannot pass those headers).
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import DEFAULT_TRANSFER_CONCURRENCY, BucketConfig
from ..errors import BucketAccessDenied, BucketNotFound, ObjectNotFound, ObjectStoreError, PreconditionFailed
from .base import ListPage, ObjectInfo, Progress, Source, copy_stream

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # pragma: no cover
else:
    S3Client = Any

#: Largest single PutObject S3 and R2 accept; conditional writes must fit in one.
MAX_SINGLE_PUT = 5 * 1024**3
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
_PRECONDITION = {"412", "PreconditionFailed", "ConditionalRequestConflict", "409"}


#: Connections beyond the chunk transfers: the lease's renewal and the Django storage's requests meanwhile.
POOL_HEADROOM = 4


def botocore_config(cfg: BucketConfig) -> Config:
    """botocore settings shared by this store and the Django storage.

    Checksums are only sent when an operation requires them: boto3 >= 1.36 adds
    CRC32 checksums to every upload by default, which R2 (and some other
    S3-compatible stores) reject. The connection pool holds a snapshot's
    parallel chunk transfers plus the lease's and the storage's requests.
    """
    return Config(
        max_pool_connections=DEFAULT_TRANSFER_CONCURRENCY + POOL_HEADROOM,
        region_name=cfg.region,
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def transfer_config(cfg: BucketConfig, *, use_threads: bool = True) -> TransferConfig:
    """boto3 transfer settings with bounded memory.

    A download's parts are queued in memory until a single thread writes
    them out; boto3's default queue (100 chunks of 256 KiB) lets a slow disk
    or a busy machine buffer 25 MiB per transfer. Sixteen chunks keep that
    to 4 MiB at no cost in speed on a local network.
    """
    return TransferConfig(
        multipart_threshold=cfg.multipart_threshold,
        multipart_chunksize=cfg.multipart_chunksize,
        max_io_queue=16,
        use_threads=use_threads,
    )


class S3ObjectStore:
    """`ObjectStore` on one bucket of an S3-compatible service."""

    def __init__(self, cfg: BucketConfig, *, client: S3Client | None = None) -> None:
        self.bucket = cfg.bucket
        self.endpoint_url = cfg.endpoint_url
        self._client: S3Client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            region_name=cfg.region,
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            aws_session_token=cfg.session_token,
            config=botocore_config(cfg),
        )
        self._transfer = transfer_config(cfg)
        self._transfer_without_threads = transfer_config(cfg, use_threads=False)

    def _transfer_with(self, call: Callable[[TransferConfig], object]) -> None:
        """Run a transfer-manager call; at interpreter exit, run it again without threads.

        ``atexit`` handlers (where a writer's final flush runs) are called after
        `concurrent.futures` has shut down, so the transfer manager's thread
        pool refuses work there; its single-threaded mode still uploads,
        multipart included.
        """
        try:
            call(self._transfer)
        except RuntimeError as exc:
            if "interpreter shutdown" not in str(exc):
                raise
            call(self._transfer_without_threads)

    @property
    def client(self) -> S3Client:
        return self._client

    def describe(self) -> str:
        where = self.endpoint_url or "AWS S3"
        return f"bucket {self.bucket!r} at {where}"

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate boto errors into the engine's, naming the bucket and key."""
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _NO_BUCKET:
                raise BucketNotFound(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS S3'} (or these credentials "
                    f"cannot see it), so {key!r} cannot be read or written. Create the bucket, or set BUCKET and "
                    "ENDPOINT_URL (ACCOUNT_ID for Cloudflare R2) to the bucket this site uses."
                ) from None
            if code in _DENIED or status == "403":
                raise BucketAccessDenied(
                    f"{self.describe()} refused these credentials for {key!r} ({code or status}). Check "
                    "ACCESS_KEY_ID and SECRET_ACCESS_KEY, and that they may read and write objects in bucket "
                    f"{self.bucket!r} (on Cloudflare R2: an API token with Object Read & Write on this bucket)."
                ) from None
            if code in _NOT_FOUND or status == "404":
                raise ObjectNotFound(key) from None
            if code in _PRECONDITION or status in _PRECONDITION:
                raise PreconditionFailed(key, f"the service answered {code or status}") from None
            raise ObjectStoreError(f"{self.describe()} refused a request for {key!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(
                f"cannot reach {self.describe()} for {key!r}: {exc}. Check the endpoint URL, "
                "the network, and the credentials."
            ) from exc

    def put(
        self,
        key: str,
        data: Source,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
        extra: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Upload the object; ``extra`` becomes PutObject parameters (``content_type``/``metadata`` win)."""
        args: dict[str, Any] = dict(extra or {})
        if content_type:
            args["ContentType"] = content_type
        if metadata:
            args["Metadata"] = {**args.get("Metadata", {}), **metadata}
        with _as_file(data) as body, self._errors(key):
            if if_none_match or if_match is not None:
                return self._conditional_put(key, body, args, if_none_match=if_none_match, if_match=if_match)
            start = body.tell()

            def upload(config: TransferConfig) -> None:
                body.seek(start)
                self._client.upload_fileobj(body, self.bucket, key, ExtraArgs=args, Config=config, Callback=progress)

            self._transfer_with(upload)
        info = self.head(key)
        if info is None:
            raise ObjectStoreError(f"{self.describe()} accepted {key!r} but it is not readable back")
        return info

    def _conditional_put(
        self,
        key: str,
        body: BinaryIO,
        extra: dict[str, Any],
        *,
        if_none_match: bool,
        if_match: str | None,
    ) -> ObjectInfo:
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        if size > MAX_SINGLE_PUT:
            raise ObjectStoreError(
                f"{key!r} is {size} bytes; conditional writes are limited to one PutObject ({MAX_SINGLE_PUT} bytes)"
            )
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        response = self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        return ObjectInfo(
            key=key,
            size=size,
            etag=response["ETag"],
            last_modified=dt.datetime.now(tz=dt.UTC),
            metadata=dict(extra.get("Metadata", {})),
            content_type=extra.get("ContentType"),
        )

    def get(self, key: str) -> bytes:
        with self._errors(key):
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def get_to(self, key: str, dest: Path | BinaryIO, *, progress: Progress | None = None) -> ObjectInfo:
        if not isinstance(dest, Path) and not _seekable(dest):
            # boto3's ordered download into a stream that cannot seek deadlocks past about ten parts (its
            # in-memory window waits for the first part, which it reads only afterwards): one GET, which also
            # says what the object is, so no HEAD first (a snapshot's chunks and deltas are read this way).
            with self._errors(key):
                response = self._client.get_object(Bucket=self.bucket, Key=key)
                with closing(response["Body"]) as body:
                    copy_stream(body, dest, progress=progress)
            return _info(key, response)
        info = self.head(key)
        if info is None:
            raise ObjectNotFound(key)
        with self._errors(key):
            if isinstance(dest, Path):
                dest.parent.mkdir(parents=True, exist_ok=True)
                # download_file writes to a temporary name and renames it into place.
                self._transfer_with(
                    lambda config: self._client.download_file(
                        self.bucket, key, str(dest), Config=config, Callback=progress
                    )
                )
            else:
                self._transfer_with(
                    lambda config: self._client.download_fileobj(
                        self.bucket, key, dest, Config=config, Callback=progress
                    )
                )
        return info

    def open(self, key: str) -> BinaryIO:
        with self._errors(key):
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"]  # type: ignore[return-value]

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors(key):
                r = self._client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return None
        return _info(key, r)

    def copy(self, src: str, dst: str) -> ObjectInfo:
        with self._errors(src):
            self._transfer_with(
                lambda config: self._client.copy({"Bucket": self.bucket, "Key": src}, self.bucket, dst, Config=config)
            )
        info = self.head(dst)
        if info is None:
            raise ObjectStoreError(f"{self.describe()} accepted a copy to {dst!r} but it is not readable back")
        return info

    def delete(self, key: str) -> None:
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def list_page(
        self, prefix: str = "", *, token: str | None = None, page_size: int = 1000, start_after: str | None = None
    ) -> ListPage:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page_size}
        if token:
            kwargs["ContinuationToken"] = token
        if start_after:
            kwargs["StartAfter"] = start_after
        with self._errors(prefix):
            r = self._client.list_objects_v2(**kwargs)
        objects = [
            ObjectInfo(key=o["Key"], size=int(o["Size"]), etag=o["ETag"], last_modified=o["LastModified"])
            for o in r.get("Contents", [])
        ]
        return ListPage(objects=objects, next_token=r.get("NextContinuationToken") if r.get("IsTruncated") else None)


def _info(key: str, response: Mapping[str, Any]) -> ObjectInfo:
    """What a HEAD's or a GET's response says of the object."""
    return ObjectInfo(
        key=key,
        size=int(response["ContentLength"]),
        etag=response["ETag"],
        last_modified=response["LastModified"],
        metadata=dict(response.get("Metadata") or {}),
        content_type=response.get("ContentType"),
    )


@contextmanager
def _as_file(data: Source) -> Iterator[BinaryIO]:
    """A seekable binary file for any put source, without loading files into memory."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield io.BytesIO(data)
    elif isinstance(data, Path):
        with open(data, "rb") as f:
            yield f
    elif _seekable(data):
        yield data
    else:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            copy_stream(data, spool)
            spool.seek(0)
            yield spool  # type: ignore[misc]


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, ValueError):
        return False
