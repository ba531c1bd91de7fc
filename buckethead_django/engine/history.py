"""The bucket's history: generations, labels, the current record, retention — one object, `History`.

Given the snapshot key ``K`` (``bucketsqlite/snap.db`` by default)::

    K.current                            which generation is current, and which writer said so
    K.generations/<name>.json            a generation's signed record (see `record`)
    K.generations/<name>.chunk0000       its data: the database image, in order
    K.labels/<label>.json, .chunk0000    a labelled copy, never pruned
    K, K.prev                            a buckethead 0.4.x snapshot, adopted as it is

Every object but ``K.current`` is written once with a create-only write, so a
flush can never overwrite a snapshot. A flush is committed by replacing
``K.current`` conditionally on the version this writer last saw: a writer
whose lease was taken over while it was paused finds that version gone and
is fenced off, instead of silently rolling the bucket back. A crash at any
point leaves ``K.current`` naming a whole, verified generation. A generation
that was never committed is never listed or offered for restore (see
`lineage`), and the next writer deletes it.

Generation names are ``<sequence>-<random>``: they sort by age, and two
writers never use the same sequence number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from .chunks import download_chunks, upload_chunks
from .config import DEFAULT_CHUNK_BYTES
from .errors import ObjectNotFound, SnapshotCorrupt
from .lineage import generation_seq, uncommitted
from .objectstore import ObjectStore, Progress, iter_objects
from .objectstore.conditional import put_conditionally
from .record import GENERATION, LABELLED, LEGACY, Chunk, SnapshotRecord
from .snapshot import CONTENT_TYPE, validate

CURRENT_SUFFIX = ".current"
GENERATIONS_INFIX = ".generations/"
LABELS_INFIX = ".labels/"
RECORD_SUFFIX = ".json"
CHUNK_SUFFIX = ".chunk{index:04d}"
LEGACY_PREVIOUS_SUFFIX = ".prev"

LATEST, PREVIOUS = "latest", "previous"
LEGACY_LATEST, LEGACY_PREVIOUS = "legacy", "legacy-previous"
RESERVED = (LATEST, PREVIOUS, LEGACY_LATEST, LEGACY_PREVIOUS)
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,99}$")
#: Records read at once when listing: a bucket's round trips overlap, a local directory does not mind.
READ_CONCURRENCY = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Current:
    """The ``K.current`` record: the committed generation (None before the first flush) and its writer.

    ``next_seq`` is the sequence number that writer uses for its next
    generation (0 when a version that did not record it wrote the object).
    A writer that claims the bucket skips it, so a paused predecessor's
    flush and its own can never share a number.
    """

    record: SnapshotRecord | None
    writer: str
    updated_at: float
    etag: str
    next_seq: int = 0

    @property
    def seq(self) -> int:
        return self.record.seq if self.record is not None else 0


@dataclass(frozen=True)
class SnapshotEntry:
    """One restorable snapshot as history lists it."""

    name: str
    kind: str
    key: str
    size: int
    last_modified: dt.datetime
    current: bool
    signed: bool
    sha256: str
    record: SnapshotRecord


@dataclass(frozen=True)
class GenerationObjects:
    """A generation as a listing sees it: its name, sequence, age and every object it has."""

    name: str
    seq: int
    created_at: float
    keys: tuple[str, ...]
    has_record: bool


# -- names ---------------------------------------------------------------------------------


def new_generation_name(seq: int) -> str:
    return f"{seq:010d}-{uuid.uuid4().hex[:8]}"


def validate_label(label: str) -> str:
    """``label`` if it can name a snapshot: a letter, then letters, digits, '.', '_' or '-', at most 100."""
    if not isinstance(label, str) or not _LABEL.match(label) or label in RESERVED:
        raise ValueError(
            f"snapshot label {label!r} is not valid: use 1 to 100 letters, digits, '.', '_' or '-', starting with "
            f"a letter, and none of {', '.join(RESERVED)}"
        )
    return label


def timestamped_label(prefix: str) -> str:
    """``<prefix>-<UTC time>-<random>``, e.g. ``pre-restore-20261127T230437Z-1a2b``: unique, and sorts by time."""
    return validate_label(f"{prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:4]}")


# -- retention -------------------------------------------------------------------------------


def retained(
    generations: Sequence[GenerationObjects],
    *,
    current: str | None,
    keep: int,
    max_age_seconds: float | None,
    now: float,
) -> set[str]:
    """The generations retention keeps: the newest ``keep``, any younger than ``max_age_seconds``, the current one."""
    newest_first = sorted(generations, key=lambda g: (g.seq, g.created_at), reverse=True)
    kept = {g.name for g in newest_first[: max(keep, 0)]}
    if max_age_seconds is not None:
        kept |= {g.name for g in generations if now - g.created_at < max_age_seconds}
    if current is not None:
        kept.add(current)
    return kept


# -- the history of one snapshot key -----------------------------------------------------------


class History:
    """Generations, labels, the current record, retention — one object.

    Everything about which snapshots a bucket holds under the snapshot key
    ``key``, and every change to that set, goes through it: reading and
    committing the current record, writing and copying snapshots, listing,
    finding and fetching them (verified), and deleting generations. It
    holds no state of its own but the store and the key, so any number of
    them may look at one bucket (the admin reads through a store with short
    timeouts of its own).
    """

    def __init__(self, store: ObjectStore, key: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.store = store
        self.key = key
        #: How an image is cut into objects when it is written (see `chunks`).
        self.chunk_bytes = chunk_bytes

    def __repr__(self) -> str:
        return f"History({self.store.describe()}, {self.key!r})"

    # -- keys ------------------------------------------------------------------------------

    @property
    def current_key(self) -> str:
        """The key of ``K.current``."""
        return self.key + CURRENT_SUFFIX

    def record_key(self, name: str, kind: str) -> str:
        """The key of the record of the generation or label ``name``."""
        return self._base(kind) + name + RECORD_SUFFIX

    def chunk_key(self, name: str, kind: str, index: int = 0) -> str:
        """The key of chunk ``index`` of the generation or label ``name``."""
        return self._base(kind) + name + CHUNK_SUFFIX.format(index=index)

    def _base(self, kind: str) -> str:
        return self.key + (GENERATIONS_INFIX if kind == GENERATION else LABELS_INFIX)

    # -- the current record --------------------------------------------------------------------

    def current(self) -> Current | None:
        """``K.current``, or None if no writer of this version ever started on the bucket.

        Raises `SnapshotCorrupt` when it exists but cannot be read.
        """
        info = self.store.head(self.current_key)
        if info is None:
            return None
        try:
            raw = json.loads(self.store.get(self.current_key).decode("utf-8"))
            raw_record = raw.get("record")
            record = None
            if raw_record is not None:
                where = self.record_key(raw_record["name"], GENERATION)
                record = SnapshotRecord.from_json(json.dumps(raw_record).encode("utf-8"), key=where)
            return Current(
                record=record,
                writer=str(raw.get("writer", "")),
                updated_at=float(raw.get("updated_at", 0)),
                etag=info.etag,
                next_seq=int(raw.get("next_seq", 0)),
            )
        except ObjectNotFound:
            return None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SnapshotCorrupt(self.current_key, f"it cannot be read ({exc!r})") from None

    def commit(self, record: SnapshotRecord | None, writer: str, *, etag: str | None, next_seq: int) -> Current:
        """Make ``record`` current, only if ``K.current`` is still at ``etag`` (None: only if there is none).

        Raises `PreconditionFailed` when another writer changed it since: the caller has been fenced off.
        """
        updated_at = time.time()
        body = {
            "format": 1,
            "generation": None if record is None else record.name,
            "record": None if record is None else json.loads(record.to_json()),
            "writer": writer,
            "updated_at": updated_at,
            "next_seq": next_seq,
        }
        data = json.dumps(body, sort_keys=True, indent=1).encode("utf-8")
        info = put_conditionally(
            self.store, self.current_key, data, writer=writer, if_match=etag, content_type="application/json"
        )
        return Current(record=record, writer=writer, updated_at=updated_at, etag=info.etag, next_seq=next_seq)

    def _committed(self) -> SnapshotRecord | None:
        """The committed generation's record, or None when there is none or ``K.current`` cannot be read."""
        try:
            current = self.current()
        except SnapshotCorrupt:
            return None
        return current.record if current is not None else None

    # -- writing snapshots ----------------------------------------------------------------------

    def write(
        self,
        name: str,
        kind: str,
        source: bytes | Path,
        *,
        seq: int,
        writer: str,
        signing_key: bytes | None,
        parent: str | None = None,
        progress: Progress | None = None,
    ) -> SnapshotRecord:
        """Upload ``source`` (a database image, or a file holding one) as a new snapshot and write its record.

        Both objects are created only if absent, so an existing snapshot is
        never overwritten; `PreconditionFailed` means another writer has the name.
        """
        if isinstance(source, Path):
            chunks, digest, size = upload_chunks(
                self.store,
                source,
                lambda index: self.chunk_key(name, kind, index),
                writer=writer,
                chunk_bytes=self.chunk_bytes,
                progress=progress,
            )
        else:
            chunk_key = self.chunk_key(name, kind)
            size, digest = len(source), hashlib.sha256(source).hexdigest()
            put_conditionally(self.store, chunk_key, source, writer=writer, sha256=digest, content_type=CONTENT_TYPE)
            chunks = (Chunk(key=chunk_key, size=size, sha256=digest),)
            if progress is not None:
                progress(size)
        record = SnapshotRecord(
            name=name,
            kind=kind,
            created_at=time.time(),
            size=size,
            sha256=digest,
            chunks=chunks,
            seq=seq,
            writer=writer,
            parent=parent,
        ).signed_with(signing_key)
        return self._write_record(record)

    def copy(
        self, source: SnapshotRecord, name: str, kind: str, *, seq: int, writer: str, signing_key: bytes | None
    ) -> SnapshotRecord:
        """A new snapshot with the same content as ``source``, by server-side copies of its chunks.

        `FileExistsError` (or `PreconditionFailed`) when the name is taken.
        """
        chunks = []
        for index, chunk in enumerate(source.chunks):
            target = self.chunk_key(name, kind, index)
            if self.store.head(target) is not None:
                raise FileExistsError(target)
            self.store.copy(chunk.key, target)
            chunks.append(replace(chunk, key=target))
        record = SnapshotRecord(
            name=name,
            kind=kind,
            created_at=time.time(),
            size=source.size,
            sha256=source.sha256,
            chunks=tuple(chunks),
            seq=seq,
            writer=writer,
        ).signed_with(signing_key)
        return self._write_record(record)

    def _write_record(self, record: SnapshotRecord) -> SnapshotRecord:
        target = self.record_key(record.name, record.kind)
        put_conditionally(self.store, target, record.to_json(), writer=record.writer, content_type="application/json")
        return replace(record, key=target)

    def planned(self, name: str, seq: int) -> GenerationObjects:
        """The objects every generation called ``name`` has, before (or whether or not) they exist: its record and
        first chunk. An attempt that failed half-way may have more chunks: `with_every_object` finds them."""
        return GenerationObjects(
            name=name,
            seq=seq,
            created_at=time.time(),
            keys=(self.record_key(name, GENERATION), self.chunk_key(name, GENERATION)),
            has_record=True,
        )

    def with_every_object(self, generation: GenerationObjects) -> GenerationObjects:
        """``generation`` with every object the bucket holds for it (one listing): what deleting it must delete."""
        prefix = self._base(GENERATION) + generation.name + "."
        found = {info.key for info in iter_objects(self.store, prefix)}
        return replace(generation, keys=tuple(sorted(found | set(generation.keys))))

    # -- reading snapshots -----------------------------------------------------------------------

    def fetch(
        self, record: SnapshotRecord, dest: Path, *, keys: Sequence[bytes], progress: Progress | None = None
    ) -> None:
        """Download ``record``'s snapshot to ``dest`` and prove it: HMAC, every SHA-256, SQLite's integrity check.

        Raises `SnapshotCorrupt` naming the object at fault; ``dest`` is left
        only when everything verified. 0.4.x snapshots have no record to sign,
        so only their content is checked.
        """
        if record.kind != LEGACY:
            record.verify_signature(keys)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            whole = download_chunks(self.store, record.chunks, dest, progress=progress)
            if record.sha256 and whole != record.sha256:
                raise SnapshotCorrupt(record.key or record.name, "the chunks together do not match its SHA-256")
            validate(dest, record.chunks[0].key if len(record.chunks) == 1 else record.key)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def fetched(
        self, record: SnapshotRecord, *, keys: Sequence[bytes], progress: Progress | None = None
    ) -> Iterator[Path]:
        """`fetch` into a temporary file that is removed afterwards."""
        with tempfile.TemporaryDirectory(prefix="buckethead-restore-") as tmp:
            path = Path(tmp) / "snapshot.db"
            self.fetch(record, path, keys=keys, progress=progress)
            yield path

    def legacy(self) -> list[SnapshotRecord]:
        """The 0.4.x snapshot at ``K`` and its ``K.prev``, as records (unsigned; their SHA-256 if 0.4.x stored one)."""
        found = []
        for name, object_key in ((LEGACY_LATEST, self.key), (LEGACY_PREVIOUS, self.key + LEGACY_PREVIOUS_SUFFIX)):
            info = self.store.head(object_key)
            if info is None:
                continue
            digest = info.metadata.get("sha256", "")
            found.append(
                SnapshotRecord(
                    name=name,
                    kind=LEGACY,
                    created_at=info.last_modified.timestamp(),
                    size=info.size,
                    sha256=digest,
                    chunks=(Chunk(key=object_key, size=info.size, sha256=digest),),
                    key=object_key,
                )
            )
        return found

    # -- the catalogue ------------------------------------------------------------------------------

    def generations(self) -> list[GenerationObjects]:
        """Every generation in the bucket, committed or not, oldest first, from one listing (no object is read)."""
        base = self._base(GENERATION)
        found: dict[str, list[tuple[str, float]]] = {}
        for info in iter_objects(self.store, base):
            name = info.key[len(base) :].split(".", 1)[0]
            if generation_seq(name) is not None:
                found.setdefault(name, []).append((info.key, info.last_modified.timestamp()))
        listed = [
            GenerationObjects(
                name=name,
                seq=generation_seq(name) or 0,
                created_at=min(t for _, t in objects),
                keys=tuple(sorted(k for k, _ in objects)),
                has_record=self.record_key(name, GENERATION) in {k for k, _ in objects},
            )
            for name, objects in found.items()
        ]
        return sorted(listed, key=lambda g: (g.seq, g.created_at))

    def records(self, kind: str) -> list[SnapshotRecord]:
        """Every readable record of ``kind`` (generations or labels), newest first; unreadable ones are skipped."""
        keys = [info.key for info in iter_objects(self.store, self._base(kind)) if info.key.endswith(RECORD_SUFFIX)]
        return sorted(self._read_records(keys), key=lambda r: (r.seq, r.created_at), reverse=True)

    def _record(self, name: str, kind: str) -> SnapshotRecord:
        target = self.record_key(name, kind)
        return SnapshotRecord.from_json(self.store.get(target), key=target)

    def _read_records(self, keys: Sequence[str]) -> list[SnapshotRecord]:
        """The records at ``keys`` that can be read, read concurrently; unreadable ones are left out."""

        def read(record_object: str) -> SnapshotRecord | None:
            try:
                return SnapshotRecord.from_json(self.store.get(record_object), key=record_object)
            except (SnapshotCorrupt, ObjectNotFound):
                return None

        return [r for r in _concurrently(read, keys) if r is not None]

    def _restorable(self, current: SnapshotRecord | None) -> list[SnapshotRecord]:
        """Every readable generation but those `lineage` proves were never committed, newest first."""
        records = self.records(GENERATION)
        never = uncommitted(records, current)
        return [r for r in records if r.name not in never]

    def snapshots(self) -> list[SnapshotEntry]:
        """Every restorable snapshot: generations newest first, then labels, then a 0.4.x snapshot if there is one."""
        committed = self._committed()
        current_name = committed.name if committed is not None else None
        records = [*self._restorable(committed), *self.records(LABELLED), *self.legacy()]
        return [_entry(r, r.kind == GENERATION and r.name == current_name) for r in records]

    def find(self, name: str) -> SnapshotEntry:
        """The snapshot called ``name``: ``latest``, ``previous``, a generation, a label or ``legacy``.

        KeyError if there is none (a generation that was never committed is none).
        """
        try:
            current = self.current()
        except SnapshotCorrupt:
            if name in (LATEST, PREVIOUS):
                raise KeyError(name) from None  # there is no telling which generation is current
            current = None
        committed = current.record if current is not None else None
        if name in (LATEST, PREVIOUS) and committed is None:
            name = LEGACY_LATEST if name == LATEST else LEGACY_PREVIOUS
        if name == LATEST and committed is not None:
            record = committed
        elif name == PREVIOUS and committed is not None:
            older = [r for r in self._restorable(committed) if r.seq < committed.seq]
            if not older:
                raise KeyError(name)
            record = older[0]
        elif name in (LEGACY_LATEST, LEGACY_PREVIOUS):
            found = [r for r in self.legacy() if r.name == name]
            if not found:
                raise KeyError(name)
            record = found[0]
        elif generation_seq(name) is not None:
            # A generation that was written but never committed is no snapshot of the bucket's history.
            found = [r for r in self._restorable(committed) if r.name == name]
            if not found:
                raise KeyError(name)
            record = found[0]
        else:
            try:
                record = self._record(validate_label(name), LABELLED)
            except (ValueError, ObjectNotFound):
                raise KeyError(name) from None
        return _entry(record, committed is not None and record.kind == GENERATION and record.name == committed.name)

    def newest_verifying(self, *, keys: Sequence[bytes], excluding: str | None = None) -> SnapshotRecord | None:
        """The newest committed generation or label that passes every check (each candidate is downloaded), or None."""
        candidates = [*self._restorable(self._committed()), *self.records(LABELLED)]
        for record in sorted(candidates, key=lambda r: r.created_at, reverse=True):
            if record.name == excluding:
                continue
            try:
                with self.fetched(record, keys=keys):
                    return record
            except (SnapshotCorrupt, ObjectNotFound):
                continue
        return None

    def unfinished(
        self, listing: Sequence[GenerationObjects], current: SnapshotRecord | None
    ) -> list[GenerationObjects]:
        """The generations of ``listing`` that no writer may commit once ``current`` is claimed.

        Those are a crashed flush's data without a record, and generations
        `lineage` proves uncommitted (a fenced writer's rejected flush, a
        failed attempt).
        """
        records = self._read_records([self.record_key(g.name, GENERATION) for g in listing if g.has_record])
        never = uncommitted(records, current)
        return [g for g in listing if not g.has_record or g.name in never]

    # -- retention ------------------------------------------------------------------------------

    def delete(self, generation: GenerationObjects) -> None:
        """Delete a generation's record first, so no record ever names a missing chunk, then its chunks."""
        for object_key in sorted(generation.keys, key=lambda k: not k.endswith(RECORD_SUFFIX)):
            self.store.delete(object_key)


def _concurrently(call: Callable[[T], R], items: Sequence[T]) -> list[R]:
    if len(items) < 2:
        return [call(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(READ_CONCURRENCY, len(items))) as pool:
        return list(pool.map(call, items))


def _entry(record: SnapshotRecord, current: bool) -> SnapshotEntry:
    return SnapshotEntry(
        name=record.name,
        kind=record.kind,
        key=record.key,
        size=record.size,
        last_modified=dt.datetime.fromtimestamp(record.created_at, tz=dt.UTC),
        current=current,
        signed=record.signed,
        sha256=record.sha256,
        record=record,
    )
