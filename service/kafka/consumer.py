"""Consumers as a chain of small steps ending in a commit step (after getsentry/arroyo).

    poll (aiokafka) ─▶ bounded concurrent processing ─▶ commit step

* At-least-once: auto-commit is off; an offset is committed only when its
  message *and every earlier message of its partition* are processed
  (``OffsetTracker`` keeps the contiguous watermark per partition).
* Batches: each poll takes at most as many records as there are free
  processing slots (``max_in_flight``), so nothing waits in a buffer of ours;
  aiokafka's own prefetch (one fetch per partition) is the only other buffer.
  A :class:`BatchProcessor` (CPU-only work such as the metrics) gets a whole
  poll in one call, one task per poll instead of one per record.
* No idle waits: while every slot is busy the loop waits for the first one to
  free, not for a poll timeout. When saturation lasts a commit interval (a
  held event, an outage) every assigned partition is paused and the consumer
  keeps polling, so it stays in its group; it resumes when a slot frees.
  (Pausing is not done at once: aiokafka drops a paused partition's
  prefetched records, so a short saturation would cost a refetch.)
* Rebalances: before partitions are taken away, their in-flight work gets a
  bounded grace period, what is done is committed, and ``on_revoked`` lets the
  processor drop per-partition state.
* Shutdown: the signal only sets a flag; the loop stops fetching, waits for
  in-flight work (bounded), commits what is done and leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.config.kafka import KafkaSettings
from service.kafka.health import cluster_unreachable
from service.retry import retry_until_stopped

log = structlog.get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]

#: How long an idle consumer's poll waits for records (it returns as soon as any arrive).
POLL_TIMEOUT_MS: Final = 200


class Processor(Protocol):
    """What a consumer does with one message; it must be idempotent (at-least-once)."""

    async def process(self, record: Record) -> None: ...

    def on_revoked(self, partitions: set[TopicPartition]) -> None: ...


@runtime_checkable
class BatchProcessor(Protocol):
    """What a consumer does with one poll's records (every partition's, each in offset
    order); idempotent too. Their offsets are committed only after the call returns."""

    async def process_batch(self, records: Sequence[Record]) -> None: ...

    def on_revoked(self, partitions: set[TopicPartition]) -> None: ...


@dataclass
class ConsumerOptions:
    topics: tuple[str, ...]
    group_id: str
    max_in_flight: int = 16
    commit_interval_seconds: float = 1.0
    shutdown_grace_seconds: float = 10.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_records: int = 100
    auto_offset_reset: str = "earliest"


@dataclass
class OffsetTracker:
    """Per partition: the next offset that is safe to commit (contiguous completion)."""

    pending: dict[TopicPartition, dict[int, bool]] = field(default_factory=dict)
    committable: dict[TopicPartition, int] = field(default_factory=dict)

    def started(self, tp: TopicPartition, offset: int) -> None:
        self.pending.setdefault(tp, {})[offset] = False

    def finished(self, tp: TopicPartition, offset: int) -> None:
        offsets = self.pending.get(tp)
        if offsets is None or offset not in offsets:
            return  # partition was revoked meanwhile: its offsets are no longer ours
        offsets[offset] = True
        # Offsets are inserted in fetch order, so the dict is ordered; pop the done prefix.
        for first in list(offsets):
            if not offsets[first]:
                break
            del offsets[first]
            self.committable[tp] = first + 1

    def in_flight(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        chosen = self.pending.keys() if partitions is None else partitions
        return sum(len(self.pending.get(tp, {})) for tp in chosen)

    def take_commits(self, partitions: Iterable[TopicPartition] | None = None,
                     ) -> dict[TopicPartition, int]:
        chosen = set(self.committable) if partitions is None else set(partitions)
        return {tp: self.committable.pop(tp) for tp in chosen if tp in self.committable}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in list(partitions):
            self.pending.pop(tp, None)
            self.committable.pop(tp, None)


async def start_with_retry(consumer: AIOKafkaConsumer, stop: Callable[[], bool]) -> bool:
    """Start ``consumer``, retrying with backoff while the broker is unreachable; False
    when ``stop()`` came first (the consumer is then stopped again)."""
    await retry_until_stopped(consumer.start, retry_on=(KafkaError, OSError),
                              failure_event="kafka_connect_failed", stopped=stop)
    if stop():
        with contextlib.suppress(Exception):
            await consumer.stop()
        return False
    return True


class ProcessingCrashedError(RuntimeError):
    """A processor raised unexpectedly; the process should exit non-zero and restart."""


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.messages = Counter(
            f"{prefix}_messages", "Messages processed, by outcome.", ["outcome"],
            registry=registry,
        )
        self.processing = Histogram(
            f"{prefix}_processing_seconds", "Time to process one message.", registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.lag = Gauge(
            f"{prefix}_consumer_lag", "Messages behind the partition's high watermark, by topic.",
            ["topic"], registry=registry,
        )
        self.in_flight = Gauge(
            f"{prefix}_in_flight_messages", "Messages being processed now.", registry=registry,
        )
        self.paused = Gauge(
            f"{prefix}_paused", "1 while fetching is paused because processing is saturated.",
            registry=registry,
        )
        self.commits = Counter(
            f"{prefix}_commits", "Offset commits, by outcome.", ["outcome"], registry=registry,
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: StreamConsumer) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner.drain_and_commit(revoked)
        self._runner.processor.on_revoked(set(revoked))
        self._runner.tracker.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned",
                 partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class StreamConsumer:
    def __init__(
        self,
        settings: KafkaSettings,
        options: ConsumerOptions,
        processor: Processor | BatchProcessor,
        metrics: ConsumerMetrics,
        *,
        consumer_factory: Callable[..., AIOKafkaConsumer] = AIOKafkaConsumer,
    ) -> None:
        self.settings = settings
        self.options = options
        self.processor = processor
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self._consumer_factory = consumer_factory
        self._consumer: AIOKafkaConsumer | None = None
        # Each task is one unit of work: a record, or a batch processor's whole poll.
        self._tasks: dict[asyncio.Task[None], tuple[TopicPartition, ...]] = {}
        self._in_flight_records = 0
        self._slot_freed = asyncio.Event()
        self._paused = False
        self._last_commit = time.monotonic()
        self._next_offset: dict[TopicPartition, int] = {}
        self._fatal: BaseException | None = None
        self._ok = metrics.messages.labels("ok")
        self._error = metrics.messages.labels("error")
        self._abandoned = metrics.messages.labels("abandoned")
        self.started = asyncio.Event()

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer

    async def check(self) -> str | None:
        """Readiness: the consumer is running and the cluster answers."""
        consumer = self._consumer
        if consumer is None or not self.started.is_set():
            return "not_started"
        return await cluster_unreachable(consumer._client)  # aiokafka: no public client

    async def run(self, stop: Callable[[], bool]) -> None:
        """Consume until ``stop()`` is true; always drains, commits and leaves the group.

        Raises ``ProcessingCrashed`` when a processor raised unexpectedly: its message
        was not committed, so the restarted process sees it again.
        """
        consumer = self._consumer_factory(
            **self.settings.client_kwargs(),
            group_id=self.options.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.options.auto_offset_reset,
            session_timeout_ms=self.options.session_timeout_ms,
            heartbeat_interval_ms=self.options.heartbeat_interval_ms,
            max_poll_records=self.options.max_poll_records,
        )
        consumer.subscribe(list(self.options.topics), listener=_Rebalance(self))
        self._consumer = consumer
        await self._start_with_retry(consumer, stop)
        if stop():
            return
        self.started.set()
        try:
            while not stop() and self._fatal is None:
                free = await self._free_slots(consumer)
                if free:
                    batches = await consumer.getmany(
                        timeout_ms=POLL_TIMEOUT_MS,
                        max_records=min(free, self.options.max_poll_records))
                    if batches:
                        self._dispatch(batches)
                await self._maybe_commit()
                self._update_lag()
                self.metrics.in_flight.set(self._in_flight_records)
        finally:
            await self.drain_and_commit(None)
            with contextlib.suppress(Exception):
                await consumer.stop()
            self._consumer = None
            log.info("consumer_stopped", group=self.options.group_id)
        if self._fatal is not None:
            raise ProcessingCrashedError from self._fatal

    async def _start_with_retry(self, consumer: AIOKafkaConsumer, stop: Callable[[], bool]) -> None:
        if not await start_with_retry(consumer, stop):
            return  # stopped, perhaps before the broker answered
        log.info("consumer_started", group=self.options.group_id,
                 topics=list(self.options.topics))

    async def _free_slots(self, consumer: AIOKafkaConsumer) -> int:
        """How many records may be fetched now (0: saturated for a commit interval).

        Waits for the first slot to free instead of polling; a batch processor has one
        slot (its polls are processed one at a time, in order)."""
        free = self._capacity() - self._in_flight_records
        if free <= 0 and self._fatal is None:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.commit_interval_seconds):
                    await self._slot_freed.wait()
            free = self._capacity() - self._in_flight_records
        if free > 0:
            if self._paused:
                consumer.resume(*consumer.assignment())
                self._paused = False
                self.metrics.paused.set(0)
            return free
        # Every time: a rebalance may have assigned partitions since the last pause.
        consumer.pause(*consumer.assignment())
        self._paused = True
        self.metrics.paused.set(1)
        # Paused partitions return nothing at once: this poll only keeps the member in its
        # group (aiokafka leaves it after max_poll_interval_ms without one). Should it
        # return records after all, they are processed, never dropped.
        batches = await consumer.getmany(timeout_ms=0)
        if batches:
            self._dispatch(batches)
        return 0

    def _capacity(self) -> int:
        if isinstance(self.processor, BatchProcessor):
            return self.options.max_poll_records if not self._tasks else 0
        return self.options.max_in_flight

    def _dispatch(self, batches: dict[TopicPartition, list[Record]]) -> None:
        tracker = self.tracker
        for tp, records in batches.items():
            self._next_offset[tp] = records[-1].offset + 1
        if isinstance(self.processor, BatchProcessor):
            # One unit of work: tracked by each partition's last offset of the poll.
            for tp, records in batches.items():
                tracker.started(tp, records[-1].offset)
            everything = [record for records in batches.values() for record in records]
            self._start(self._process_batch(self.processor, batches, everything),
                        tuple(batches), len(everything))
            return
        for tp, records in batches.items():
            for record in records:
                tracker.started(tp, record.offset)
                self._start(self._process(self.processor, tp, record), (tp,), 1)

    def _start(self, work: Coroutine[Any, Any, None], partitions: tuple[TopicPartition, ...],
               records: int) -> None:
        task = asyncio.create_task(work)
        self._tasks[task] = partitions
        self._in_flight_records += records

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.pop(done, None)
            self._in_flight_records -= records
            self._slot_freed.set()

        task.add_done_callback(finished)

    async def _process(self, processor: Processor, tp: TopicPartition, record: Record) -> None:
        started = time.perf_counter()
        if await self._guarded(processor.process(record), f"{tp.topic}[{tp.partition}]",
                               record.offset):
            self.metrics.processing.observe(time.perf_counter() - started)
            self._ok.inc()
            self.tracker.finished(tp, record.offset)

    async def _process_batch(self, processor: BatchProcessor,
                             batches: dict[TopicPartition, list[Record]],
                             records: list[Record]) -> None:
        started = time.perf_counter()
        first = records[0]
        if await self._guarded(processor.process_batch(records),
                               f"{first.topic}[{first.partition}] and the rest of a batch",
                               first.offset):
            # The histogram is per message: a batch observes its mean once.
            self.metrics.processing.observe((time.perf_counter() - started) / len(records))
            self._ok.inc(len(records))
            for tp, polled in batches.items():
                self.tracker.finished(tp, polled[-1].offset)

    async def _guarded(self, work: Coroutine[Any, Any, None], where: str, offset: int) -> bool:
        """Await ``work``; False (and the consumer stops) when it raised unexpectedly."""
        try:
            await work
        except asyncio.CancelledError:
            # Abandoned at shutdown: not marked done, so it is redelivered after restart.
            self._abandoned.inc()
            raise
        except Exception:
            # A processor handles its own expected failures (dead-lettering them). Reaching
            # here is a bug or an outage: stop without committing past this message, so
            # the restarted process (Kubernetes restarts it) sees it again.
            log.exception("processing_failed", where=where, offset=offset)
            self._error.inc()
            if self._fatal is None:
                self._fatal = RuntimeError(f"processing {where}@{offset}")
            self._slot_freed.set()
            return False
        return True

    async def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= self.options.commit_interval_seconds:
            await self.commit(None)

    async def commit(self, partitions: set[TopicPartition] | None) -> None:
        consumer = self._consumer
        offsets = self.tracker.take_commits(partitions)
        self._last_commit = time.monotonic()
        if consumer is None or not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group moved on (rebalance): the new owner will redo these messages.
            self.metrics.commits.labels("failed").inc()
            log.warning("commit_failed", error=type(exc).__name__)
            return
        self.metrics.commits.labels("ok").inc()

    async def drain_and_commit(self, partitions: set[TopicPartition] | None) -> None:
        """Give in-flight work of ``partitions`` (all when None) a grace period, then commit."""
        tasks = [task for task, owned in self._tasks.items()
                 if partitions is None or not partitions.isdisjoint(owned)]
        if tasks:
            _, unfinished = await asyncio.wait(tasks,
                                               timeout=self.options.shutdown_grace_seconds)
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
                log.warning("abandoned_in_flight", count=len(unfinished))
        await self.commit(partitions)

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        lag_by_topic: dict[str, int] = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = self._next_offset.get(tp)
            if highwater is None or position is None:
                continue
            lag_by_topic[tp.topic] = lag_by_topic.get(tp.topic, 0) + max(0, highwater - position)
        for topic, lag in lag_by_topic.items():
            self.metrics.lag.labels(topic).set(lag)
