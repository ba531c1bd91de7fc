"""An ObjectStore wrapper that records the writes (and downloads) passing through it to a real store."""

from __future__ import annotations

from typing import Any

from buckethead_django.engine.lease import LEASE_SUFFIX
from buckethead_django.engine.objectstore import ObjectInfo, ObjectStore, Source


class RecordingStore:
    """Delegates every call to ``inner`` and keeps the keys of puts, copies and downloads in order."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.puts: list[str] = []
        self.copies: list[tuple[str, str]] = []
        self.gets: list[str] = []

    @property
    def data_puts(self) -> list[str]:
        """The puts of data (snapshots, blobs), leaving out the writer lease's own upkeep."""
        return [key for key in self.puts if not key.endswith(LEASE_SUFFIX)]

    def put(self, key: str, data: Source, **kwargs: Any) -> ObjectInfo:
        self.puts.append(key)
        return self.inner.put(key, data, **kwargs)

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return self.inner.get(key)

    def get_to(self, key: str, dest: Any, **kwargs: Any) -> ObjectInfo:
        self.gets.append(key)
        return self.inner.get_to(key, dest, **kwargs)

    def copy(self, src: str, dst: str) -> ObjectInfo:
        self.copies.append((src, dst))
        return self.inner.copy(src, dst)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
