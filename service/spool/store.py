"""The spool: a local write-ahead log of records the broker could not take in time.

Layout of ``SPOOL_DIR``: append-only segment files ``<sequence>.seg`` (20 digits,
so names sort in arrival order) of checksummed frames (``framing.py``), and a
``lock`` file that one process at a time holds (``flock``), so two gateways can
never write one spool.

* **Append** (``append``): the frame is written at the end of the active segment,
  then the caller waits for the *group commit*: one task fsyncs (``fdatasync``)
  whatever was written since the last sync, off the event loop, and wakes every
  append it covered. While one fsync runs, new appends accumulate for the next,
  so a burst of concurrent requests shares a few fsyncs. A new segment's
  directory entry is fsynced before its first record counts as durable.
* **Bound**: ``max_bytes`` over all segment files; an append that would pass it
  raises ``SpoolFullError``; nothing is ever half-accepted.
* **Read** (``read_batch``): from the *head* (the first record not yet
  acknowledged), in arrival order, only what is durable. Damaged bytes are
  skipped (see framing). ``acknowledge`` moves the head; a segment is deleted
  once every record in it is acknowledged (and it is no longer written to), and
  the last one as soon as the spool is empty, so an empty spool has no files.
* **Restart**: ``open`` scans the segments left on disk (all become read-only;
  new records go to a new segment), counts their valid records and resumes from
  the first. A torn tail from a crash mid-write is skipped, never appended to.
  Records that were forwarded but whose segment was not deleted yet are
  forwarded again: duplicates, which consumers drop by event id.

Single event loop, single writer process. File reads and fsyncs run in worker
threads; all bookkeeping happens on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from service.spool.framing import Frame, SpoolRecord, decode_frames, encode_frame

log = structlog.get_logger(__name__)

SEGMENT_SUFFIX: Final = ".seg"
LOCK_NAME: Final = "lock"
DEFAULT_SEGMENT_BYTES: Final = 4 * 1024 * 1024
READ_CHUNK_BYTES: Final = 1024 * 1024
_CLOSE_WAIT_SECONDS: Final = 5.0


class SpoolError(Exception):
    """The spool cannot keep a record; ``reason`` is machine-readable."""

    reason = "spool_unavailable"


class SpoolFullError(SpoolError):
    reason = "spool_full"


class SpoolWriteError(SpoolError):
    reason = "spool_write_failed"


class SpoolLockedError(SpoolError):
    reason = "spool_locked"


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Entry:
    start: Position
    end: Position
    record: SpoolRecord


@dataclass(frozen=True, slots=True)
class Batch:
    entries: list[Entry]
    # Everything before ``end`` was read: the entries and any damaged bytes skipped.
    end: Position


@dataclass(slots=True)
class SegmentReport:
    """What one segment file holds (``spool inspect`` and the start-up scan)."""

    sequence: int
    path: Path
    bytes: int = 0
    records: int = 0
    corrupt_bytes: int = 0
    torn_bytes: int = 0
    first_spooled_at_ms: int | None = None
    last_spooled_at_ms: int | None = None
    topics: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Segment:
    sequence: int
    path: Path
    written: int = 0  # bytes written (the file size)
    durable: int = 0  # bytes covered by an fsync: the reader never goes past this
    fd: int | None = None
    sealed: bool = True  # no more appends; only the active segment is unsealed


@dataclass(frozen=True, slots=True)
class _ReadView:
    """An immutable snapshot of a segment for a read in a worker thread."""

    sequence: int
    path: Path
    durable: int
    # Sealed and fully durable: reading may go on to the next segment after it.
    complete: bool


def segment_name(sequence: int) -> str:
    return f"{sequence:020d}{SEGMENT_SUFFIX}"


def segment_paths(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of ``directory`` in arrival order (other files are ignored)."""
    found = []
    for path in directory.glob(f"*{SEGMENT_SUFFIX}"):
        stem = path.name.removesuffix(SEGMENT_SUFFIX)
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


