"""A database image as several objects, so it is uploaded and restored several requests at a time.

One object per image makes a flush and a restore one long request: a single
TCP stream to the bucket, at whatever speed that stream gets. Cutting the image
into chunks of ``chunk_bytes`` lets ``concurrency`` requests run at once, and
lets each chunk be verified on its own, so a damaged object is named exactly.

Memory stays bounded whatever the image's size: an upload holds at most
``concurrency`` chunks (each read from the file only when a worker is free for
it), and a download streams each chunk straight to its offset in the file,
hashing it on the way, so it holds a piece of ``COPY_CHUNK`` per worker.

Every chunk is written create-only through `put_conditionally`, like the rest
of a snapshot: a retry whose first attempt landed unseen is recognised, and
another writer's object is never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, TypeVar, cast

from .config import DEFAULT_CHUNK_BYTES, DEFAULT_TRANSFER_CONCURRENCY
from .errors import ObjectNotFound, SnapshotCorrupt
from .objectstore.base import COPY_CHUNK, Digest, ObjectStore, Progress
from .objectstore.conditional import put_conditionally
from .record import Chunk
from .snapshot import CONTENT_TYPE

R = TypeVar("R")


class ChunkedUpload(NamedTuple):
    """What `upload_chunks` wrote: the chunks in order, and the SHA-256 and size of the whole image."""

    chunks: tuple[Chunk, ...]
    sha256: str
    size: int


class _Stopped(Exception):
    """Raised inside a worker's stream when another chunk has failed, so the download ends early."""


