"""The bucket's history: generations, labels, the current record, retention — one object, `History`.

Given the snapshot key ``K`` (``bucketsqlite/snap.db`` by default)::

    K.current                            which generation is current, and which writer said so
    K.generations/<name>.json            a generation's signed record (see `record`)
    K.generations/<name>.chunk0000…      its base: the database image, in chunks, in order
    K.generations/<name>.d00000001…      its deltas: the pages each later flush changed (see `delta`)
    K.generations/<name>.m00000001-00000016…  merged deltas, each standing for a run of them (see `chain`)
    K.labels/<label>.json, .chunk0000    a labelled copy, never pruned
    K, K.prev                            a buckethead 0.4.x snapshot, adopted as it is

Every object but ``K.current`` is written once with a create-only write, so a
flush can never overwrite a snapshot. A new generation (a new base) is
committed by replacing ``K.current`` conditionally on the version this
writer last saw: a writer whose lease was taken over while it was paused
finds that version gone and is fenced off, instead of silently rolling the
bucket back. A delta is committed by its own create-only write, numbered
without gaps; the chain of a generation is every point its deltas (and
merged deltas) lead to from the base. A writer that claims the bucket
records in ``K.current`` how long the chain was at the claim, and a paused
predecessor's later deltas are never part of it (see `_chain_ends`). A crash at
any point leaves ``K.current`` naming a whole, verified generation. A generation
that was never committed is never listed or offered for restore (see
`lineage`), and the next writer deletes it.

Generation names are ``<sequence>-<random>``: they sort by age, and two
writers never use the same sequence number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from . import chain as chains
from .chain import Link, links_of, span_of
from .chunks import download_chunks, upload_chunks
from .config import DEFAULT_CHUNK_BYTES
from .delta import CONTENT_TYPE as DELTA_CONTENT_TYPE
from .delta import Delta
from .delta import apply as apply_deltas
from .delta import decode as decode_delta
from .errors import ObjectNotFound, SnapshotCorrupt
from .lineage import generation_seq, uncommitted
from .objectstore import ObjectStore, Progress, iter_objects
from .objectstore.conditional import put_conditionally
from .record import DELTAS_FORMAT, GENERATION, LABELLED, LEGACY, Chunk, SnapshotRecord
from .snapshot import CONTENT_TYPE, page_size_of, validate

CURRENT_SUFFIX = ".current"
GENERATIONS_INFIX = ".generations/"
LABELS_INFIX = ".labels/"
RECORD_SUFFIX = ".json"
CHUNK_SUFFIX = ".chunk{index:04d}"
DELTA_SUFFIX = ".d{seq:08d}"
MERGED_SUFFIX = ".m{first:08d}-{last:08d}"
#: A restore point inside a generation: ``<generation>+<deltas applied>``.
POINT_SEPARATOR = "+"
LEGACY_PREVIOUS_SUFFIX = ".prev"

LATEST, PREVIOUS = "latest", "previous"
#: The prefix of the labels a restore makes of the state it replaces.
PRE_RESTORE = "pre-restore"
LEGACY_LATEST, LEGACY_PREVIOUS = "legacy", "legacy-previous"
RESERVED = (LATEST, PREVIOUS, LEGACY_LATEST, LEGACY_PREVIOUS)
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,99}$")
#: Records read at once when listing: a bucket's round trips overlap, a local directory does not mind.
READ_CONCURRENCY = 8

logger = logging.getLogger("buckethead_django")

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
    #: How many deltas the committed generation had when this was written (more may have been committed since).
    deltas: int = 0

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
    #: The deltas applied on the base: None for all the generation has (its newest point), 0 for the base alone.
    deltas: int | None = None


@dataclass(frozen=True)
class GenerationObjects:
    """A generation as a listing sees it: its name, sequence, age and every object it has."""

    name: str
    seq: int
    created_at: float
    keys: tuple[str, ...]
    has_record: bool
    #: Its deltas and merged deltas (see `chain`).
    links: tuple[Link, ...] = ()

    @functools.cached_property
    def deltas(self) -> tuple[tuple[int, float], ...]:
        """Its chain: every point its links lead to from the base, (number, when written), in order."""
        return chains.points(self.links)


@dataclass(frozen=True)
class ChainHead:
    """The end of a chain as a fetch applied it: the last delta's number and digest (0 and the base's SHA-256)."""

    seq: int
    digest: str


@dataclass(frozen=True)
class Point:
    """One restorable point: a generation's base and its first ``deltas`` deltas, as of ``at``."""

    generation: SnapshotRecord
    deltas: int
    at: float
    current: bool
    #: The generation's newest point, which the generation's name alone also names.
    newest: bool = False

    @property
    def name(self) -> str:
        """``<generation>+<deltas>``; the generation's newest point goes by the generation's name."""
        return self.generation.name if self.newest else point_name(self.generation.name, self.deltas)


