"""The snapshot record: what one snapshot consists of, and the proof that this engine wrote it.

A record lists the snapshot's chunks in order (a base image is uploaded and
downloaded in several at once; see `chunks`),
the SHA-256 of each chunk and of the whole database image, the generation it
follows (its parent), and an HMAC over all of that. Loading a snapshot means checking the HMAC first (cache values
are pickled: a snapshot someone else wrote would be code execution), then
every digest, then SQLite's integrity check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from .errors import SnapshotCorrupt

#: Format 2 added ``parent``; format 3 generations may be followed by deltas, which an older version would
#: ignore, so it refuses them. Records of formats 1 and 2 (which have none) are still read and verified.
FORMAT = 3
#: The first format whose records say how many of their parent's deltas they follow (``parent_deltas``).
DELTAS_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
GENERATION, LABELLED, LEGACY = "generation", "labelled", "legacy"


@dataclass(frozen=True)
class Chunk:
    """One object holding part of the database image, in order."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SnapshotRecord:
    """One restorable snapshot: a generation, a labelled copy, or a 0.4.x file (which has no record object)."""

    name: str
    kind: str
    created_at: float
    size: int
    sha256: str
    chunks: tuple[Chunk, ...]
    seq: int = 0
    writer: str = ""
    #: The generation that was current when this one was written: what it follows if it is committed.
    parent: str | None = None
    #: How many of the parent's deltas it follows: the parent's points end there (format 3).
    parent_deltas: int = 0
    hmac: str | None = None
    format: int = FORMAT
    #: The object this record was read from (not part of the record itself).
    key: str = field(default="", compare=False)

    @property
    def signed(self) -> bool:
        return self.hmac is not None

    @property
    def last_modified(self) -> dt.datetime:
        """When the snapshot was written (UTC)."""
        return dt.datetime.fromtimestamp(self.created_at, tz=dt.UTC)

    def payload(self) -> bytes:
        """The canonical bytes the HMAC covers: everything but the HMAC and the record's own key."""
        body = asdict(self)
        del body["hmac"], body["key"]
        if self.format < 3:
            del body["parent_deltas"]  # what formats 1 and 2 signed
        if self.format < 2:
            del body["parent"]  # what format 1 signed
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def signed_with(self, key: bytes | None) -> SnapshotRecord:
        """This record with its HMAC under ``key`` (or unsigned when signing is disabled)."""
        return replace(self, hmac=None if key is None else _mac(key, self.payload()))

    def verify_signature(self, keys: Sequence[bytes]) -> None:
        """Raise `SnapshotCorrupt` unless the HMAC matches one of ``keys`` (any record passes when there are none)."""
        if not keys:
            return
        where = self.key or self.name
        if self.hmac is None:
            raise SnapshotCorrupt(where, "it is not signed, and this engine only loads snapshots signed with its key")
        payload = self.payload()
        if not any(hmac.compare_digest(self.hmac, _mac(key, payload)) for key in keys):
            raise SnapshotCorrupt(
                where,
                "its HMAC does not match: it was changed after it was written, or signed with another key "
                "(if the secret key changed, list the old one as a fallback signing key)",
            )

    def to_json(self) -> bytes:
        body = asdict(self)
        del body["key"]
        return json.dumps(body, sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, key: str = "") -> SnapshotRecord:
        """Parse a record object; `SnapshotCorrupt` if it is not one this version can read."""
        try:
            raw = json.loads(data.decode("utf-8"))
            if raw.get("format") not in READABLE_FORMATS:
                raise SnapshotCorrupt(
                    key, f"its record format {raw.get('format')!r} is not one this version reads {READABLE_FORMATS}"
                )
            return cls(
                name=str(raw["name"]),
                kind=str(raw["kind"]),
                created_at=float(raw["created_at"]),
                size=int(raw["size"]),
                sha256=str(raw["sha256"]),
                chunks=tuple(
                    Chunk(key=str(c["key"]), size=int(c["size"]), sha256=str(c["sha256"])) for c in raw["chunks"]
                ),
                seq=int(raw.get("seq", 0)),
                writer=str(raw.get("writer", "")),
                parent=None if raw.get("parent") is None else str(raw["parent"]),
                parent_deltas=int(raw.get("parent_deltas", 0)),
                hmac=None if raw.get("hmac") is None else str(raw["hmac"]),
                format=int(raw["format"]),
                key=key,
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SnapshotCorrupt(key, f"its record cannot be read ({exc!r})") from None


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()
