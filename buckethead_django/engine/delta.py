"""A delta: the pages one flush changed, as one signed object that follows the previous one.

A generation is a base image plus an ordered chain of deltas (see
`history`). Delta ``n`` holds the newest version of every page committed
since delta ``n - 1`` (or the base), the database's size in pages after
them, and when it was written. Applying the deltas of a chain, in order, to
the base gives exactly the database as it was at that flush.

The object is ``MAGIC``, the length of a JSON header, the header, then the
pages, zlib-compressed. The header names its generation and number, the
SHA-256 of the pages, and the digest of the object it follows (``parent``),
and carries an HMAC over all of that with the same key as the records: a
delta that was changed, moved to another place in the chain, or written by
something else is refused by name.

A merged delta (see `chain`) holds, in the same form, what a run of deltas
``first`` to ``seq`` changed: the newest version of each page, and the
smallest size the database had on the way (``shrink_to``), so applying it
gives exactly what applying the run gives. It names the parent of the run's
first delta, and ``tip``, the digest of its last, which the delta after the
run names as its parent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import SnapshotCorrupt

MAGIC = b"BHDELTA1"
FORMAT = 1
#: The format of a merged delta: a reader that predates them refuses it instead of misreading it.
MERGED_FORMAT = 2
FORMATS = (FORMAT, MERGED_FORMAT)
#: The fields only a merged delta has, and their values in a plain one (left out of its header).
MERGED_FIELDS = {"first": 0, "shrink_to": 0, "tip": ""}
CONTENT_TYPE = "application/vnd.buckethead.delta"
#: zlib level: pages of a database compress well, and level 1 costs little CPU per flush.
COMPRESSION_LEVEL = 1


@dataclass(frozen=True)
class DeltaHeader:
    """Everything about a delta but its pages; the HMAC covers all the other fields."""

    generation: str
    seq: int
    created_at: float
    writer: str
    #: The SHA-256 of the object this one follows: the previous delta, or the base's image for the first.
    parent: str
    page_size: int
    db_pages: int
    pages: tuple[int, ...]
    payload_sha256: str
    format: int = FORMAT
    hmac: str | None = None
    #: A merged delta's first delta (0: a plain delta, which is its own first).
    first: int = 0
    #: The fewest pages the database had inside a merged run (0: a plain delta): pages past it were cut off.
    shrink_to: int = 0
    #: A merged delta's last delta's digest: what the next delta follows.
    tip: str = ""

    def fields(self) -> dict[str, object]:
        """The header as it is written: a plain delta's without the merged-only fields."""
        body = asdict(self)
        for name, default in MERGED_FIELDS.items():
            if body[name] == default:
                del body[name]
        return body

    def payload(self) -> bytes:
        body = self.fields()
        del body["hmac"]
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def signed_with(self, key: bytes | None) -> DeltaHeader:
        return replace(self, hmac=None if key is None else _mac(key, self.payload()))


@dataclass(frozen=True)
class Delta:
    """A delta as read from the bucket (or about to be written): its header, pages, and the object's digest."""

    header: DeltaHeader
    pages: dict[int, bytes] = field(repr=False)
    #: The SHA-256 of the whole object.
    digest: str = ""
    size: int = 0

    @property
    def first(self) -> int:
        return self.header.first or self.header.seq

    @property
    def tip(self) -> str:
        """What the next delta names as its parent: this one's digest, or a merged one's last delta's."""
        return self.header.tip or self.digest


