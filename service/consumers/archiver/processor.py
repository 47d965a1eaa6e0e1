"""The archiver's processor: one events-topic record in, stored objects and reports out.

For every track of a ``first`` or ``complete`` event that has an id and an audio URL, two
objects are archived: ``audio`` (``audio_url``, else ``source_audio_url``) and, when the
track has one, ``cover`` (``image_url``, else ``source_image_url``). When the first URL
fails, the other one (if different) is tried before the object is given up.

Per object, under a per-key lock (so a ``first`` and a ``complete`` in flight together do
not race)::

    stat(key) ─ found ──────────────────────────────▶ report archived (already_stored)
        └ absent ─▶ download to a temp file ─▶ put_file ─▶ report archived (stored)
                         └ refused / failed ─────────────▶ dead letter

``process`` returns only when every object of the event is stored and reported, or
dead-lettered; only then may the consumer commit the offset.

Failure policy (what is the data's fault, what is an outage):

* Refused or failed downloads after the retry budget (``download_with_retries``:
  exponential backoff with jitter for network errors, timeouts, 5xx, 408 and 429) are the
  data's fault: one dead letter per object, and the event is done.
* Storage failures (``StorageError`` on stat or put) are an outage: never dead-lettered.
  They are retried briefly (:data:`STORAGE_ATTEMPTS`), then :class:`StorageUnavailableError`
  is raised: the consumer stops without committing, the process exits non-zero and is
  restarted (with the orchestrator's back-off), and the event is processed again.
  A store that refuses one particular object (``ValueError``: it cannot represent it) is
  the data's fault: dead letter with reason ``storage``.
* Kafka publish failures (archived report or dead letter) are an outage: raised likewise.
  A stored object whose report was lost is re-reported as ``already_stored`` with the
  same ``ce_id`` after the restart.
* Downloads failing nearly everywhere (egress, DNS or proxy down: not the data's fault):
  :class:`DownloadCircuit` records each download's final outcome by host: *answered* for a
  success and for permanent answers (4xx, too large, wrong type: the network works),
  *failed* for the retryable kinds after the retry budget (network, timeout, 5xx/408/429);
  policy refusals are not recorded. It opens when, within the last ``window_seconds``
  (60), at least ``min_samples`` (6) outcomes were recorded, at least ``threshold`` (90 %)
  of them failed, and the failures span at least ``min_hosts`` (2) distinct hosts. While
  it is open, an object whose download failed that way is not dead-lettered but held:
  it waits for the cool-down (5 s, doubling on each failed probe, at most 60 s) and is
  downloaded again as a probe; one answered probe closes the circuit. Held events keep
  their offsets uncommitted and fill the consumer's in-flight bound, so it pauses
  fetching. Failures on a single host never open it: a dead host is that host's (data)
  problem, and its objects are dead-lettered. The failures that open the circuit are
  dead-lettered (at most ``min_samples - 1`` objects), the ones after it are held.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import orjson
import structlog
from aiokafka import TopicPartition

from service.consumers.archiver.download import (
    DownloadLimits,
    DownloadResult,
    download_with_retries,
)
from service.consumers.archiver.keys import (
    ObjectKind,
    archive_event_id,
    dead_letter_event_id,
    fit_metadata,
    object_key,
)
from service.consumers.archiver.metrics import (
    ALREADY_STORED,
    DOWNLOAD_OK,
    STORAGE,
    STORED,
    ArchiverMetrics,
)
from service.consumers.archiver.netguard import AddressPolicy, DownloadRefused
from service.core.records import CE_SPECVERSION, JSON_CONTENT_TYPE
from service.core.timefmt import rfc3339
from service.kafka.consumer import Record
from service.observability.tracing import TRACEPARENT, bind_trace_from_kafka
from service.storage.base import ObjectMetadata, ObjectStore, StorageError

log = structlog.get_logger(__name__)

Headers = list[tuple[str, bytes]]
T = TypeVar("T")
Fetch = Callable[[str, Path], Awaitable[DownloadResult]]

ARCHIVED_TYPE: Final = "music.archive.stored"
ARCHIVE_FAILED_TYPE: Final = "music.archive.failed"
SOURCE: Final = "/archiver"
ARCHIVED_STAGES: Final = frozenset({"first", "complete"})

STORAGE_ATTEMPTS: Final = 3
STORAGE_BASE_DELAY: Final = 0.5
MAX_DETAIL_CHARS: Final = 4000
MAX_URL_CHARS: Final = 16 * 1024


class Publisher(Protocol):
    """What the processor needs from :class:`service.kafka.producer.KafkaPublisher`."""

    async def publish(self, topic: str, *, key: bytes | None, value: bytes, headers: Headers,
                      deadline: float) -> Any: ...


class StorageUnavailableError(RuntimeError):
    """The object store keeps failing: an outage, so the event must not be committed."""


def downloader(session: Any, limits: DownloadLimits, policy: AddressPolicy, *, attempts: int,
               base_delay: float, max_delay: float) -> Fetch:
    """The production :data:`Fetch`: guarded, bounded downloads with retries."""

    async def fetch(url: str, dest: Path) -> DownloadResult:
        return await download_with_retries(session, url, dest, limits, policy,
                                           attempts=attempts, base_delay=base_delay,
                                           max_delay=max_delay)

    return fetch


# --------------------------------------------------------------------------- circuit breaker


@dataclass
class DownloadCircuit:
    """Suspends dead-lettering while downloads fail nearly everywhere (see module doc)."""

    window_seconds: float = 60.0
    min_samples: int = 6
    min_hosts: int = 2
    threshold: float = 0.9
    cooldown_seconds: float = 5.0
    max_cooldown_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[bool], None] | None = None
    _samples: deque[tuple[float, str, bool]] = field(
        default_factory=lambda: deque(maxlen=10_000), init=False)
    _opened_at: float | None = field(default=None, init=False)
    _cooldown: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._cooldown = self.cooldown_seconds

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def record(self, host: str, *, ok: bool) -> None:
        """Note one download outcome: ``ok`` means the host answered usefully."""
        now = self.clock()
        self._samples.append((now, host, ok))
        while self._samples and self._samples[0][0] < now - self.window_seconds:
            self._samples.popleft()
        if self._opened_at is not None:
            if ok:  # the network works again
                self._opened_at = None
                self._cooldown = self.cooldown_seconds
                self._samples.clear()
                self._changed(opened=False)
            elif now >= self._opened_at + self._cooldown:  # a probe failed: open again, longer
                self._opened_at = now
                self._cooldown = min(self._cooldown * 2, self.max_cooldown_seconds)
            return
        if not ok and self._should_open():
            self._opened_at = now
            self._changed(opened=True)

    def _should_open(self) -> bool:
        total = len(self._samples)
        if total < self.min_samples:
            return False
        failures = [host for _, host, ok in self._samples if not ok]
        return (len(failures) / total >= self.threshold
                and len(set(failures)) >= self.min_hosts)

    def _changed(self, *, opened: bool) -> None:
        log.warning("download_circuit_opened" if opened else "download_circuit_closed",
                    cooldown_s=self._cooldown)
        if self.on_change is not None:
            self.on_change(opened)

    def remaining_cooldown(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self.clock())

    async def wait_until_allowed(self) -> None:
        """Return at once when closed; when open, after the cool-down (then probe)."""
        # A loop, not an Event: a failed probe may extend the cool-down meanwhile.
        while (remaining := self.remaining_cooldown()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Job:
    """One object to archive."""

    task_id: str
    track_id: str
    kind: ObjectKind
    urls: tuple[str, ...]
    title: str | None
    duration_seconds: float | None
    key: str


@dataclass(frozen=True)
class EventContext:
    """Where the jobs came from, for reports and dead letters."""

    event_id: str
    topic: str
    partition: int
    offset: int
    traceparent: bytes | None


@dataclass(frozen=True)
class Plan:
    task_id: str
    stage: str
    jobs: tuple[Job, ...]
    tracks_without_id: int


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _urls(*values: object) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        text = _text(value)
        if text is not None and text.strip() and text not in found:
            found.append(text.strip())
    return tuple(found)


def _duration(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def plan_event(value: object) -> Plan | None:
    """The objects an events-topic value asks for; None when it is not an event at all."""
    if not isinstance(value, dict):
        return None
    task_id = _text(value.get("task_id"))
    stage = value.get("stage")
    tracks = value.get("tracks")
    if task_id is None or not isinstance(stage, str) or not isinstance(tracks, list):
        return None
    if stage not in ARCHIVED_STAGES:
        return Plan(task_id, stage, (), 0)
    jobs: list[Job] = []
    without_id = 0
    seen: set[str] = set()
    for track in tracks:
        if not isinstance(track, dict):
            continue
        audio = _urls(track.get("audio_url"), track.get("source_audio_url"))
        if not audio:
            continue  # not ready yet (a later callback carries it)
        track_id = _text(track.get("id"))
        if track_id is None:
            without_id += 1
            continue
        if track_id in seen:
            continue  # the same track twice in one event: one set of objects
        seen.add(track_id)
        title = _text(track.get("title"))
        cover = _urls(track.get("image_url"), track.get("source_image_url"))
        jobs.append(Job(task_id, track_id, "audio", audio, title,
                        _duration(track.get("duration_seconds")),
                        object_key(task_id, track_id, "audio")))
        if cover:
            jobs.append(Job(task_id, track_id, "cover", cover, title, None,
                            object_key(task_id, track_id, "cover")))
    return Plan(task_id, stage, tuple(jobs), without_id)


# --------------------------------------------------------------------------- processing


@dataclass(frozen=True)
class Failure:
    """An object that cannot be archived (becomes a dead letter unless held)."""

    url: str | None
    reason: str
    detail: str
    attempts: int
    status: int | None = None
    transient: bool = False


@dataclass(frozen=True)
class ProcessorSettings:
    archived_topic: str
    dead_letter_topic: str
    archived_schema: str
    dead_letter_schema: str
    concurrency: int = 4
    publish_timeout_seconds: float = 10.0


class KeyLocks:
    """One ``asyncio.Lock`` per object key, dropped when nobody uses it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def _host(url: str) -> str:
    try:
        return (urllib.parse.urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _counts_as_answered(exc: DownloadRefused) -> bool | None:
    """For the circuit: True if the host answered, False for a transient failure, None if
    no request was made (refused by policy: says nothing about the network)."""
    if exc.reason in ("forbidden_address", "forbidden_scheme"):
        return None
    return not exc.retryable


class ArchiveProcessor:
    def __init__(
        self,
        *,
        store: ObjectStore,
        publisher: Publisher,
        fetch: Fetch,
        settings: ProcessorSettings,
        metrics: ArchiverMetrics,
        tmp_dir: Path,
        circuit: DownloadCircuit | None = None,
        storage_base_delay: float = STORAGE_BASE_DELAY,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.fetch = fetch
        self.settings = settings
        self.metrics = metrics
        self.tmp_dir = tmp_dir
        self.circuit = circuit if circuit is not None else DownloadCircuit()
        if self.circuit.on_change is None:
            self.circuit.on_change = lambda opened: metrics.circuit_open.set(int(opened))
        self.locks = KeyLocks()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._storage_base_delay = storage_base_delay

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """No per-partition state: locks are per object key, the store is the memory."""
        del partitions

    async def process(self, record: Record) -> None:
        bind_trace_from_kafka(record.headers)
        traceparent = next((raw for name, raw in reversed(record.headers or ())
                            if name == TRACEPARENT and raw), None)
        try:
            value = orjson.loads(record.value) if record.value is not None else None
        except orjson.JSONDecodeError:
            value = None
        plan = plan_event(value)
        if plan is None:
            self.metrics.skipped.labels("malformed_event").inc()
            log.error("event_skipped", reason="malformed_event", topic=record.topic,
                      partition=record.partition, offset=record.offset)
            return
        assert isinstance(value, dict)  # noqa: S101 - plan_event checked it
        header_id = next((raw for name, raw in record.headers or () if name == "ce_id"), b"")
        event_id = _text(value.get("event_id")) or header_id.decode("utf-8", "replace")
        structlog.contextvars.bind_contextvars(task_id=plan.task_id, event_id=event_id,
                                               stage=plan.stage)
        if plan.tracks_without_id:
            self.metrics.skipped.labels("track_without_id").inc(plan.tracks_without_id)
            log.warning("track_skipped", reason="track_without_id",
                        count=plan.tracks_without_id)
        if not plan.jobs:
            return
        context = EventContext(event_id, record.topic, record.partition, record.offset,
                               traceparent)
        try:
            async with asyncio.TaskGroup() as group:
                for job in plan.jobs:
                    group.create_task(self.archive(job, context))
        except ExceptionGroup as failed:
            # One outage is enough to stop; surface it rather than the group.
            raise failed.exceptions[0] from failed

    async def archive(self, job: Job, context: EventContext) -> None:
        """Store and report one object, or dead-letter it; raise only for an outage."""
        started = time.perf_counter()
        # The report is published under the lock too, so the reports of one object reach
        # the topic in the order the work was done: the stored one before any re-report.
        async with self.locks.hold(job.key):
            stored = await self._storage("stat", lambda: self.store.stat(job.key))
            if stored is not None:
                await self._report(job, context, stored, already_stored=True, started=started)
                return
            outcome = await self._download_and_store(job)
            if isinstance(outcome, Failure):
                await self._dead_letter(job, context, outcome, started=started)
            else:
                metadata, attempts = outcome
                await self._report(job, context, metadata, already_stored=False,
                                   started=started, attempts=attempts)

    async def _download_and_store(self, job: Job) -> tuple[ObjectMetadata, int] | Failure:
        while True:
            await self.circuit.wait_until_allowed()
            async with self._slots:
                self.metrics.in_flight_downloads.inc()
                dest = self.tmp_dir / uuid.uuid4().hex
                try:
                    fetched = await self._fetch_any(job, dest)
                    if not isinstance(fetched, Failure):
                        return await self._store(job, *fetched)
                finally:
                    self.metrics.in_flight_downloads.dec()
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(dest)  # synchronous: must also run when cancelled
            if fetched.transient and self.circuit.is_open:
                log.warning("object_held", object=job.kind, track_id=job.track_id,
                            reason=fetched.reason, retry_in_s=self.circuit.remaining_cooldown())
                continue
            return fetched

    async def _fetch_any(self, job: Job, dest: Path) -> tuple[str, DownloadResult] | Failure:
        """Try each candidate URL in turn; the failure reported is the first URL's."""
        refusals: list[DownloadRefused] = []
        for url in job.urls:
            host = _host(url)
            started = time.perf_counter()
            try:
                result = await self.fetch(url, dest)
            except DownloadRefused as exc:
                self._observe_download(exc.reason, exc.attempts, started)
                answered = _counts_as_answered(exc)
                if answered is not None:
                    self.circuit.record(host, ok=answered)
                refusals.append(exc)
                log.debug("download_failed", object=job.kind, url=url, reason=exc.reason,
                          detail=exc.detail, attempts=exc.attempts)
                continue
            self._observe_download(DOWNLOAD_OK, result.attempts, started)
            self.metrics.download_bytes.labels(DOWNLOAD_OK).inc(result.size)
            self.circuit.record(host, ok=True)
            return url, result
        first = refusals[0]
        detail = first.detail
        if len(refusals) > 1:
            detail += "; fallback " + "; ".join(str(exc) for exc in refusals[1:])
        return Failure(
            url=_cut(job.urls[0], MAX_URL_CHARS), reason=first.reason,
            detail=_cut(detail, MAX_DETAIL_CHARS), attempts=sum(e.attempts for e in refusals),
            status=first.status, transient=any(e.retryable for e in refusals),
        )

    def _observe_download(self, outcome: str, attempts: int, started: float) -> None:
        self.metrics.downloads.labels(outcome).inc()
        self.metrics.download_seconds.observe(time.perf_counter() - started)
        if attempts > 1:
            self.metrics.retries.inc(attempts - 1)

    async def _store(self, job: Job, source_url: str, fetched: DownloadResult,
                     ) -> tuple[ObjectMetadata, int] | Failure:
        try:
            metadata = fit_metadata(ObjectMetadata(
                content_type=fetched.content_type, size=fetched.size, sha256=fetched.sha256,
                source_url=source_url, title=job.title, duration_seconds=job.duration_seconds,
            ))
            await self._storage("put", lambda: self.store.put_file(job.key, fetched.path,
                                                                   metadata))
        except ValueError as exc:  # the store cannot represent this object: data, not outage
            return Failure(url=_cut(source_url, MAX_URL_CHARS), reason=STORAGE,
                           detail=_cut(f"store refused the object: {exc}", MAX_DETAIL_CHARS),
                           attempts=fetched.attempts)
        return metadata, fetched.attempts

    async def _storage(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self._storage_base_delay
        for attempt in range(1, STORAGE_ATTEMPTS + 1):
            try:
                return await call()
            except StorageError as exc:
                self.metrics.storage_failures.labels(operation).inc()
                log.warning("storage_failed", operation=operation, attempt=attempt,
                            error=str(exc)[:300])
                if attempt == STORAGE_ATTEMPTS:
                    raise StorageUnavailableError(f"storage {operation} failed "
                                                  f"{STORAGE_ATTEMPTS} times") from exc
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------------- reports

    def _headers(self, *, ce_id: str, ce_type: str, subject: str, dataschema: str,
                 context: EventContext, extra: Iterable[tuple[str, bytes]] = ()) -> Headers:
        headers: Headers = [
            ("ce_specversion", CE_SPECVERSION.encode()),
            ("ce_id", ce_id.encode()),
            ("ce_source", SOURCE.encode()),
            ("ce_type", ce_type.encode()),
            ("ce_time", rfc3339(datetime.now(UTC)).encode()),
            ("ce_subject", subject.encode()),
            ("ce_dataschema", dataschema.encode()),
            ("content-type", JSON_CONTENT_TYPE),
            *extra,
        ]
        if context.traceparent is not None:
            headers.append((TRACEPARENT, context.traceparent))
        return headers

    async def _report(self, job: Job, context: EventContext, metadata: ObjectMetadata, *,
                      already_stored: bool, started: float, attempts: int = 0) -> None:
        value = {
            "task_id": job.task_id,
            "track_id": job.track_id,
            "object": job.kind,
            "uri": self.store.uri(job.key),
            "size": metadata.size,
            "sha256": metadata.sha256,
            "content_type": metadata.content_type,
            "source_url": metadata.source_url,
            "source_event_id": context.event_id,
            "title": metadata.title,
            "duration_seconds": metadata.duration_seconds,
            "already_stored": already_stored,
        }
        headers = self._headers(
            ce_id=archive_event_id(job.task_id, job.track_id, job.kind, metadata.sha256),
            ce_type=ARCHIVED_TYPE, subject=job.task_id,
            dataschema=self.settings.archived_schema, context=context)
        await self.publisher.publish(self.settings.archived_topic, key=job.task_id.encode(),
                                     value=orjson.dumps(value), headers=headers,
                                     deadline=self.settings.publish_timeout_seconds)
        result = ALREADY_STORED if already_stored else STORED
        self.metrics.objects_stored.labels(job.kind, result).inc()
        log.info("object_archived", track_id=job.track_id, object=job.kind, result=result,
                 size=metadata.size, content_type=metadata.content_type, attempts=attempts,
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))

    async def _dead_letter(self, job: Job, context: EventContext, failure: Failure, *,
                           started: float) -> None:
        value = {
            "task_id": job.task_id,
            "track_id": job.track_id,
            "object": job.kind,
            "url": failure.url,
            "reason": failure.reason,
            "detail": failure.detail,
            "attempts": failure.attempts,
            "source_event_id": context.event_id,
            "topic": context.topic,
            "partition": context.partition,
            "offset": context.offset,
            "failed_at": rfc3339(datetime.now(UTC)),
        }
        headers = self._headers(
            ce_id=dead_letter_event_id(job.task_id, job.track_id, job.kind, context.event_id),
            ce_type=ARCHIVE_FAILED_TYPE, subject=job.task_id,
            dataschema=self.settings.dead_letter_schema, context=context,
            extra=[("reason", failure.reason.encode())])
        await self.publisher.publish(self.settings.dead_letter_topic, key=job.task_id.encode(),
                                     value=orjson.dumps(value), headers=headers,
                                     deadline=self.settings.publish_timeout_seconds)
        self.metrics.dead_lettered.labels(failure.reason).inc()
        # No URL and no detail at INFO/WARNING (they may carry signed tokens): the host only.
        log.warning("object_dead_lettered", track_id=job.track_id, object=job.kind,
                    reason=failure.reason, status=failure.status, attempts=failure.attempts,
                    host=_host(failure.url or ""),
                    duration_ms=round((time.perf_counter() - started) * 1000, 1))