def upload_chunks(
    store: ObjectStore,
    source: Path,
    key_of: Callable[[int], str],
    *,
    writer: str,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    concurrency: int = DEFAULT_TRANSFER_CONCURRENCY,
    content_type: str | None = CONTENT_TYPE,
    progress: Progress | None = None,
) -> ChunkedUpload:
    """Upload ``source`` as chunks ``key_of(0)``, ``key_of(1)``…, ``concurrency`` at a time.

    Each chunk is created only if absent (`put_conditionally`, as ``writer``,
    with the SHA-256 of the very bytes sent), so `PreconditionFailed` means
    another writer has one of the keys. A chunk is sent from the file, never
    held in memory whole: its worker hashes its range, then streams that
    range as the request's body. The whole image's SHA-256 is computed in
    another thread meanwhile. An empty file is one empty chunk, so every
    image has at least one.

    Returns a `ChunkedUpload` (unpacks as ``chunks, sha256, size``). On the
    first failure no further chunk is started and the error is raised once
    the chunks already in flight have finished; the chunks that did land stay
    in the bucket (an unfinished snapshot, which the caller cleans up).
    ``progress`` is called with each chunk's size once it has landed.
    """
    _check(chunk_bytes=chunk_bytes, concurrency=concurrency)
    whole = hashlib.sha256()
    chunks: dict[int, Chunk] = {}

    def landed(index: int, chunk: Chunk) -> None:
        chunks[index] = chunk
        if progress is not None:
            progress(chunk.size)

    with open(source, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        count = max(1, -(-size // chunk_bytes))

        def put(index: int) -> Chunk:
            offset = index * chunk_bytes
            length = min(chunk_bytes, size - offset)
            digest = hashlib.sha256()
            _hash_range(fd, offset, length, digest)
            body = cast(BinaryIO, FileRange(fd, offset, length))
            key = key_of(index)
            put_conditionally(store, key, body, writer=writer, sha256=digest.hexdigest(), content_type=content_type)
            return Chunk(key=key, size=length, sha256=digest.hexdigest())

        hasher: threading.Thread | None = threading.Thread(
            target=_hash_range, args=(fd, 0, size, whole), name="buckethead-image-digest"
        )
        try:
            hasher.start()  # type: ignore[union-attr]
        except RuntimeError:  # interpreter exit (a final flush from atexit, Python 3.12+): hash it here, after
            hasher = None
        try:
            _run((partial(put, index) for index in range(count)), min(concurrency, count), landed, threading.Event())
        finally:
            if hasher is not None:
                hasher.join()
        if hasher is None:
            _hash_range(fd, 0, size, whole)
    return ChunkedUpload(tuple(chunks[i] for i in range(count)), whole.hexdigest(), size)


class FileRange(io.RawIOBase):
    """Bytes ``offset`` to ``offset + size`` of an open file, as a seekable file of their own.

    A chunk is uploaded from it, so no chunk is ever held in memory whole;
    it can be read again from its start when a request is retried.
    """

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd, self._offset, self._size, self._pos = fd, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + pos))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._size - self._pos)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._offset + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def download_chunks(
    store: ObjectStore,
    chunks: Sequence[Chunk],
    dest: Path,
    *,
    concurrency: int = DEFAULT_TRANSFER_CONCURRENCY,
    progress: Progress | None = None,
    digest_whole: bool = True,
) -> str:
    """Download ``chunks`` into ``dest``, each at its offset, ``concurrency`` at a time; return the whole's SHA-256
    (or "" with ``digest_whole`` False: a caller whose every chunk has its own SHA-256 needs no other).

    Each chunk is verified as it streams in: its size, and its SHA-256 when
    the chunk has one (a 0.4.x snapshot may not). The first bad or missing
    chunk raises `SnapshotCorrupt` naming its key; the chunks not yet started
    are never started and those in flight stop at their next piece. No byte
    is ever written outside a chunk's own range, whatever the object holds.

    The file is written under a temporary name beside ``dest`` and renamed
    into place only when every chunk verified, so on failure nothing is left
    at ``dest`` (a file already there is not touched). The returned SHA-256
    of the whole image is computed while the downloads run, reading back each
    chunk (from the page cache) once it and every chunk before it are in; the
    caller compares it with the record's. ``progress`` is called from the
    worker threads with each piece's size.
    """
    _check(concurrency=concurrency)
    offsets = [0]
    for chunk in chunks:
        offsets.append(offsets[-1] + chunk.size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.part"
    stop = threading.Event()
    whole = hashlib.sha256()
    arrived = [False] * len(chunks)
    hashed = 0  # chunks[:hashed] are in the whole-image digest

    def fetch(index: int, fd: int) -> None:
        chunk = chunks[index]
        if stop.is_set():
            raise _Stopped
        sink = _ChunkWriter(fd, offsets[index], chunk.size, stop, progress)
        try:
            store.get_to(chunk.key, cast(BinaryIO, sink))
        except ObjectNotFound:
            raise SnapshotCorrupt(chunk.key, "the object is missing") from None
        digest = sink.digest.hexdigest()
        if sink.size != chunk.size or (chunk.sha256 and digest != chunk.sha256):
            raise SnapshotCorrupt(
                chunk.key,
                f"its content does not match its record: {sink.size} bytes with SHA-256 {digest[:12]}…, "
                f"the record says {chunk.size} bytes with SHA-256 {chunk.sha256[:12]}…",
            )

    def arrived_at(index: int, fd: int) -> None:
        nonlocal hashed
        if not digest_whole:
            return
        arrived[index] = True
        while hashed < len(chunks) and arrived[hashed]:
            _hash_range(fd, offsets[hashed], chunks[hashed].size, whole)
            hashed += 1

    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            os.ftruncate(fd, offsets[-1])
            tasks = (partial(fetch, index, fd) for index in range(len(chunks)))
            _run(tasks, min(concurrency, max(1, len(chunks))), lambda index, _: arrived_at(index, fd), stop)
        finally:
            os.close(fd)  # every worker has finished: `_run` returns or raises only then
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return whole.hexdigest() if digest_whole else ""


class _ChunkWriter:
    """Writes one chunk's bytes at its offset in the file while hashing them, verified with no second read.

    It is not seekable, so a store streams the object to it in order with
    one request (and no transfer manager). Bytes beyond the chunk's size are
    counted and hashed, for the error message, but never written: they would
    land in the next chunk's range.
    """

    def __init__(self, fd: int, offset: int, limit: int, stop: threading.Event, progress: Progress | None) -> None:
        self._fd = fd
        self._offset = offset
        self._limit = limit
        self._stop = stop
        self._progress = progress
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        if self._stop.is_set():
            raise _Stopped
        self.digest.update(data)
        room = self._limit - self.size
        if room > 0:
            _pwrite_all(self._fd, memoryview(data)[:room], self._offset + self.size)
        self.size += len(data)
        if self._progress is not None:
            self._progress(len(data))
        return len(data)

    def seekable(self) -> bool:
        return False


def _run(
    tasks: Iterator[Callable[[], R]], concurrency: int, done: Callable[[int, R], None], stop: threading.Event
) -> None:
    """Run ``tasks`` in order, at most ``concurrency`` at once; ``done(index, result)`` in this thread as each ends.

    A task is taken from the iterator only when a worker is free, so a lazy
    iterator bounds memory. On the first failure (the lowest index among
    those that ended together) ``stop`` is set, nothing more is started, and
    the error is raised once the tasks in flight have ended. Returns or raises
    only when no task is running. With ``concurrency`` 1 (a one-chunk image) no
    thread is started. At interpreter exit (a final flush in an
    ``atexit`` handler), `concurrent.futures` refuses new work: the tasks then
    run one by one in this thread, as they do with ``concurrency`` 1.
    """
    if concurrency == 1:
        for index, task in enumerate(tasks):
            done(index, task())
        return
    running: dict[Future[R], int] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="buckethead-chunks") as pool:
        try:
            for index, task in enumerate(_when_free(tasks, running, concurrency, done)):
                try:
                    running[pool.submit(task)] = index
                except RuntimeError as exc:
                    if "interpreter shutdown" not in str(exc):
                        raise
                    done(index, task())
            while running:
                _settle(running, done)
        except BaseException:
            stop.set()
            for future in running:
                future.cancel()
            raise  # leaving the pool waits for the tasks in flight, which ``stop`` cuts short


def _when_free(
    tasks: Iterator[Callable[[], R]], running: dict[Future[R], int], concurrency: int, done: Callable[[int, R], None]
) -> Iterator[Callable[[], R]]:
    """``tasks``, each taken only once fewer than ``concurrency`` are running."""
    while True:
        while len(running) >= concurrency:
            _settle(running, done)
        task = next(tasks, None)
        if task is None:
            return
        yield task


def _settle(running: dict[Future[R], int], done: Callable[[int, R], None]) -> None:
    """Wait for at least one running task to end; report those that ended in index order, raising the first error."""
    ended, _ = wait(running, return_when=FIRST_COMPLETED)
    for future in sorted(ended, key=running.__getitem__):
        index = running.pop(future)
        done(index, future.result())


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _hash_range(fd: int, offset: int, size: int, digest: Digest) -> None:
    end = offset + size
    while offset < end:
        piece = os.pread(fd, min(COPY_CHUNK, end - offset), offset)
        if not piece:
            raise OSError(f"the file being restored ended at byte {offset}, before {end}")
        digest.update(piece)
        offset += len(piece)


def _check(*, concurrency: int, chunk_bytes: int = 1) -> None:
    if concurrency < 1:
        raise ValueError(f"transfer concurrency must be at least 1, not {concurrency}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk size must be at least 1 byte, not {chunk_bytes}")