def encode(
    *,
    generation: str,
    seq: int,
    created_at: float,
    writer: str,
    parent: str,
    page_size: int,
    db_pages: int,
    pages: dict[int, bytes],
    signing_key: bytes | None,
    first: int = 0,
    shrink_to: int = 0,
    tip: str = "",
) -> tuple[bytes, Delta]:
    """The object's bytes, and the delta they hold (a merged one when ``first`` is given)."""
    numbers = tuple(sorted(pages))
    raw = b"".join(pages[n] for n in numbers)
    header = DeltaHeader(
        generation=generation,
        seq=seq,
        created_at=created_at,
        writer=writer,
        parent=parent,
        page_size=page_size,
        db_pages=db_pages,
        pages=numbers,
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        format=MERGED_FORMAT if first else FORMAT,
        first=first,
        shrink_to=shrink_to,
        tip=tip,
    ).signed_with(signing_key)
    head = json.dumps(header.fields(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    data = MAGIC + struct.pack(">I", len(head)) + head + zlib.compress(raw, COMPRESSION_LEVEL)
    return data, Delta(header, dict(pages), hashlib.sha256(data).hexdigest(), len(data))


def decode(data: bytes, *, key: str, keys: Sequence[bytes]) -> Delta:
    """Parse and verify a delta object (HMAC, then the pages' SHA-256); `SnapshotCorrupt` naming ``key`` if not."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise SnapshotCorrupt(key, "it is not a delta (it does not start with the delta header)")
    (head_len,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    head_end = len(MAGIC) + 4 + head_len
    try:
        raw = json.loads(data[len(MAGIC) + 4 : head_end].decode("utf-8"))
        if raw.get("format") not in FORMATS:
            raise SnapshotCorrupt(key, f"its delta format {raw.get('format')!r} is not one this version reads")
        header = DeltaHeader(**{**raw, "pages": tuple(int(n) for n in raw["pages"])})
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SnapshotCorrupt(key, f"its header cannot be read ({exc!r})") from None
    if keys:
        if header.hmac is None:
            raise SnapshotCorrupt(key, "it is not signed, and this engine only loads snapshots signed with its key")
        if not any(hmac.compare_digest(header.hmac, _mac(k, header.payload())) for k in keys):
            raise SnapshotCorrupt(key, "its HMAC does not match: it was changed after it was written")
    try:
        body = zlib.decompress(data[head_end:])
    except zlib.error as exc:
        raise SnapshotCorrupt(key, f"its pages cannot be decompressed ({exc})") from None
    if hashlib.sha256(body).hexdigest() != header.payload_sha256:
        raise SnapshotCorrupt(key, "its pages do not match the SHA-256 its header gives")
    size = header.page_size
    if len(body) != size * len(header.pages):
        raise SnapshotCorrupt(key, f"it holds {len(body)} bytes of pages, not {len(header.pages)} pages of {size}")
    pages = {n: body[i * size : (i + 1) * size] for i, n in enumerate(header.pages)}
    return Delta(header, pages, hashlib.sha256(data).hexdigest(), len(data))


#: Bytes 18 and 19 of a SQLite file: its read and write versions, 2 in WAL mode and 1 with a rollback journal.
FILE_FORMAT_OFFSET = 18
ROLLBACK_JOURNAL_FORMAT = b"\x01\x01"


def merge(deltas: Sequence[Delta], *, created_at: float, writer: str, signing_key: bytes | None) -> tuple[bytes, Delta]:
    """``deltas``, a run that follows one another, as one merged delta: the object's bytes, and the delta."""
    pages, db_pages, shrink_to = net_effect(deltas)
    first, last = deltas[0], deltas[-1]
    return encode(
        generation=last.header.generation, seq=last.header.seq, created_at=created_at, writer=writer,
        parent=first.header.parent, page_size=last.header.page_size, db_pages=db_pages, pages=pages,
        signing_key=signing_key, first=first.first, shrink_to=shrink_to, tip=last.tip,
    )  # fmt: skip


def net_effect(deltas: Sequence[Delta]) -> tuple[dict[int, bytes], int, int]:
    """What applying ``deltas`` in order does: the pages it leaves, the final size and the smallest size."""
    pages: dict[int, bytes] = {}
    db_pages = shrink_to = 0

    def shrink(size: int) -> None:
        nonlocal shrink_to
        for number in [n for n in pages if n > size]:
            del pages[number]  # cut off: a later write brings it back
        shrink_to = min(shrink_to or size, size)

    for delta in deltas:
        if delta.header.shrink_to:
            shrink(delta.header.shrink_to)
        pages.update(delta.pages)
        if delta.header.db_pages:
            db_pages = delta.header.db_pages
            shrink(db_pages)
    return pages, db_pages, shrink_to


def apply(deltas: Sequence[Delta], image: Path) -> None:
    """Write ``deltas``' pages, in order, into the database file ``image``, and size it as the last one says.

    The pages come from a database in WAL mode; the image stays a plain
    database file, as every snapshot is (a copy opened elsewhere, even in
    memory, needs no WAL).
    """
    if not deltas:
        return
    with open(image, "r+b") as f:
        fd = f.fileno()
        for delta in deltas:
            size = delta.header.page_size
            if delta.header.shrink_to and delta.header.shrink_to * size < os.fstat(fd).st_size:
                os.ftruncate(fd, delta.header.shrink_to * size)
            for number, page in delta.pages.items():
                os.pwrite(fd, page, (number - 1) * size)
            if delta.header.db_pages:
                os.ftruncate(fd, delta.header.db_pages * size)
        os.pwrite(fd, ROLLBACK_JOURNAL_FORMAT, FILE_FORMAT_OFFSET)


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()
