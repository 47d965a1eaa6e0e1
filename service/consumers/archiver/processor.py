"""The archiver's processor: one events-topic record in, stored objects and reports out.

A chain of small steps, each in its own module::

    plan (plan.py) ─▶ per object, under its key lock (locks.py):
        stat (storage.py) ─ found ──────────────────────────────▶ report (reports.py)
            └ absent ─▶ download (fetching.py, circuit.py) ─▶ put ─▶ report
                             └ refused / failed ─────────────────▶ dead letter

``process`` returns only when every object of the event is stored and reported, or
dead-lettered; only then may the consumer commit the offset.

Failure policy (what is the data's fault, what is an outage):

* Refused or failed downloads after the retry budget are the data's fault: one dead
  letter per object, and the event is done.
* Storage failures are an outage (:class:`~.storage.StorageUnavailableError`), never
  dead-lettered. A store that refuses one particular object (``ValueError``: it cannot
  represent it) is the data's fault: dead letter with reason ``storage``.
* Kafka publish failures (archived report or dead letter) are an outage: raised likewise.
  A stored object whose report was lost is re-reported as ``already_stored`` with the
  same ``ce_id`` after the restart.
* Downloads failing nearly everywhere: while the circuit is open, an object whose
  download failed transiently is held (not dead-lettered) and tried again after the
  cool-down. Held events keep their offsets uncommitted and fill the consumer's in-flight
  bound, so it pauses fetching. The failures that open the circuit are dead-lettered (at
  most ``min_samples - 1`` objects), the ones after it are held.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog
from aiokafka import TopicPartition

from service.consumers.archiver.circuit import DownloadCircuit
from service.consumers.archiver.download import DownloadResult
from service.consumers.archiver.fetching import (
    MAX_DETAIL_CHARS,
    MAX_URL_CHARS,
    Fetch,
    Fetcher,
    cut,
    host,
)
from service.consumers.archiver.keys import fit_metadata
from service.consumers.archiver.locks import KeyLocks
from service.consumers.archiver.metrics import STORAGE, ArchiverMetrics
from service.consumers.archiver.plan import Job, Plan, plan_event, text
from service.consumers.archiver.reports import (
    EventContext,
    Failure,
    Publisher,
    Reporter,
    ReportTopics,
)
from service.consumers.archiver.storage import STORAGE_BASE_DELAY, ArchiveStorage
from service.kafka.consumer import Record
from service.observability.tracing import TRACEPARENT, bind_trace_from_kafka
from service.storage.base import ObjectMetadata, ObjectStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ProcessorSettings:
    archived_topic: str
    dead_letter_topic: str
    archived_schema: str
    dead_letter_schema: str
    concurrency: int = 4
    publish_timeout_seconds: float = 10.0


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
        self.metrics = metrics
        self.tmp_dir = tmp_dir
        self.circuit = circuit if circuit is not None else DownloadCircuit()
        if self.circuit.on_change is None:
            self.circuit.on_change = lambda opened: metrics.circuit_open.set(int(opened))
        self.locks = KeyLocks()
        self.storage = ArchiveStorage(store, metrics, base_delay=storage_base_delay)
        self.fetcher = Fetcher(fetch, self.circuit, metrics)
        self.reporter = Reporter(publisher, ReportTopics(
            settings.archived_topic, settings.dead_letter_topic, settings.archived_schema,
            settings.dead_letter_schema, settings.publish_timeout_seconds), metrics)
        self._slots = asyncio.Semaphore(settings.concurrency)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """No per-partition state: locks are per object key, the store is the memory."""
        del partitions

    async def process(self, record: Record) -> None:
        bind_trace_from_kafka(record.headers)
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
        context = _context(record, value)
        structlog.contextvars.bind_contextvars(task_id=plan.task_id, event_id=context.event_id,
                                               stage=plan.stage, kind=plan.kind)
        self._count_skipped(plan)
        if not plan.jobs:
            return
        try:
            async with asyncio.TaskGroup() as group:
                for job in plan.jobs:
                    group.create_task(self.archive(job, context))
        except ExceptionGroup as failed:
            # One outage is enough to stop; surface it rather than the group.
            raise failed.exceptions[0] from failed

    def _count_skipped(self, plan: Plan) -> None:
        for reason, count in (("track_without_id", plan.tracks_without_id),
                              ("unusable_file", plan.unusable_files)):
            if count:
                self.metrics.skipped.labels(reason).inc(count)
                log.warning("file_skipped", reason=reason, count=count)

    async def archive(self, job: Job, context: EventContext) -> None:
        """Store and report one object, or dead-letter it; raise only for an outage."""
        started = time.perf_counter()
        # The report is published under the lock too, so the reports of one object reach
        # the topic in the order the work was done: the stored one before any re-report.
        async with self.locks.hold(job.key):
            stored = await self.storage.stat(job.key)
            if stored is not None:
                await self.reporter.archived(job, context, stored, self.storage.uri(job.key),
                                             already_stored=True, started=started)
                return
            outcome = await self._download_and_store(job)
            if isinstance(outcome, Failure):
                await self.reporter.dead_letter(job, context, outcome, started=started,
                                                host=host(outcome.url or ""))
            else:
                metadata, attempts = outcome
                await self.reporter.archived(job, context, metadata, self.storage.uri(job.key),
                                             already_stored=False, started=started,
                                             attempts=attempts)

    async def _download_and_store(self, job: Job) -> tuple[ObjectMetadata, int] | Failure:
        while True:
            await self.circuit.wait_until_allowed()
            async with self._slots:
                self.metrics.in_flight_downloads.inc()
                dest = self.tmp_dir / uuid.uuid4().hex
                removed = False
                try:
                    fetched = await self.fetcher.first_that_works(job, dest)
                    if not isinstance(fetched, Failure):
                        stored = await self._store(job, *fetched)
                        # Off the loop: see download._stream_to_file.
                        await asyncio.to_thread(dest.unlink, missing_ok=True)
                        removed = True
                        return stored
                finally:
                    self.metrics.in_flight_downloads.dec()
                    if not removed:
                        dest.unlink(missing_ok=True)  # synchronous: must also run when cancelled
            if fetched.transient and self.circuit.is_open:
                log.warning("object_held", object=job.role, track_id=job.track_id,
                            reason=fetched.reason, retry_in_s=self.circuit.remaining_cooldown())
                continue
            return fetched

    async def _store(self, job: Job, source_url: str, fetched: DownloadResult,
                     ) -> tuple[ObjectMetadata, int] | Failure:
        try:
            metadata = fit_metadata(ObjectMetadata(
                content_type=fetched.content_type, size=fetched.size, sha256=fetched.sha256,
                source_url=source_url, title=job.title, duration_seconds=job.duration_seconds,
            ))
            await self.storage.put(job.key, fetched.path, metadata)
        except ValueError as exc:  # the store cannot represent this object: data, not outage
            return Failure(url=cut(source_url, MAX_URL_CHARS), reason=STORAGE,
                           detail=cut(f"store refused the object: {exc}", MAX_DETAIL_CHARS),
                           attempts=fetched.attempts)
        return metadata, fetched.attempts


def _context(record: Record, value: dict[str, object]) -> EventContext:
    """The event's id (its value's, else the ce_id header) and where it was read."""
    headers = record.headers or ()
    traceparent = next((raw for name, raw in reversed(headers) if name == TRACEPARENT and raw),
                       None)
    header_id = next((raw for name, raw in headers if name == "ce_id"), b"")
    event_id = text(value.get("event_id")) or (header_id or b"").decode("utf-8", "replace")
    return EventContext(event_id, record.topic, record.partition, record.offset, traceparent)
