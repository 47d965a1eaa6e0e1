"""The reconciler: follows every submitted task on the topics, and asks the provider about
the ones whose callbacks do not come.

    tasks topic ──┐                                     ┌─▶ record-info (budget, back-off)
                  ├─▶ state (open tasks, schedule) ─────┤
    events topic ─┘                                     └─▶ events topic (recovered event)

Start-up rebuilds the state from the topics (no second database, no committed offsets):
the reconciler reads both from the last ``RECONCILE_HORIZON_SECONDS`` plus an hour
(by record timestamp), first the tasks topic up to its end, then the events topic up
to its end, and only then starts polling (``/readyz`` is 503 until it does). It reads
every partition itself, without a consumer group: run exactly one replica.

A task with no terminal event ``RECONCILE_AFTER_SECONDS`` after its submission is asked
about every ``RECONCILE_POLL_INTERVAL_SECONDS`` (±20% jitter) within the global budget
(:mod:`.budget`). An answer that stands for a stage the task has not reached becomes
the event a callback would have given (``recovered_by: polling``), published with
acks=all; a stage already on the events topic is never published again. A task still
open ``RECONCILE_HORIZON_SECONDS`` after its submission gets an error event
(``recovered_by: horizon``) and is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from service.config.reconciler import ReconcilerConfig
from service.consumers.reconciler.budget import PollBudget
from service.consumers.reconciler.metrics import ReconcilerMetrics
from service.consumers.reconciler.provider import Fetched, RecordInfoClient
from service.consumers.reconciler.records import (
    UnreadableRecordError,
    read_progress,
    read_submission,
)
from service.consumers.reconciler.state import OpenTask, TaskTable
from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import CallbackKind, kind_named
from service.core.model import CallbackEvent, Rejection
from service.core.normalize import normalize_recovered
from service.core.records import cloudevent_headers
from service.core.recovery import Status, horizon_callback, recovered_callback
from service.kafka.consumer import Record, start_with_retry
from service.kafka.producer import KafkaPublisher, PublishError
from service.observability.tracing import kafka_header, start_or_continue

log = structlog.get_logger("service.consumers.reconciler")

#: The rebuild reads the topics from this long before the horizon, so tasks that passed
#: it while the reconciler was down still get their error event.
LOOKBACK_MARGIN_SECONDS: Final = 3600.0
POLL_JITTER: Final = (0.8, 1.2)
_IDLE_WAIT_SECONDS: Final = 1.0
_TOPIC_RECHECK_SECONDS: Final = 2.0


class Reconciler:
    def __init__(
        self,
        config: ReconcilerConfig,
        *,
        publisher: KafkaPublisher,
        client: RecordInfoClient,
        metrics: ReconcilerMetrics,
        schemas: SchemaRegistry,
        budget: PollBudget | None = None,
        clock: Callable[[], float] = time.time,
        consumer_factory: Callable[..., AIOKafkaConsumer] = AIOKafkaConsumer,
    ) -> None:
        self.config = config
        self.table = TaskTable(max_open=config.max_open_tasks)
        self.budget = budget or PollBudget(config.max_requests_per_second,
                                           backoff_max=config.backoff_max_seconds)
        self.metrics = metrics
        self.live = asyncio.Event()  # set once the state is rebuilt and polling runs
        self._publisher = publisher
        self._client = client
        self._codec = schemas
        self._dataschema = schemas.schema_id(EVENT_V1)
        self._clock = clock
        self._consumer_factory = consumer_factory
        self._consumer: AIOKafkaConsumer | None = None
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._fatal: BaseException | None = None
        metrics.open_tasks.set_function(lambda: len(self.table))
        metrics.silent_tasks.set_function(
            lambda: self.table.silent(self._clock(), config.after_seconds))
        metrics.backoff_active.set_function(lambda: 1 if self.budget.paused else 0)

    async def check(self) -> str | None:
        """Readiness: the state is rebuilt (polling runs) and the broker answers."""
        if not self.live.is_set():
            return "rebuilding_state"
        return await self._publisher.check()

    # ---- the topics ------------------------------------------------------------------

    async def run(self, stop: Callable[[], bool]) -> None:
        """Rebuild the state, then follow the topics and poll until ``stop()``."""
        consumer = self._consumer_factory(
            **self.config.kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest")
        self._consumer = consumer
        if not await start_with_retry(consumer, stop):
            return
        poller: asyncio.Task[None] | None = None
        try:
            assigned = await self._assign(consumer, stop)
            if assigned is None:
                return
            await self._rebuild(consumer, *assigned, stop)
            if stop():
                return
            self.live.set()
            self.metrics.state_rebuilt.set(1)
            log.info("state_rebuilt", open_tasks=len(self.table),
                     silent_tasks=self.table.silent(self._clock(), self.config.after_seconds))
            poller = asyncio.create_task(self._poll_loop(stop), name="reconciler-polls")
            while not stop() and not poller.done():
                await self._consume(consumer)
            if poller.done():
                poller.result()  # a bug in the poll loop ends the process
        finally:
            if poller is not None and not poller.done():
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            await self._drain()
            with contextlib.suppress(Exception):
                await consumer.stop()
            self._consumer = None
            log.info("reconciler_stopped")

    async def _assign(self, consumer: AIOKafkaConsumer, stop: Callable[[], bool],
                      ) -> tuple[list[TopicPartition], list[TopicPartition]] | None:
        """Every partition of the tasks and events topics, once both exist."""
        names = (self.config.topics.tasks, self.config.topics.events)
        while not stop():
            try:
                # aiokafka has no public call for a topic's partitions without subscribing
                metadata = await consumer._client.fetch_all_metadata()
            except (KafkaError, OSError) as exc:
                log.warning("kafka_metadata_failed", error=type(exc).__name__)
                metadata = None
            found = {name: sorted(metadata.partitions_for_topic(name) or ())
                     if metadata is not None else [] for name in names}
            missing = [name for name in names if not found[name]]
            if not missing:
                tasks, events = ([TopicPartition(name, number) for number in found[name]]
                                 for name in names)
                consumer.assign([*tasks, *events])
                return tasks, events
            log.warning("topics_missing", topics=missing, recheck_in_s=_TOPIC_RECHECK_SECONDS)
            await asyncio.sleep(_TOPIC_RECHECK_SECONDS)
        return None

    async def _rebuild(self, consumer: AIOKafkaConsumer, tasks: list[TopicPartition],
                       events: list[TopicPartition], stop: Callable[[], bool]) -> None:
        """Read the submissions, then the events, of the look-back window to their ends.

        Submissions first: every task of the window is opened before the events close
        the finished ones, so the bounded memory of finished tasks never decides."""
        everything = [*tasks, *events]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(everything)
        since_ms = int((self._clock() - self.config.horizon_seconds
                        - LOOKBACK_MARGIN_SECONDS) * 1000)
        try:
            found = await consumer.offsets_for_times(dict.fromkeys(everything, since_ms))
        except KafkaError as exc:  # a broker without timestamp look-ups: read it all
            log.warning("offsets_for_times_unsupported", error=type(exc).__name__)
            await consumer.seek_to_beginning(*everything)
        else:
            for tp in everything:
                consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])
        started = time.monotonic()
        consumer.pause(*events)
        await self._read_to(consumer, tasks, ends, stop)
        consumer.resume(*events)
        await self._read_to(consumer, events, ends, stop)
        log.info("topics_replayed", seconds=round(time.monotonic() - started, 3),
                 records_to={f"{tp.topic}[{tp.partition}]": ends[tp] for tp in everything})

    async def _read_to(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                       ends: dict[TopicPartition, int], stop: Callable[[], bool]) -> None:
        while not stop():
            positions = [await consumer.position(tp) for tp in partitions]
            if all(position >= ends[tp] for tp, position in zip(partitions, positions,
                                                                   strict=True)):
                return
            await self._consume(consumer)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                self._apply(record)

    def _apply(self, record: Record) -> None:
        topic_role = "tasks" if record.topic == self.config.topics.tasks else "events"
        try:
            if topic_role == "tasks":
                self._submitted(record)
            else:
                self._progressed(record)
        except UnreadableRecordError as exc:
            self.metrics.invalid_records.labels(topic_role).inc()
            log.warning("record_skipped", topic=record.topic, partition=record.partition,
                        offset=record.offset, reason=str(exc))

    def _submitted(self, record: Record) -> None:
        submission = read_submission(record.key, record.value, record.timestamp)
        first_poll_at = (submission.submitted_at + self.config.after_seconds
                         + random.uniform(0, self.config.poll_interval_seconds))  # noqa: S311
        evictions = self.table.evictions
        task = self.table.submitted(submission.task_id, submission.kind,
                                    submission.submitted_at, submission.task_ref,
                                    first_poll_at=first_poll_at)
        if self.table.evictions > evictions:
            self.metrics.evicted_tasks.inc()
            log.warning("open_task_evicted", open_tasks=len(self.table),
                        limit=self.config.max_open_tasks)
        if task is not None:
            self._wake.set()

    def _progressed(self, record: Record) -> None:
        progress = read_progress(record.key, record.value, record.headers)
        closed = self.table.observed(progress.task_id, progress.stage)
        if closed is not None and self.live.is_set():
            self.metrics.tasks_closed.labels(closed.kind,
                                             progress.recovered_by or "callback").inc()

    # ---- polling ---------------------------------------------------------------------

    async def _poll_loop(self, stop: Callable[[], bool]) -> None:
        while not stop():
            if self._fatal is not None:
                raise self._fatal
            now = self._clock()
            task = self.table.next_due(now)
            if task is None:
                next_at = self.table.next_due_at()
                wait = _IDLE_WAIT_SECONDS if next_at is None else max(
                    0.0, min(_IDLE_WAIT_SECONDS, next_at - now))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            task.in_flight = True
            if now >= task.submitted_at + self.config.horizon_seconds:
                await self._slots.acquire()
                self._spawn(self._give_up(task))
                continue
            await self.budget.acquire()
            if not self.table.is_open(task):  # its terminal event came while we waited
                task.in_flight = False
                continue
            await self._slots.acquire()
            self._spawn(self._poll(task))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        running = asyncio.create_task(work)
        self._running.add(running)
        running.add_done_callback(self._finished)

    def _finished(self, running: asyncio.Task[None]) -> None:
        self._running.discard(running)
        if not running.cancelled() and running.exception() is not None and self._fatal is None:
            self._fatal = running.exception()

    async def _drain(self) -> None:
        if not self._running:
            return
        _, unfinished = await asyncio.wait(set(self._running),
                                           timeout=self.config.process.shutdown_timeout_seconds)
        for running in unfinished:
            running.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
            log.warning("abandoned_polls", count=len(unfinished))

    async def _poll(self, task: OpenTask) -> None:
        kind = kind_named(task.kind)
        started = time.monotonic()
        fields: dict[str, Any] = {}
        outcome = "network"
        try:
            fetched = await self._client.fetch(_record_info_path(kind), task.task_id)
            self.metrics.poll_duration.observe(time.monotonic() - started)
            outcome = await self._answered(task, kind, fetched, fields)
        finally:
            self._done(task)
            self.metrics.polls.labels(outcome).inc()
            log.info("poll", task_id=task.task_id, kind=task.kind, outcome=outcome,
                     duration_ms=round((time.monotonic() - started) * 1000, 3), **fields)

    async def _answered(self, task: OpenTask, kind: CallbackKind, fetched: Fetched,
                        fields: dict[str, Any]) -> str:
        if fetched.outcome != "answer":
            fields.update(code=fetched.code, detail=fetched.detail or None)
            if fetched.outcome in ("throttled", "provider_error"):
                fields["backoff_s"] = round(self.budget.slow_down(fetched.retry_after), 3)
            if fetched.outcome != "unreadable":
                self.metrics.provider_errors.labels(fetched.error_label).inc()
            return fetched.outcome
        self.budget.answered()
        if fetched.document is None:  # pragma: no cover - an answer always has its document
            return "unreadable"
        result = recovered_callback(kind, fetched.document, task.task_id)
        status = result if isinstance(result, Status) else result.status
        task.last_status = status.word or task.last_status
        fields["status"] = status.word
        if isinstance(result, Status):
            return "pending"
        event = normalize_recovered(
            result.document, kind=kind, recovered_by="polling", received_at=self._now(),
            schemas=self._codec, provider_tz=self.config.provider_timezone,
            task_ref=task.task_ref)
        if isinstance(event, Rejection):
            fields.update(reason=event.reason,
                          errors=[f"{error.path}: {error.message}" for error in event.errors][:3])
            return "unreadable"
        return await self._publish(task, event, fields)

    async def _give_up(self, task: OpenTask) -> None:
        kind = kind_named(task.kind)
        fields: dict[str, Any] = {}
        outcome = "publish_failed"
        try:
            document = horizon_callback(kind, task.task_id,
                                        horizon_seconds=self.config.horizon_seconds,
                                        last_status=task.last_status)
            event = normalize_recovered(
                document, kind=kind, recovered_by="horizon", received_at=self._now(),
                schemas=self._codec, provider_tz=self.config.provider_timezone,
                task_ref=task.task_ref)
            if isinstance(event, Rejection):  # pragma: no cover - tested valid for every kind
                raise TypeError(f"the horizon error of {kind.name} is invalid: {event}")
            outcome = await self._publish(task, event, fields)
        finally:
            self._done(task)
            log.info("gave_up", task_id=task.task_id, kind=task.kind, outcome=outcome,
                     last_status=task.last_status, **fields)

    async def _publish(self, task: OpenTask, event: CallbackEvent,
                       fields: dict[str, Any]) -> str:
        fields.update(stage=event.stage, event_id=event.event_id)
        if not self.table.is_open(task) or not task.adds(event.stage):
            return "already_seen"
        traceparent, trace_id = start_or_continue(None)
        fields["trace_id"] = trace_id
        headers = [*cloudevent_headers(event, dataschema=self._dataschema),
                   kafka_header(traceparent)]
        try:
            await self._publisher.publish(
                self.config.topics.events, key=event.task_id.encode(),
                value=orjson.dumps(event.data), headers=headers,
                deadline=self.config.publish_timeout_seconds)
        except PublishError as exc:
            fields["publish_error"] = exc.reason
            return "publish_failed"
        self.metrics.events_published.labels(event.kind, event.stage).inc()
        closed = self.table.observed(task.task_id, event.stage)
        if closed is not None and event.recovered_by is not None:
            self.metrics.tasks_closed.labels(event.kind, event.recovered_by).inc()
        return "recovered"

    def _done(self, task: OpenTask) -> None:
        """A poll or give-up ended: free its slot; ask again later if still open."""
        task.in_flight = False
        self._slots.release()
        if self.table.is_open(task):
            low, high = POLL_JITTER
            self.table.schedule(task, self._clock() + self.config.poll_interval_seconds
                                * random.uniform(low, high))  # noqa: S311 - jitter
            self._wake.set()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _record_info_path(kind: CallbackKind) -> str:
    if kind.record_info is None:  # read_submission accepts no such kind
        raise ValueError(f"kind {kind.name!r} has no record-info endpoint")
    return kind.record_info.path
