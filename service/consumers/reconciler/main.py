"""``python -m service reconciler``: the reconciler and its admin port in one process.

Start-up: the producer connects in the background; the reconciler rebuilds its state
from the topics and then polls (``/readyz`` answers 503 ``rebuilding_state`` until
then). It runs in the shared worker runtime (``service.runtime.run_worker``).
Shutdown (SIGTERM/SIGINT): no new poll starts, running ones get
``SHUTDOWN_TIMEOUT_SECONDS``, the consumer closes, the producer is flushed. A bug that
stops the reconciler ends the process with exit code 1 so the orchestrator restarts it;
the state is rebuilt from the topics.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from service.config.reconciler import ReconcilerConfig
from service.consumers.reconciler.metrics import ReconcilerMetrics
from service.consumers.reconciler.provider import RecordInfoClient
from service.consumers.reconciler.reconciler import Reconciler
from service.contracts.registry import SchemaRegistry
from service.kafka.producer import KafkaPublisher
from service.runtime import ShutdownFlag, Worker, run_worker

log = structlog.get_logger(__name__)


def build_publisher(config: ReconcilerConfig) -> KafkaPublisher:
    return KafkaPublisher(config.kafka, config.producer)


def provider_session(config: ReconcilerConfig) -> aiohttp.ClientSession:
    """Environment proxies ignored, no cookies kept; call it inside the running loop."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=config.request_timeout_seconds),
        trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=config.max_concurrency))


def build_reconciler(config: ReconcilerConfig, *, registry: CollectorRegistry,
                     session: aiohttp.ClientSession, publisher: KafkaPublisher,
                     ) -> Reconciler:
    schemas = SchemaRegistry.load()
    client = RecordInfoClient(session, base_url=config.provider_base_url,
                              api_key=config.provider_api_key,
                              max_answer_bytes=config.max_answer_bytes, schemas=schemas)
    return Reconciler(config, publisher=publisher, client=client, schemas=schemas,
                      metrics=ReconcilerMetrics(registry))


@contextlib.asynccontextmanager
async def reconciler_worker(config: ReconcilerConfig,
                            registry: CollectorRegistry) -> AsyncIterator[Worker]:
    """The producer, the provider session and the reconciler; closed in reverse order."""
    publisher = build_publisher(config)
    await publisher.start()
    session = provider_session(config)
    try:
        reconciler = build_reconciler(config, registry=registry, session=session,
                                      publisher=publisher)

        async def work(shutdown: ShutdownFlag) -> None:
            await reconciler.run(lambda: shutdown.is_set)

        yield Worker(work=work, checks={"reconciler": reconciler.check})
    finally:
        await session.close()
        await publisher.stop()


async def run_reconciler(config: ReconcilerConfig) -> int:
    """Serve the admin port and reconcile until SIGTERM/SIGINT; 1 after a crash."""
    log.info("reconciler_starting", provider=config.provider_base_url,
             tasks_topic=config.topics.tasks, events_topic=config.topics.events,
             after_s=config.after_seconds, interval_s=config.poll_interval_seconds,
             horizon_s=config.horizon_seconds, budget_per_s=config.max_requests_per_second,
             max_open_tasks=config.max_open_tasks)
    registry = CollectorRegistry()
    return await run_worker("reconciler", reconciler_worker(config, registry),
                            process=config.process, registry=registry)
