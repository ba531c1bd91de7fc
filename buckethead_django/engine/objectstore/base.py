"""The small protocol every object store implements.

The engine needs only a handful of operations from a bucket; keeping them in
one protocol lets the S3 and the local-directory stores be swapped freely and
lets tests exercise the same code paths against both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

#: What a put accepts: bytes, a path to a file, or a readable binary stream.
Source = bytes | bytearray | memoryview | Path | BinaryIO

COPY_CHUNK = 1024 * 1024

#: Called with the number of bytes moved since the last call, like boto3's transfer ``Callback``.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD or LIST says about one object."""

    key: str
    size: int
    etag: str
    last_modified: dt.datetime
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass(frozen=True)
class ListPage:
    """One page of a listing; pass ``next_token`` back to get the next one."""

    objects: list[ObjectInfo]
    next_token: str | None


@runtime_checkable
class ObjectStore(Protocol):
    """Put, get, head, copy, delete and list objects by key.

    Conditional writes: ``if_none_match=True`` creates the object only if it
    does not exist; ``if_match=etag`` replaces it only if it is still that
    version. Either raises `PreconditionFailed` when refused.

    ``extra`` carries service-specific upload parameters, named as in S3's
    ``PutObject`` (``CacheControl``, ``ContentDisposition``...), so callers such
    as the Django storage can pass them through unchanged. A store that has no
    such notion ignores them.
    """

    def describe(self) -> str:
        """A human description with no secrets, for logs and status pages."""
        ...

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
    ) -> ObjectInfo: ...

    def get(self, key: str) -> bytes: ...

    def get_to(self, key: str, dest: Path | BinaryIO, *, progress: Progress | None = None) -> ObjectInfo: ...

    def open(self, key: str) -> BinaryIO: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def copy(self, src: str, dst: str) -> ObjectInfo: ...

    def delete(self, key: str) -> None: ...

    def list_page(
        self, prefix: str = "", *, token: str | None = None, page_size: int = 1000, start_after: str | None = None
    ) -> ListPage: ...


def iter_objects(
    store: ObjectStore, prefix: str = "", *, page_size: int = 1000, start_after: str | None = None
) -> Iterator[ObjectInfo]:
    """Every object under ``prefix`` (whose key sorts after ``start_after``, if given), following pagination."""
    token: str | None = None
    while True:
        page = store.list_page(prefix, token=token, page_size=page_size, start_after=start_after)
        yield from page.objects
        if page.next_token is None:
            return
        token = page.next_token


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def copy_stream(
    src: BinaryIO, dst: Writable, *, digests: tuple[Digest, ...] = (), progress: Progress | None = None
) -> int:
    """Copy ``src`` to ``dst`` in fixed-size chunks, feeding ``digests``; returns bytes copied."""
    total = 0
    while chunk := src.read(COPY_CHUNK):
        for digest in digests:
            digest.update(chunk)
        dst.write(chunk)
        total += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return total


def sha256_file(path: Path) -> tuple[str, int]:
    """The hex SHA-256 and the size of the file at ``path``, read in fixed-size chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = copy_stream(f, _Discard(), digests=(digest,))
    return digest.hexdigest(), size


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def write_file_atomically(dest: Path, src: BinaryIO, *, progress: Progress | None = None) -> int:
    """Write ``src`` to ``dest`` through a temporary file so ``dest`` is never half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "wb") as out:
            size = copy_stream(src, out, progress=progress)
        os.replace(tmp, dest)
        return size
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
