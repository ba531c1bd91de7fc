"""An ObjectStore wrapper that records the writes passing through it to a real store."""

from __future__ import annotations

from typing import Any

from buckethead_django.engine.objectstore import ObjectInfo, ObjectStore, Source


class RecordingStore:
    """Delegates every call to ``inner`` and keeps the keys of puts and copies in order."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.puts: list[str] = []
        self.copies: list[tuple[str, str]] = []

    def put(self, key: str, data: Source, **kwargs: Any) -> ObjectInfo:
        self.puts.append(key)
        return self.inner.put(key, data, **kwargs)

    def copy(self, src: str, dst: str) -> ObjectInfo:
        self.copies.append((src, dst))
        return self.inner.copy(src, dst)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
