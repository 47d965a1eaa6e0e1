"""``python -m service archiver``: the archiving consumer and its admin port in one process.

Start-up: the producer connects in the background; the consumer joins its group once the
producer is connected (a processed event must be reportable). Shutdown (SIGTERM/SIGINT):
the consumer stops fetching, in-flight events get ``SHUTDOWN_TIMEOUT_SECONDS`` to finish
and are abandoned after it (their temporary files removed, their offsets not committed),
what is done is committed, the group is left, then the producer is flushed. An outage
that stopped the consumer (storage or Kafka publishing) ends the process with exit code 1
so the orchestrator restarts it; nothing past the failed event was committed.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver
from prometheus_client import CollectorRegistry

from service.config.archiver import ArchiverConfig
from service.consumers.archiver.download import DownloadLimits, make_session
from service.consumers.archiver.fetching import downloader
from service.consumers.archiver.media import limits_by_role
from service.consumers.archiver.metrics import PREFIX, ArchiverMetrics
from service.consumers.archiver.netguard import AddressPolicy
from service.consumers.archiver.processor import ArchiveProcessor, ProcessorSettings
from service.contracts.registry import ARCHIVE_FAILED_V1, ARCHIVED_V1, SchemaRegistry
from service.kafka.consumer import ConsumerMetrics, ConsumerOptions, StreamConsumer
from service.kafka.producer import KafkaPublisher
from service.runtime import ShutdownFlag, Worker, run_worker
from service.storage.base import ObjectStore, StorageError
from service.storage.factory import store_for

log = structlog.get_logger(__name__)

#: Events in flight per download slot (``ARCHIVE_CONCURRENCY``).
EVENTS_PER_DOWNLOAD_SLOT: Final = 4


def download_limits(config: ArchiverConfig) -> DownloadLimits:
    return DownloadLimits(
        max_bytes=config.max_bytes,
        max_redirects=3,
        connect_timeout=config.connect_timeout_seconds,
        total_timeout=config.total_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
    )


def address_policy(config: ArchiverConfig) -> AddressPolicy:
    return AddressPolicy(allow_loopback=config.allow_loopback,
                         allowed_hosts=config.allowed_hosts)


def _log_start(config: ArchiverConfig, store: ObjectStore) -> None:
    if config.allow_loopback:
        log.warning("loopback_downloads_allowed",
                    detail="ARCHIVE_ALLOW_LOOPBACK is on: for tests only, never in production")
    log.info("archiver_starting", events_topic=config.topics.events,
             archived_topic=config.topics.archived,
             dead_letter_topic=config.topics.archive_failed, group=config.group_id,
             concurrency=config.concurrency, max_bytes=config.max_bytes,
             max_bytes_video=config.max_bytes_by_role.get("video", config.max_bytes),
             storage=store.uri("task/track/audio").rsplit("/", 3)[0])


def build_processor(config: ArchiverConfig, registry: CollectorRegistry, *, store: ObjectStore,
                    publisher: KafkaPublisher, session: aiohttp.ClientSession,
                    tmp_dir: Path) -> ArchiveProcessor:
    policy = address_policy(config)
    limits = limits_by_role(download_limits(config), config.max_bytes_by_role)
    schemas = SchemaRegistry.load()
    return ArchiveProcessor(
        store=store,
        publisher=publisher,
        fetch=downloader(session, limits, policy, attempts=config.retry_attempts,
                         base_delay=config.retry_base_delay_seconds,
                         max_delay=config.retry_max_delay_seconds),
        settings=ProcessorSettings(
            archived_topic=config.topics.archived,
            dead_letter_topic=config.topics.archive_failed,
            archived_schema=schemas.schema_id(ARCHIVED_V1),
            dead_letter_schema=schemas.schema_id(ARCHIVE_FAILED_V1),
            concurrency=config.concurrency,
            publish_timeout_seconds=config.publish_timeout_seconds,
        ),
        metrics=ArchiverMetrics(registry),
        tmp_dir=tmp_dir,
    )


async def consume_once_publishing(publisher: KafkaPublisher, consumer: StreamConsumer,
                                  shutdown: ShutdownFlag) -> None:
    """Join the group only once a processed event can be reported, then consume."""
    while not await publisher.wait_connected(1.0):
        if shutdown.is_set:
            return
    await consumer.run(lambda: shutdown.is_set)


async def storage_unreachable(store: ObjectStore) -> str | None:
    """Readiness of the object store."""
    try:
        await store.check()
    except StorageError:
        return "storage_unreachable"
    return None


@contextlib.asynccontextmanager
async def archiver_worker(config: ArchiverConfig, registry: CollectorRegistry,
                          store: ObjectStore, resolver: AbstractResolver | None = None,
                          ) -> AsyncIterator[Worker]:
    """The archiver's clients, open for as long as the worker runs, and its consumer loop.

    ``store`` is closed with the others."""
    publisher = KafkaPublisher(config.kafka, config.producer)
    with tempfile.TemporaryDirectory(prefix="archiver-") as tmp:
        session = make_session(address_policy(config), download_limits(config), resolver)
        try:
            processor = build_processor(config, registry, store=store, publisher=publisher,
                                        session=session, tmp_dir=Path(tmp))
            consumer = StreamConsumer(
                config.kafka,
                ConsumerOptions(
                    topics=(config.topics.events,),
                    group_id=config.group_id,
                    # Several events per download slot: while one event's reports are
                    # published (or its objects are found already stored), the slots
                    # keep downloading the next events' files.
                    max_in_flight=config.concurrency * EVENTS_PER_DOWNLOAD_SLOT,
                    shutdown_grace_seconds=config.process.shutdown_timeout_seconds,
                ),
                processor,
                ConsumerMetrics(registry, PREFIX),
            )

            await publisher.start()
            yield Worker(work=functools.partial(consume_once_publishing, publisher, consumer),
                         checks={"consumer": consumer.check, "producer": publisher.check,
                                 "storage": functools.partial(storage_unreachable, store)})
        finally:
            await publisher.stop()
            await session.close()
            await store.close()


async def run_archiver(
    config: ArchiverConfig,
    *,
    registry: CollectorRegistry | None = None,
    resolver: AbstractResolver | None = None,
    shutdown: ShutdownFlag | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``shutdown`` is set); return the process exit code.

    ``resolver`` replaces the DNS resolver inside the network guard (tests); ``shutdown``
    lets an in-process caller stop it (signal handlers are installed only without it).
    """
    store = store_for(config.storage)  # makes no request; a bad S3 prefix stops start-up
    _log_start(config, store)
    registry = registry if registry is not None else CollectorRegistry()
    return await run_worker("archiver", archiver_worker(config, registry, store, resolver),
                            process=config.process, registry=registry, shutdown=shutdown)
