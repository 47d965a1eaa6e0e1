"""The producer adapter: a record counts as published only once the broker acks it.

The producer connects in the background with backoff, so a process starts
(and answers 503 with Retry-After) while the broker is still unreachable
instead of crash-looping. ``publish`` is bounded by a deadline: a record the
broker has not acknowledged in time is reported as a failure, never as success.
If it is delivered later anyway, the sender's retry produces the same event id,
which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from service.config.kafka import KafkaSettings, ProducerSettings
from service.kafka.health import cluster_unreachable
from service.retry import retry_until_stopped

log = structlog.get_logger(__name__)

Headers = list[tuple[str, bytes]]


class PublishError(Exception):
    """The broker did not acknowledge the record; ``reason`` is machine-readable.

    ``transient`` says whether trying again later (from the spool) can succeed: true
    for timeouts, a disconnected producer and retriable broker errors; false for a
    record the broker refuses for what it is (too large, not authorized).
    """

    def __init__(self, reason: str, detail: str = "", *, transient: bool = True) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.transient = transient


def is_transient(exc: KafkaError) -> bool:
    # KafkaTimeoutError (a batch expired in the producer) is not marked retriable by
    # aiokafka, but it only says the broker was too slow.
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaTimeoutError)


class KafkaPublisher:
    def __init__(self, settings: KafkaSettings, producer_settings: ProducerSettings) -> None:
        self._settings = settings
        self._producer_settings = producer_settings
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._last_error: str | None = "not_started"

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        self._connect_task = asyncio.create_task(self._connect_loop(), name="kafka-connect")

    async def wait_connected(self, deadline: float) -> bool:
        if self._connect_task is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connect_task), deadline)
        return self.connected

    def _new_producer(self) -> AIOKafkaProducer:
        options = self._producer_settings
        compression = None if options.compression_type == "none" else options.compression_type
        return AIOKafkaProducer(
            **self._settings.client_kwargs(),
            acks="all",
            enable_idempotence=options.enable_idempotence,
            compression_type=compression,
            max_request_size=options.max_request_size,
            linger_ms=options.linger_ms,
            request_timeout_ms=options.request_timeout_ms,
        )

    async def _connect_once(self) -> AIOKafkaProducer:
        producer = self._new_producer()
        try:
            await producer.start()
        except (KafkaError, OSError):
            self._last_error = "broker_unreachable"
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _connect_loop(self) -> None:
        # No stop condition: stop() cancels this task.
        self._producer = await retry_until_stopped(
            self._connect_once, retry_on=(KafkaError, OSError),
            failure_event="kafka_connect_failed")
        self._last_error = None
        log.info("kafka_connected", bootstrap=self._settings.bootstrap_servers)

    async def publish(
        self, topic: str, *, key: bytes | None, value: bytes, headers: Headers, deadline: float,
    ) -> Any:
        """Send and wait for the acknowledgement (acks=all); raise PublishError otherwise."""
        try:
            async with asyncio.timeout(deadline):
                delivery = await self.enqueue(topic, key=key, value=value, headers=headers)
                return await delivery
        except TimeoutError:
            raise PublishError(
                "publish_timeout", f"no acknowledgement within {deadline}s",
            ) from None
        except KafkaError as exc:
            raise PublishError("publish_failed", type(exc).__name__,
                               transient=is_transient(exc)) from exc

    async def enqueue(
        self, topic: str, *, key: bytes | None, value: bytes, headers: Headers,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        """Hand a record to the producer; the future resolves on the acknowledgement.

        A future given up on (cancelled or timed out on our side) does not stop the
        producer: it may still deliver the record later.
        """
        producer = self._producer
        if producer is None:
            raise PublishError("broker_unavailable", self._last_error or "not connected")
        try:
            delivery: asyncio.Future[Any] = await producer.send(
                topic, value=value, key=key, headers=headers, timestamp_ms=timestamp_ms)
        except KafkaError as exc:
            raise PublishError("publish_failed", type(exc).__name__,
                               transient=is_transient(exc)) from exc
        return delivery

    async def check(self, deadline: float = 2.0) -> str | None:
        """Readiness: None when connected and the cluster answers a metadata request."""
        producer = self._producer
        if producer is None:
            return self._last_error or "not_connected"
        return await cluster_unreachable(producer.client, deadline)

    async def stop(self, flush_timeout: float | None = None) -> None:
        """Flush what is buffered and close; safe to call when never connected.

        With ``flush_timeout``, give up flushing after that many seconds (a broker that
        is down would otherwise hold the exit for the producer's request timeout).
        Only safe where every record still buffered was answered without a 2xx or is
        kept elsewhere (the gateway's spool): it is abandoned, not lost.
        """
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                async with asyncio.timeout(flush_timeout):
                    await producer.stop()
            except TimeoutError:
                log.warning("kafka_flush_abandoned", after_s=flush_timeout,
                            detail="the broker did not take the buffered records in time")
