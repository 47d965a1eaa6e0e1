"""The forwarder: drains the spool to Kafka in arrival order, with the same records.

Each record goes out exactly as it was spooled (topic, key, value, headers; the
Kafka timestamp is the time it was spooled), so its event id and content are
those the gateway answered with. The head moves (and segments are deleted) only
over records the broker acknowledged, in order: after a failure the next attempt
starts again at the first unacknowledged record, so a record acknowledged after
it in the failed batch is sent twice (a duplicate, never a loss).

While the broker fails, the forwarder *probes* with one record at a time (with
backoff), so an outage does not pile batch after batch into the producer's
buffer; the first acknowledgement switches it back to full batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from enum import Enum
from typing import Any, Final

import structlog

from service.kafka.producer import KafkaPublisher, PublishError
from service.retry import Backoff
from service.spool.store import Entry, Spool

log = structlog.get_logger(__name__)

# Between failed attempts (probes): 0.2 s doubling up to 10 s, reset by progress.
_BACKOFF: Final = Backoff(first=0.2, cap=10.0)
_IDLE_WAIT: Final = 1.0
_LOG_EVERY_FAILURES: Final = 20


class Step(Enum):
    PROGRESS = "progress"
    IDLE = "idle"
    FAILED = "failed"


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        publisher: KafkaPublisher,
        *,
        batch_records: int = 500,
        batch_bytes: int = 1024 * 1024,
        send_timeout: float = 10.0,
    ) -> None:
        self.spool = self._spool = spool
        self._publisher = publisher
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        self._send_timeout = send_timeout
        self._probing = False
        self._failures_in_a_row = 0
        # Counters for the metrics collector.
        self.forwarded = 0
        self.failures: Counter[str] = Counter()

    async def run(self) -> None:
        """Forward for as long as the gateway runs (cancel to stop)."""
        while True:
            await self._pause_after(await self.step())

    async def drain(self) -> None:
        """Forward until the spool is empty (bound it with ``asyncio.timeout``)."""
        while self._spool.records:
            await self._pause_after(await self.step())

    async def _pause_after(self, outcome: Step) -> None:
        if outcome is Step.PROGRESS:
            return
        if outcome is Step.FAILED:
            await asyncio.sleep(_BACKOFF.delay(self._failures_in_a_row))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_IDLE_WAIT):
                await self._spool.changed.wait()

    async def step(self) -> Step:
        """Forward one batch from the head of the spool."""
        spool = self._spool
        spool.changed.clear()  # before reading: a commit after this wakes the next wait
        if spool.records == 0:
            return Step.IDLE
        if not self._publisher.connected:
            self._failed("broker_unavailable")
            return Step.FAILED
        batch = await spool.read_batch(1 if self._probing else self._batch_records,
                                       self._batch_bytes)
        if not batch.entries:
            spool.acknowledge(batch.end, 0)  # moves past damaged bytes, if any
            return Step.IDLE
        acknowledged, reason = await self._send(batch.entries)
        if acknowledged:
            through = batch.end if acknowledged == len(batch.entries) else (
                batch.entries[acknowledged - 1].end)
            spool.acknowledge(through, acknowledged)
            self.forwarded += acknowledged
        if reason is not None:
            self._failed(reason)
            return Step.FAILED
        if self._failures_in_a_row:
            log.info("spool_forwarding_resumed", failed_attempts=self._failures_in_a_row)
        self._failures_in_a_row = 0
        self._probing = False
        if spool.records == 0:
            log.info("spool_drained", forwarded_total=self.forwarded)
        return Step.PROGRESS

    def _failed(self, reason: str) -> None:
        self.failures[reason] += 1
        self._failures_in_a_row += 1
        self._probing = True
        if self._failures_in_a_row == 1 or self._failures_in_a_row % _LOG_EVERY_FAILURES == 0:
            log.warning("spool_forwarding_failed", reason=reason,
                        failed_attempts=self._failures_in_a_row, records=self._spool.records,
                        oldest_age_s=round(self._spool.oldest_age_seconds(), 1))

    async def _send(self, entries: Sequence[Entry]) -> tuple[int, str | None]:
        """(how many leading entries the broker acknowledged, why it stopped or None)."""
        deliveries: list[asyncio.Future[Any]] = []
        reason: str | None = None
        try:
            async with asyncio.timeout(self._send_timeout):
                for entry in entries:
                    record = entry.record
                    delivery = await self._publisher.enqueue(
                        record.topic, key=record.key, value=record.value,
                        headers=record.headers, timestamp_ms=record.spooled_at_ms)
                    delivery.add_done_callback(_retrieve)
                    deliveries.append(delivery)
                await asyncio.wait(deliveries)
        except TimeoutError:
            reason = "timeout"
        except PublishError as exc:
            reason = exc.reason
        acknowledged = 0
        for delivery in deliveries:
            if not delivery.done() or delivery.cancelled():
                break
            error = delivery.exception()
            if error is not None:
                reason = type(error).__name__
                break
            acknowledged += 1
        if reason is None and acknowledged < len(entries):
            reason = "timeout"
        return acknowledged, reason


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    """Mark a late failure as seen (the next attempt sends the record again)."""
    if not delivery.cancelled():
        delivery.exception()
