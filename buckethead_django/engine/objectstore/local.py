"""A directory on disk that behaves like a bucket.

This is the zero-config default for development and the store most tests run
against besides S3. Every write lands in a temporary file first and is moved
into place with an atomic rename, so a reader (or a crash) never sees half an
object. Each object's ETag, content type and user metadata are kept beside it
in a small JSON sidecar under ``.bh-meta/``. Conditional writes are checked
under a lock file, so they hold across processes as well as threads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ObjectNotFound, ObjectStoreError, PreconditionFailed
from .base import COPY_CHUNK, ListPage, ObjectInfo, Progress, Source, copy_stream, write_file_atomically

META_DIR = ".bh-meta"
TMP_PREFIX = ".bh-tmp-"


class LocalObjectStore:
    """`ObjectStore` on a local directory (created if missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        try:
            (self.root / META_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ObjectStoreError(
                f"cannot create the local bucket directory {str(self.root)!r}: {exc}. "
                "Point the local path at a writable directory."
            ) from exc
        self._thread_lock = threading.Lock()

    def describe(self) -> str:
        return f"local directory {self.root}"

    # -- paths -----------------------------------------------------------------

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or parts[0] == META_DIR
            or parts[-1].startswith(TMP_PREFIX)
            or "\x00" in key
        ):
            raise ObjectStoreError(
                f"object key {key!r} cannot be stored in a local directory: use '/'-separated "
                f"names without empty, '.' or '..' parts, not starting with {META_DIR!r}"
            )
        return self.root.joinpath(*parts)

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / (key + ".json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers in this process (thread lock) and across processes (flock)."""
        with self._thread_lock, open(self.root / META_DIR / ".lock", "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    # -- metadata --------------------------------------------------------------

    def _info(self, key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
        meta: dict[str, object] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            meta = json.loads(self._meta_path(key).read_text("utf-8"))
        etag = meta.get("etag")
        if meta.get("size") != stat.st_size or not isinstance(etag, str):
            # Sidecar missing or stale (the object was replaced outside the store): recompute.
            etag = _quoted_md5_of(path)
            meta = {}
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=etag,
            last_modified=dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC),
            metadata=dict(meta.get("metadata") or {}),  # type: ignore[call-overload]
            content_type=meta.get("content_type"),  # type: ignore[arg-type]
        )

    # -- protocol --------------------------------------------------------------

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
        """Write the object; ``extra`` (S3 upload parameters) is ignored, as no HTTP server reads it here."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            with open(tmp, "wb") as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    md5.update(data)
                    out.write(data)
                    if progress is not None:
                        progress(len(data))
                elif isinstance(data, Path):
                    with open(data, "rb") as src:
                        copy_stream(src, out, digests=(md5,), progress=progress)
                else:
                    copy_stream(data, out, digests=(md5,), progress=progress)
                out.flush()
                os.fsync(out.fileno())
            etag = f'"{md5.hexdigest()}"'
            size = tmp.stat().st_size
            with self._locked():
                if if_none_match and path.exists():
                    raise PreconditionFailed(key, "the object already exists")
                if if_match is not None:
                    if not path.exists():
                        raise PreconditionFailed(key, "the object does not exist")
                    current = self._info(key, path).etag
                    if current != if_match:
                        raise PreconditionFailed(key, f"its ETag is {current}, not {if_match}")
                sidecar = self._meta_path(key)
                sidecar.parent.mkdir(parents=True, exist_ok=True)
                sidecar_tmp = sidecar.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
                sidecar_tmp.write_text(
                    json.dumps({"etag": etag, "size": size, "content_type": content_type, "metadata": metadata or {}}),
                    "utf-8",
                )
                os.replace(tmp, path)
                os.replace(sidecar_tmp, sidecar)
            return self._info(key, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def get_to(self, key: str, dest: Path | BinaryIO, *, progress: Progress | None = None) -> ObjectInfo:
        path = self._path(key)
        with self.open(key) as src:
            info = self._info(key, path)
            if isinstance(dest, Path):
                write_file_atomically(dest, src, progress=progress)
            else:
                copy_stream(src, dest, progress=progress)
        return info

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            return self._info(key, path) if path.is_file() else None
        except FileNotFoundError:
            return None

    def copy(self, src: str, dst: str) -> ObjectInfo:
        info = self.head(src)
        if info is None:
            raise ObjectNotFound(src)
        with self.open(src) as f:
            return self.put(dst, f, content_type=info.content_type, metadata=info.metadata)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._locked():
            for p in (path, self._meta_path(key)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def list_page(
        self, prefix: str = "", *, token: str | None = None, page_size: int = 1000, start_after: str | None = None
    ) -> ListPage:
        after = max(token or "", start_after or "")
        keys = sorted(k for k in self._walk() if k.startswith(prefix) and k > after)
        page = keys[:page_size]
        objects = []
        for key in page:
            info = self.head(key)
            if info is not None:
                objects.append(info)
        next_token = page[-1] if len(keys) > page_size else None
        return ListPage(objects=objects, next_token=next_token)

    def _walk(self) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if rel.parts[:1] == (META_DIR,):
                dirnames[:] = []
                continue
            for name in filenames:
                if not name.startswith(TMP_PREFIX):
                    yield "/".join((*rel.parts, name))


def _quoted_md5_of(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            md5.update(chunk)
    return f'"{md5.hexdigest()}"'
