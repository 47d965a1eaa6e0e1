"""``python -m service metrics``: the event stream as Prometheus metrics.

One process: the admin listener (``/healthz``, ``/readyz``, ``/metrics`` on
``ADMIN_PORT``) and the consumer loop as a task beside it. The consumer reads
the events topic and, when they exist, the archived and archive-failed
topics, in its own group (``METRICS_GROUP_ID``). Offsets are committed only
after a record's metrics are updated, so a restart resumes after the last
committed record: the counters start again from zero (``rate`` and
``increase`` handle the reset) and committed records are not counted again.

An archive topic created after start-up is picked up within
``OPTIONAL_TOPICS_RECHECK_SECONDS``: the consumer leaves the group cleanly
(committing what is done) and subscribes again with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from service.config.metrics_consumer import MetricsConsumerConfig
from service.consumers.metrics.exporter import MusicMetrics
from service.consumers.metrics.processor import MetricsProcessor, StateTables
from service.kafka.consumer import ConsumerMetrics, ConsumerOptions, StreamConsumer
from service.retry import retry_until_stopped
from service.runtime import ShutdownFlag, Worker, run_worker

log = structlog.get_logger(__name__)

CONSUMER_METRICS_PREFIX: Final = "metrics"
OPTIONAL_TOPICS_RECHECK_SECONDS: Final = 60.0


class MetricsConsumerLoop:
    """Runs the :class:`StreamConsumer`, re-subscribing when an archive topic appears."""

    def __init__(self, config: MetricsConsumerConfig, processor: MetricsProcessor,
                 consumer_metrics: ConsumerMetrics, shutdown: ShutdownFlag, *,
                 recheck_seconds: float = OPTIONAL_TOPICS_RECHECK_SECONDS) -> None:
        self._config = config
        self._processor = processor
        self._consumer_metrics = consumer_metrics
        self._shutdown = shutdown
        self._recheck_seconds = recheck_seconds
        self._consumer: StreamConsumer | None = None
        self._resubscribe = asyncio.Event()

    async def check(self) -> str | None:
        consumer = self._consumer
        if consumer is None:
            return "not_started"
        return await consumer.check()

    async def run(self) -> None:
        topics = self._config.topics
        optional = (topics.archived, topics.archive_failed)
        while not self._shutdown.is_set:
            existing = await self._existing_topics()
            if existing is None:
                return  # shutdown while the broker was unreachable
            subscribed = (topics.events, *(t for t in optional if t in existing))
            missing = [t for t in optional if t not in existing]
            if missing:
                log.info("optional_topics_missing", topics=missing,
                         recheck_in_s=self._recheck_seconds)
            self._resubscribe.clear()
            self._consumer = StreamConsumer(
                self._config.kafka,
                ConsumerOptions(topics=subscribed, group_id=self._config.group_id,
                                shutdown_grace_seconds=self._config.process.shutdown_timeout_seconds),
                self._processor, self._consumer_metrics,
            )
            watcher = asyncio.create_task(self._watch(missing)) if missing else None
            try:
                await self._consumer.run(
                    lambda: self._shutdown.is_set or self._resubscribe.is_set())
            finally:
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                self._consumer = None
            # Leaving the group gave up every partition: start the new member afresh.
            self._processor.drop_all()

    async def _existing_topics(self) -> set[str] | None:
        """The cluster's topics, retried until the broker answers; None on shutdown."""
        return await retry_until_stopped(self._list_topics, retry_on=(KafkaError, OSError),
                                         failure_event="kafka_metadata_failed",
                                         stopped=lambda: self._shutdown.is_set)

    async def _list_topics(self) -> set[str]:
        admin = AIOKafkaAdminClient(**self._config.kafka.client_kwargs())
        try:
            await admin.start()
            return set(await admin.list_topics())
        finally:
            await admin.close()

    async def _watch(self, missing: list[str]) -> None:
        while True:
            await asyncio.sleep(self._recheck_seconds)
            try:
                existing = await self._list_topics()
            except (KafkaError, OSError):
                continue
            appeared = [t for t in missing if t in existing]
            if appeared:
                log.info("optional_topics_appeared", topics=appeared)
                self._resubscribe.set()
                return


async def run_metrics(config: MetricsConsumerConfig) -> int:
    """Serve the admin port and consume until SIGTERM/SIGINT; the exit code (1: crashed)."""
    registry = CollectorRegistry()
    processor = MetricsProcessor(
        topics=config.topics, metrics=MusicMetrics(registry),
        state=StateTables(ttl_seconds=config.task_state_ttl_seconds,
                          max_entries=config.task_state_max_entries),
    )
    shutdown = ShutdownFlag()
    shutdown.install()
    loop = MetricsConsumerLoop(config, processor,
                               ConsumerMetrics(registry, CONSUMER_METRICS_PREFIX), shutdown)
    # A crash of the loop stops the process (exit 1): it restarts from the committed offsets.
    worker = Worker(work=lambda _: loop.run(), checks={"consumer": loop.check})
    return await run_worker("metrics", contextlib.nullcontext(worker), process=config.process,
                            registry=registry, shutdown=shutdown)
