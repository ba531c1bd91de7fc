"""Conditional writes that survive a lost reply.

Every write that decides who owns the bucket — a snapshot's data and record
(create-only), the current record and the writer lease (replace-if-unchanged)
— goes through `put_conditionally`. A request can land while its reply is
lost (a connection reset, a read timeout on a large upload); the client then
retries, and the bucket refuses the retry with 412 *because of the request's
own first attempt*. Taking that 412 for another writer's work would fence a
healthy writer for good.

So each such object carries its writer and its SHA-256 in its metadata, and
a refused write looks before it gives up:

- the object holds exactly this write (same writer, same digest): the first
  attempt landed, and the write succeeded;
- a replace-if-unchanged write finds the object last written by this same
  writer: an earlier write of ours landed without our learning it, nobody
  else has written since, and the write is made again on that version;
- anything else is a real conflict, and `PreconditionFailed` is raised.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from ..errors import PreconditionFailed
from .base import ObjectInfo, ObjectStore, Progress, sha256_file

#: User-metadata names of a conditionally written object (S3 lower-cases them anyway).
SHA256_META = "sha256"
WRITER_META = "writer"


def put_conditionally(
    store: ObjectStore,
    key: str,
    data: bytes | Path | BinaryIO,
    *,
    writer: str,
    if_match: str | None = None,
    sha256: str | None = None,
    content_type: str | None = None,
    progress: Progress | None = None,
) -> ObjectInfo:
    """Create ``key`` (``if_match`` None) or replace the version ``if_match``, as ``writer``.

    ``sha256`` is the data's digest when the caller has computed it already
    (it must, for a stream: a seekable file, sent from its start on every
    attempt). Raises `PreconditionFailed` only when another writer's object
    is in the way.
    """
    if sha256 is None:
        if not isinstance(data, (bytes, Path)):
            raise TypeError("put_conditionally needs the SHA-256 of a stream it is given")
        sha256 = sha256_file(data)[0] if isinstance(data, Path) else hashlib.sha256(data).hexdigest()
    metadata = {SHA256_META: sha256, WRITER_META: writer}
    expected = if_match
    for _ in range(2):
        if not isinstance(data, (bytes, Path)):
            data.seek(0)
        try:
            return store.put(
                key,
                data,
                content_type=content_type,
                metadata=metadata,
                if_none_match=expected is None,
                if_match=expected,
                progress=progress,
            )
        except PreconditionFailed:
            there = store.head(key)
            if there is None or there.metadata.get(WRITER_META) != writer:
                raise
            if there.metadata.get(SHA256_META) == sha256:
                return there  # our own attempt landed; only its reply was lost
            if if_match is None:
                raise
            expected = there.etag  # an earlier write of ours landed unseen: nobody else wrote since
    raise PreconditionFailed(key, "it keeps changing under this writer's own retries")