def point_name(generation: str, deltas: int) -> str:
    return f"{generation}{POINT_SEPARATOR}{deltas}"


def generation_of(point: str | None) -> str | None:
    """The generation a point belongs to (a name without a point is returned as it is)."""
    return None if point is None else point.partition(POINT_SEPARATOR)[0]


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
    daily: int = 0,
) -> set[str]:
    """The generations retention keeps: the newest ``keep``, any younger than ``max_age_seconds``, the newest of
    each of the last ``daily`` days (UTC), and the current one. A kept generation keeps all its deltas.

    A generation's points reach until the next base, so the one before the oldest young one is kept too: every
    flush younger than ``max_age_seconds`` stays restorable.
    """
    newest_first = sorted(generations, key=lambda g: (g.seq, g.created_at), reverse=True)
    kept = {g.name for g in newest_first[: max(keep, 0)]}
    if max_age_seconds is not None:
        young = [i for i, g in enumerate(newest_first) if now - g.created_at < max_age_seconds]
        reach = (max(young) + 1) if young else 0  # the newest generation older than the age reaches into it
        kept |= {g.name for g in newest_first[: reach + 1]}
    days: set[int] = set()
    for g in newest_first:
        day = int(g.created_at // 86400)
        if now // 86400 - day < daily and day not in days:
            days.add(day)
            kept.add(g.name)
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

    def delta_key(self, name: str, seq: int, *, first: int | None = None) -> str:
        """The key of delta ``seq`` (from 1) of the generation ``name``, or of the merged one from ``first``."""
        if first is not None and first != seq:
            return self._base(GENERATION) + name + MERGED_SUFFIX.format(first=first, last=seq)
        return self._base(GENERATION) + name + DELTA_SUFFIX.format(seq=seq)

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
                deltas=int(raw.get("deltas", 0)),
            )
        except ObjectNotFound:
            return None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SnapshotCorrupt(self.current_key, f"it cannot be read ({exc!r})") from None

    def commit(
        self, record: SnapshotRecord | None, writer: str, *, etag: str | None, next_seq: int, deltas: int = 0
    ) -> Current:
        """Make ``record`` current, only if ``K.current`` is still at ``etag`` (None: only if there is none).

        ``deltas`` is how many deltas of ``record`` are committed so far (the hint readers start from).

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
            "deltas": deltas,
        }
        data = json.dumps(body, sort_keys=True, indent=1).encode("utf-8")
        info = put_conditionally(
            self.store, self.current_key, data, writer=writer, if_match=etag, content_type="application/json"
        )
        return Current(
            record=record, writer=writer, updated_at=updated_at, etag=info.etag, next_seq=next_seq, deltas=deltas
        )

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
        parent_deltas: int = 0,
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
            parent_deltas=parent_deltas,
        ).signed_with(signing_key)
        return self._write_record(record)

    def copy(
        self,
        source: SnapshotRecord,
        name: str,
        kind: str,
        *,
        seq: int,
        writer: str,
        signing_key: bytes | None,
        keys: Sequence[bytes] = (),
        deltas: int | None = None,
    ) -> SnapshotRecord:
        """A new snapshot with the same content as ``source`` (and its first ``deltas`` deltas; None: all).

        A base alone is copied server-side, chunk by chunk; with deltas the
        point is downloaded, verified with ``keys`` and written whole.
        `FileExistsError` (or `PreconditionFailed`) when the name is taken.
        """
        chain = self.deltas(source.name) if source.kind == GENERATION and deltas != 0 else ()
        if chain and (deltas is None or chain[0][0] <= deltas):
            if self.store.head(self.record_key(name, kind)) is not None:
                raise FileExistsError(self.record_key(name, kind))
            with self.fetched(source, keys=keys, deltas=deltas) as image:
                return self.write(name, kind, image, seq=seq, writer=writer, signing_key=signing_key)
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

    def write_delta(self, delta: Delta, data: bytes, *, writer: str) -> Link:
        """Commit ``delta`` (create-only): `PreconditionFailed` if its number (or merged run) is taken."""
        header = delta.header
        target = self.delta_key(header.generation, header.seq, first=delta.first)
        put_conditionally(self.store, target, data, writer=writer, sha256=delta.digest, content_type=DELTA_CONTENT_TYPE)
        return Link(delta.first, header.seq, header.created_at, target, len(data))

    def read_links(
        self, record: SnapshotRecord, links: Sequence[Link], *, keys: Sequence[bytes], known: Mapping[str, bytes] = {}
    ) -> list[Delta]:
        """The deltas at ``links`` of ``record``, downloaded at once (but those ``known`` by key), each verified,
        each following the one before. Raises `SnapshotCorrupt` naming the first link at fault.
        """

        def read(link: Link) -> bytes:
            if link.key in known:
                return known[link.key]
            try:
                return self.store.get(link.key)
            except ObjectNotFound:
                raise SnapshotCorrupt(link.key, "the object is missing") from None

        bodies = _concurrently(read, links)
        applied: list[Delta] = []
        for link, body in zip(links, bodies, strict=True):
            delta = decode_delta(body, key=link.key, keys=keys)
            header = delta.header
            if (header.generation, delta.first, header.seq) != (record.name, link.first, link.last):
                moved = f"{delta.first}-{header.seq} of {header.generation!r}"
                raise SnapshotCorrupt(link.key, f"it is delta {moved}, moved here")
            if applied and header.parent != applied[-1].tip:
                raise SnapshotCorrupt(link.key, "it does not follow the delta before it (its parent digest differs)")
            applied.append(delta)
        return applied

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
        self,
        record: SnapshotRecord,
        dest: Path,
        *,
        keys: Sequence[bytes],
        progress: Progress | None = None,
        deltas: int | None = None,
        links: Sequence[Link] | None = None,
    ) -> ChainHead:
        """Download ``record``'s snapshot to ``dest`` and prove it: HMAC, every SHA-256, SQLite's integrity check.

        A generation's base is followed by its deltas: the first ``deltas``
        of its chain (0: the base alone; None: all that are committed, see
        `points`), found among ``links`` (None: listed now). Raises
        `SnapshotCorrupt` naming the object at fault; ``dest`` is left only
        when everything verified. 0.4.x snapshots have no record to sign, so
        only their content is checked. Returns the end of the chain applied.
        """
        if record.kind != LEGACY:
            record.verify_signature(keys)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Every chunk verified on its own proves the whole: the whole's digest is read only when one has none.
            unproved = bool(record.sha256) and not all(c.sha256 for c in record.chunks)
            whole = download_chunks(self.store, record.chunks, dest, progress=progress, digest_whole=unproved)
            if unproved and whole != record.sha256:
                raise SnapshotCorrupt(record.key or record.name, "the chunks together do not match its SHA-256")
            head = ChainHead(0, record.sha256)
            if record.kind == GENERATION and deltas is None:
                deltas = max((p.deltas for p in self.points() if p.generation.name == record.name), default=0)
            if record.kind == GENERATION and deltas != 0:
                chain = self._read_chain(record, keys=keys, upto=deltas, links=links)
                _check_page_size(dest, chain)
                apply_deltas(chain, dest)
                if chain:
                    head = ChainHead(chain[-1].header.seq, chain[-1].tip)
            validate(dest, record.chunks[0].key if len(record.chunks) == 1 and head.seq == 0 else record.key)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return head

    def _read_chain(
        self, record: SnapshotRecord, *, keys: Sequence[bytes], upto: int | None, links: Sequence[Link] | None = None
    ) -> list[Delta]:
        """The deltas that lead from ``record``'s base to its point ``upto`` (None: its newest), fewest first.

        Each is verified and must follow the one before it. A merged delta
        that fails is passed by through the deltas it stands for, when the
        bucket still holds them; any other damage is refused by name, with
        the newest point before it.
        """
        if links is None:
            links = self.links(record.name)
        chain = chains.points(links)
        target = chains.end(chain) if upto is None else upto
        bad: set[Link] = set()
        while True:
            usable = [link for link in links if link not in bad]
            try:
                route = chains.path(usable, target)
            except KeyError:
                reached = chains.newest(chains.points(usable), target)
                missing = self.delta_key(record.name, reached + 1)
                raise SnapshotCorrupt(
                    missing,
                    f"the object is missing: generation {record.name} has no delta from point {reached} on "
                    f"towards point {target}; the newest point before it is {point_name(record.name, reached)}",
                ) from None
            try:
                read = self.read_links(record, route, keys=keys)
                if read and read[0].header.parent != record.sha256:
                    raise SnapshotCorrupt(route[0].key, "it does not follow the base (its parent digest differs)")
                return read
            except SnapshotCorrupt as damage:
                link = next((x for x in route if x.key == damage.key), None)
                if link is not None and link.merged:
                    logger.warning("BucketSQLite passed by a merged delta that fails verification: %s", damage)
                    bad.add(link)
                    continue
                before = 0 if link is None else chains.newest(chains.points(usable), link.first - 1)
                raise SnapshotCorrupt(
                    damage.key, f"{damage.reason}; the newest point before it is {point_name(record.name, before)}"
                ) from None

    @contextlib.contextmanager
    def fetched(
        self,
        record: SnapshotRecord,
        *,
        keys: Sequence[bytes],
        progress: Progress | None = None,
        deltas: int | None = None,
    ) -> Iterator[Path]:
        """`fetch` into a temporary file that is removed afterwards."""
        with tempfile.TemporaryDirectory(prefix="buckethead-restore-") as tmp:
            path = Path(tmp) / "snapshot.db"
            self.fetch(record, path, keys=keys, progress=progress, deltas=deltas)
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
        found: dict[str, list[tuple[str, float, int]]] = {}
        for info in iter_objects(self.store, base):
            name = info.key[len(base) :].split(".", 1)[0]
            if generation_seq(name) is not None:
                found.setdefault(name, []).append((info.key, info.last_modified.timestamp(), info.size))
        listed = []
        for name, objects in found.items():
            record_key = self.record_key(name, GENERATION)
            base_times = [t for k, t, _ in objects if span_of(k) is None]
            listed.append(
                GenerationObjects(
                    name=name,
                    seq=generation_seq(name) or 0,
                    created_at=min(base_times or [t for _, t, _ in objects]),
                    keys=tuple(sorted(k for k, _, _ in objects)),
                    has_record=record_key in {k for k, _, _ in objects},
                    links=links_of(objects),
                )
            )
        return sorted(listed, key=lambda g: (g.seq, g.created_at))

    def links(self, name: str, *, after: int = 0) -> tuple[Link, ...]:
        """The deltas and merged deltas of generation ``name`` as the bucket holds them now (one listing), or only
        the deltas numbered after ``after`` (a listing that starts there: what a chain gained since)."""
        prefix = self._base(GENERATION) + name + (DELTA_SUFFIX.partition("{")[0] if after else ".")
        listed = iter_objects(self.store, prefix, start_after=self.delta_key(name, after) if after else None)
        return links_of((info.key, info.last_modified.timestamp(), info.size) for info in listed)

    def deltas(self, name: str) -> tuple[tuple[int, float], ...]:
        """The chain of generation ``name`` as the bucket holds it now: each point, (number, when written)."""
        return chains.points(self.links(name))

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
        """Every restorable snapshot: each point newest first (see `points`), then labels, then a 0.4.x snapshot."""
        entries = [_point_entry(p) for p in self.points()]
        return [*entries, *(_entry(r, False) for r in (*self.records(LABELLED), *self.legacy()))]

    def points(self) -> list[Point]:
        """Every restorable point, newest first: each committed generation's base, then each committed delta."""
        try:
            current = self.current()
        except SnapshotCorrupt:
            current = None
        committed = current.record if current is not None else None
        restorable = self._restorable(committed)
        deltas = {g.name: g.deltas for g in self.generations()}
        ends = _chain_ends(restorable, current, deltas)
        found: list[Point] = []
        for record in restorable:
            chain = chains.upto(deltas.get(record.name, ()), ends[record.name])
            current_generation = committed is not None and record.name == committed.name
            end = chains.end(chain)
            found.append(Point(record, 0, record.created_at, current_generation and not end, not end))
            found.extend(
                Point(record, seq, at, current_generation and seq == end, seq == end) for seq, at in chain
            )  # fmt: skip
        return sorted(found, key=lambda p: (p.generation.seq, p.deltas), reverse=True)

    def committed_deltas(self, current: Current, chain: tuple[tuple[int, float], ...] | None = None) -> int:
        """How many deltas of the current generation are committed (``chain``: its deltas as listed; None: list)."""
        if current.record is None:
            return 0
        listed = {current.record.name: self.deltas(current.record.name) if chain is None else chain}
        return _chain_ends([current.record], current, listed)[current.record.name]

    def find_at(self, when: float) -> SnapshotEntry:
        """The newest restorable point written at or before ``when`` (Unix time); KeyError if there is none."""
        for point in self.points():
            if point.at <= when:
                return _point_entry(point)
        raise KeyError(dt.datetime.fromtimestamp(when, tz=dt.UTC).isoformat())

    def find(self, name: str) -> SnapshotEntry:
        """The snapshot called ``name``: ``latest``, ``previous``, a point, a generation, a label or ``legacy``.

        ``latest`` is the newest point and ``previous`` the one before it;
        ``<generation>+<n>`` is a generation's base and first ``n`` deltas,
        and a generation's name alone its newest point. KeyError if there is
        none (a generation or delta that was never committed is none).
        """
        if name in (LATEST, PREVIOUS):
            try:
                current = self.current()
            except SnapshotCorrupt:
                raise KeyError(name) from None  # there is no telling which generation is current
            if current is None or current.record is None:
                return self.find(LEGACY_LATEST if name == LATEST else LEGACY_PREVIOUS)
            points = self.points()
            index = 0 if name == LATEST else 1
            if len(points) <= index:
                raise KeyError(name)
            return _point_entry(points[index])
        if name in (LEGACY_LATEST, LEGACY_PREVIOUS):
            found = [r for r in self.legacy() if r.name == name]
            if not found:
                raise KeyError(name)
            return _entry(found[0], False)
        generation, separator, count = name.rpartition(POINT_SEPARATOR)
        if not separator:
            generation, count = name, ""
        if generation_seq(generation) is not None and (count.isdigit() or not count):
            # A generation or delta that was written but never committed is no point of the bucket's history.
            points = [p for p in self.points() if p.generation.name == generation]
            if count:
                points = [p for p in points if p.deltas == int(count)]
            if not points:
                raise KeyError(name)
            return _point_entry(points[0])
        try:
            return _entry(self._record(validate_label(name), LABELLED), False)
        except (ValueError, ObjectNotFound):
            raise KeyError(name) from None

    def newest_verifying(self, *, keys: Sequence[bytes], excluding: str | None = None) -> str | None:
        """The newest point or label that passes every check, or None. Each candidate is downloaded; a point
        whose chain breaks at a delta offers the point before that delta."""
        candidates: list[tuple[float, SnapshotEntry]] = []
        newest: dict[str, Point] = {}
        for point in self.points():
            newest.setdefault(point.generation.name, point)
        candidates += [(p.at, _point_entry(p)) for p in newest.values()]
        candidates += [(r.created_at, _entry(r, False)) for r in self.records(LABELLED)]
        for _, entry in sorted(candidates, key=lambda c: c[0], reverse=True):
            if generation_of(entry.name) == excluding or entry.name == excluding:
                continue
            deltas = entry.deltas
            while True:
                try:
                    with self.fetched(entry.record, keys=keys, deltas=deltas):
                        return entry.name if deltas == entry.deltas else point_name(entry.record.name, deltas or 0)
                except (SnapshotCorrupt, ObjectNotFound) as damage:
                    bad = span_of(getattr(damage, "key", "") or "")
                    if bad is None or bad[0] <= 1:
                        break
                    # The chain breaks there: the newest point before it may verify.
                    deltas = chains.newest(self.deltas(entry.record.name), bad[0] - 1)
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

    def prune_labels(self, prefix: str, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` labels named ``<prefix>-<UTC time>-…``; their names.

        Only labels this engine names by time are pruned: a label given by
        hand is never deleted.
        """
        timed = sorted(
            (r for r in self.records(LABELLED) if r.name.startswith(prefix + "-")), key=lambda r: r.name, reverse=True
        )
        for record in timed[keep:]:
            # The record first, so that no record ever names a missing chunk.
            self.store.delete(self.record_key(record.name, LABELLED))
            for chunk in record.chunks:
                self.store.delete(chunk.key)
        return [r.name for r in timed[keep:]]

    def delete(self, generation: GenerationObjects) -> None:
        """Delete a generation's record first, so no record ever names a missing chunk, then its chunks."""
        for object_key in sorted(generation.keys, key=lambda k: not k.endswith(RECORD_SUFFIX)):
            self.store.delete(object_key)


def _chain_ends(
    records: Sequence[SnapshotRecord], current: Current | None, listed: dict[str, tuple[tuple[int, float], ...]]
) -> dict[str, int]:
    """How many deltas of each generation in ``records`` are committed.

    All of its chain, but where a later generation says how far it followed
    it (``parent_deltas``), and where another writer has claimed the bucket
    since the current generation was written (``K.current`` then says how
    long its chain was at the claim): a paused predecessor's later deltas
    are never part of the history.
    """
    ends = {r.name: chains.end(listed.get(r.name, ())) for r in records}
    for record in records:
        if record.parent in ends and record.format >= DELTAS_FORMAT:
            ends[record.parent] = min(ends[record.parent], record.parent_deltas)
    committed = current.record if current is not None else None
    if current is not None and committed is not None and committed.name in ends and current.writer != committed.writer:
        ends[committed.name] = min(ends[committed.name], current.deltas)
    return ends


def _point_entry(point: Point) -> SnapshotEntry:
    return replace(
        _entry(point.generation, point.current),
        name=point.name,
        last_modified=dt.datetime.fromtimestamp(point.at, tz=dt.UTC),
        deltas=point.deltas,
    )


def _check_page_size(image: Path, chain: Sequence[Delta]) -> None:
    size = page_size_of(image)
    for delta in chain:
        if delta.pages and delta.header.page_size != size:
            raise SnapshotCorrupt(
                f"{delta.header.generation} delta {delta.header.seq}",
                f"its pages are {delta.header.page_size} bytes, the base's {size}",
            )


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