def read_frames(path: Path, start: int, limit: int,
                damaged: Callable[[int, int, str], None] | None = None) -> Iterator[Frame]:
    """Frames of ``path`` between ``start`` and ``limit``, in order, offsets absolute.

    Reads at most about ``READ_CHUNK_BYTES`` (or one record) at a time. ``damaged``
    is told about every skipped range as (start, end, "corrupt" or "torn").
    """
    offset = start
    want = READ_CHUNK_BYTES
    with path.open("rb") as file:
        while offset < limit:
            file.seek(offset)
            chunk = file.read(min(limit - offset, want))
            if not chunk:
                break  # the file is shorter than expected: nothing more to read
            final = offset + len(chunk) >= limit or len(chunk) < min(limit - offset, want)
            decoded = decode_frames(chunk, final=final)
            for frame in decoded.frames:
                yield Frame(offset + frame.start, offset + frame.end, frame.record)
            if damaged is not None:
                for bad_start, bad_end in decoded.corrupt:
                    damaged(offset + bad_start, offset + bad_end, "corrupt")
                if decoded.torn is not None:
                    damaged(offset + decoded.torn[0], offset + decoded.torn[1], "torn")
            if final and decoded.torn is not None:
                return
            offset += decoded.consumed
            want = max(READ_CHUNK_BYTES, decoded.need)


def scan_segment(sequence: int, path: Path) -> SegmentReport:
    """Count the valid records of a segment and measure its damage (reads the whole file)."""
    size = path.stat().st_size
    report = SegmentReport(sequence=sequence, path=path, bytes=size)

    def damaged(start: int, end: int, kind: str) -> None:
        if kind == "torn":
            report.torn_bytes += end - start
        else:
            report.corrupt_bytes += end - start

    for frame in read_frames(path, 0, size, damaged):
        report.records += 1
        report.topics[frame.record.topic] += 1
        if report.first_spooled_at_ms is None:
            report.first_spooled_at_ms = frame.record.spooled_at_ms
        report.last_spooled_at_ms = frame.record.spooled_at_ms
    return report


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._clock = clock
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._closing: list[_Segment] = []  # deleted while an fsync used their descriptor
        self._next_sequence = 1
        self._head = Position(0, 0)
        self._records = 0
        self._bytes = 0
        self._oldest_ms: int | None = None
        self._waiters: list[tuple[_Segment, int, asyncio.Future[None]]] = []
        self._dirty = asyncio.Event()
        self._dir_dirty = False
        self._syncing = False
        self._commit_task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._error: str | None = None
        # Set whenever new records become durable or the spool empties (the forwarder waits on it).
        self.changed = asyncio.Event()
        # Counters for the metrics collector.
        self.fsyncs = 0
        self.fsync_seconds = 0.0
        self.appended = 0
        self.refused: Counter[str] = Counter()

    # ---- state ------------------------------------------------------------------------------

    @property
    def records(self) -> int:
        """Records kept and not yet acknowledged by the broker."""
        return self._records

    @property
    def bytes(self) -> int:
        """Bytes of every segment file (what ``max_bytes`` bounds)."""
        return self._bytes

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None

    def oldest_age_seconds(self) -> float:
        if self._oldest_ms is None or self._records == 0:
            return 0.0
        return max(0.0, self._clock() - self._oldest_ms / 1000)

    def unwritable(self, room: int = 0) -> str | None:
        """None when an append of ``room`` bytes would be accepted now (readiness)."""
        if not self.is_open:
            return "spool_closed"
        if self._error is not None:
            return "spool_write_failed"
        if self._bytes + room > self.max_bytes:
            return "spool_full"
        return None

    # ---- life cycle -------------------------------------------------------------------------

    def open(self) -> list[SegmentReport]:
        """Lock the directory and scan what an earlier process left (blocking I/O)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLockedError(
                f"{self.directory} is in use by another process (a running gateway or "
                "spool drain)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        reports = []
        for sequence, path in segment_paths(self.directory):
            report = scan_segment(sequence, path)
            self._next_sequence = max(self._next_sequence, sequence + 1)
            if report.records == 0:
                log.warning("spool_segment_discarded", segment=path.name, bytes=report.bytes,
                            detail="no readable record in it")
                path.unlink()
                continue
            reports.append(report)
            self._segments.append(_Segment(sequence, path, written=report.bytes,
                                           durable=report.bytes))
            self._records += report.records
            self._bytes += report.bytes
            if self._oldest_ms is None:
                self._oldest_ms = report.first_spooled_at_ms
        if self._segments:
            self._head = Position(self._segments[0].sequence, 0)
        return reports

    async def start(self) -> None:
        self._commit_task = asyncio.create_task(self._commit_loop(), name="spool-commit")

    async def close(self) -> None:
        """Wait for pending commits (bounded), fsync and close everything, release the lock."""
        pending = [waiter for _, _, waiter in self._waiters]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_WAIT_SECONDS)
        if self._commit_task is not None:
            self._commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_task
            self._commit_task = None
        descriptors = [seg.fd for seg in [*self._segments, *self._closing] if seg.fd is not None]
        with contextlib.suppress(OSError):
            await asyncio.to_thread(_sync, descriptors, None)
        for fd in descriptors:
            with contextlib.suppress(OSError):
                os.close(fd)
        for seg in [*self._segments, *self._closing]:
            seg.fd = None
        self._closing.clear()
        self._active = None
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(SpoolWriteError("the spool closed before the fsync"))
        self._waiters.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # ---- writing ----------------------------------------------------------------------------

    async def append(self, record: SpoolRecord) -> None:
        """Keep ``record``; returns once it is fsynced. Raises ``SpoolError`` otherwise."""
        if not self.is_open:
            raise SpoolError("the spool is not open")
        frame = encode_frame(record)
        if self._bytes + len(frame) > self.max_bytes:
            self.refused["spool_full"] += 1
            raise SpoolFullError(f"{self._bytes} of {self.max_bytes} bytes used")
        try:
            segment, fd = self._writable_segment(len(frame))
        except OSError as exc:
            self._fail_write(exc)
            raise SpoolWriteError(f"cannot create a segment: {exc.strerror}") from exc
        written = 0
        try:
            while written < len(frame):
                written += os.write(fd, frame[written:])
        except OSError as exc:
            # A partial frame stays at the end of this segment: seal it so the damage is
            # its torn tail and the next record starts a clean segment.
            segment.written += written
            self._bytes += written
            self._seal(segment)
            self._fail_write(exc)
            raise SpoolWriteError(f"cannot write: {exc.strerror}") from exc
        segment.written += written
        self._bytes += written
        if self._records == 0:
            self._oldest_ms = record.spooled_at_ms
        self._records += 1
        self.appended += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((segment, segment.written, waiter))
        self._dirty.set()
        await waiter

    def _fail_write(self, exc: OSError) -> None:
        self.refused["spool_write_failed"] += 1
        self._error = f"{type(exc).__name__}: {exc.strerror}"
        log.error("spool_write_failed", error=self._error, directory=str(self.directory))

    def _writable_segment(self, frame_bytes: int) -> tuple[_Segment, int]:
        active = self._active
        if active is not None and active.written and (
                active.written + frame_bytes > self._segment_bytes):
            self._seal(active)
            active = None
        if active is not None and active.fd is not None:
            return active, active.fd
        sequence = self._next_sequence
        path = self.directory / segment_name(sequence)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        self._next_sequence += 1
        active = _Segment(sequence, path, fd=fd, sealed=False)
        self._segments.append(active)
        self._active = active
        self._dir_dirty = True
        return active, fd

    def _seal(self, segment: _Segment) -> None:
        segment.sealed = True
        if self._active is segment:
            self._active = None
        self._dirty.set()  # the commit loop syncs what is left and closes it

    async def _commit_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            targets = [(seg, seg.written) for seg in self._segments
                       if seg.fd is not None and seg.written > seg.durable]
            sync_dir, self._dir_dirty = self._dir_dirty, False
            if targets or sync_dir:
                started = time.perf_counter()
                self._syncing = True
                try:
                    await asyncio.to_thread(
                        _sync, [seg.fd for seg, _ in targets if seg.fd is not None],
                        self.directory if sync_dir else None)
                except OSError as exc:
                    self._dir_dirty |= sync_dir
                    self._fail_commit(targets, exc)
                    continue
                finally:
                    self._syncing = False
                self.fsyncs += 1
                self.fsync_seconds += time.perf_counter() - started
                self._error = None
                for seg, end in targets:
                    seg.durable = max(seg.durable, end)
            self._close_finished()
            self._resolve_waiters()
            self.changed.set()

    def _fail_commit(self, targets: list[tuple[_Segment, int]],
                     exc: OSError) -> None:
        self._error = f"fsync: {type(exc).__name__}: {exc.strerror}"
        log.error("spool_fsync_failed", error=self._error, directory=str(self.directory))
        ends = {id(seg): end for seg, end in targets}
        remaining = []
        for seg, end, waiter in self._waiters:
            if id(seg) in ends and end <= ends[id(seg)]:
                self.refused["spool_write_failed"] += 1
                if not waiter.done():
                    waiter.set_exception(SpoolWriteError(self._error))
            else:
                remaining.append((seg, end, waiter))
        self._waiters = remaining
        self._close_finished()

    def _resolve_waiters(self) -> None:
        remaining = []
        for seg, end, waiter in self._waiters:
            if seg.durable >= end:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                remaining.append((seg, end, waiter))
        self._waiters = remaining

    def _close_finished(self) -> None:
        """Close descriptors no longer written to once everything in them is durable."""
        if self._syncing:
            return
        for seg in [*self._segments, *self._closing]:
            if seg.fd is not None and seg.sealed and seg.durable >= seg.written:
                os.close(seg.fd)
                seg.fd = None
        self._closing = [seg for seg in self._closing if seg.fd is not None]

    # ---- reading and acknowledging ----------------------------------------------------------

    async def read_batch(self, max_records: int, max_bytes: int) -> Batch:
        """Durable records from the head on, in arrival order (at least one if any)."""
        views = [_ReadView(seg.sequence, seg.path, seg.durable,
                           seg.sealed and seg.durable >= seg.written)
                 for seg in self._segments if seg.sequence >= self._head.segment]
        head = self._head
        batch = await asyncio.to_thread(_read_batch, views, head, max_records, max_bytes)
        if batch.entries and self._head == head:
            self._oldest_ms = batch.entries[0].record.spooled_at_ms
        elif not batch.entries and self._records and self._head == head and all(
                seg.durable >= seg.written for seg in self._segments) and (
                not self._segments or batch.end >= Position(self._segments[-1].sequence,
                                                             self._segments[-1].written)):
            # Everything on disk was read and nothing is left: the count drifted (a segment
            # changed under us). Trust the disk rather than wait for records never coming.
            log.warning("spool_count_reset", counted=self._records)
            self._records = 0
            self.acknowledge(batch.end, 0)
        return batch

    def acknowledge(self, through: Position, records: int) -> None:
        """The broker has every record before ``through``: move the head, delete segments."""
        self._head = max(self._head, through)
        self._records = max(0, self._records - records)
        for seg in list(self._segments):
            finished = seg.sealed and seg.durable >= seg.written and (
                seg.sequence < self._head.segment
                or (seg.sequence == self._head.segment and self._head.offset >= seg.written))
            if finished or (self._records == 0 and seg.durable >= seg.written):
                self._delete(seg)
        if self._records == 0:
            self._oldest_ms = None
        self.changed.set()

    def _delete(self, segment: _Segment) -> None:
        if self._active is segment:
            self._active = None
        segment.sealed = True
        self._segments.remove(segment)
        self._bytes -= segment.written
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        if segment.fd is not None:
            if self._syncing:
                self._closing.append(segment)
            else:
                os.close(segment.fd)
                segment.fd = None


def _sync(descriptors: list[int], directory: Path | None) -> None:
    for fd in descriptors:
        os.fdatasync(fd)
    if directory is not None:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_batch(views: list[_ReadView], head: Position, max_records: int,
                max_bytes: int) -> Batch:
    entries: list[Entry] = []
    taken = 0
    end = head
    for view in views:
        start = head.offset if view.sequence == head.segment else 0
        end = max(end, Position(view.sequence, start))
        try:
            for frame in read_frames(view.path, start, view.durable):
                if entries and (len(entries) >= max_records or taken >= max_bytes):
                    return Batch(entries, entries[-1].end)
                entry = Entry(Position(view.sequence, frame.start),
                              Position(view.sequence, frame.end), frame.record)
                entries.append(entry)
                taken += frame.end - frame.start
        except FileNotFoundError:
            continue
        end = Position(view.sequence, view.durable)
        if not view.complete or (entries and (len(entries) >= max_records
                                              or taken >= max_bytes)):
            break  # later segments come after bytes not durable yet, or the batch is full
    return Batch(entries, end)
