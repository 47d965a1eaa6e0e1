"""Durable publishing: a record is kept by the broker or by the fsynced spool, or refused.

``DurablePublisher.publish`` returns an ``Ack`` only when one of the two holds the
record, exactly as given (topic, key, value, headers); it raises ``PublishError``
when neither can, so the caller answers 503. The whole call ends within
``deadline`` seconds (``PUBLISH_TIMEOUT_SECONDS``):

1. Without a spool: the broker gets the whole deadline (as before the spool existed).
2. The spool holds records (an outage is going on, or it is still draining), or the
   producer has never connected: spool at once. While the spool is non-empty every
   new record goes behind the ones already in it, so the forwarder delivers in
   arrival order and a task's later stage cannot overtake an earlier spooled one.
3. Otherwise the broker gets ``broker_budget`` seconds (``SPOOL_AFTER_SECONDS``) to
   acknowledge; past it, or on a transient error, the record is spooled with the
   rest of the deadline left for the fsync. A record the broker refuses for what it
   is (too large, not authorized) is not spooled: it could never be forwarded.
4. When the spool cannot take a record (full, or the disk fails) and the broker was
   not tried yet, the broker gets what is left of the deadline (this one record may
   then overtake spooled ones; availability wins over order here). If it fails too,
   the error is the spool's (``spool_full``): that is what an operator must fix.

A record given up on after ``broker_budget`` may still be delivered by the producer
later, and the spooled copy is forwarded too: a duplicate with the same event id and
bytes, which consumers drop. If the gateway exits meanwhile, nothing is lost: the
spool has the record, whatever happens to the producer's buffer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.kafka.producer import Headers, KafkaPublisher, PublishError
from service.spool.framing import SpoolRecord
from service.spool.store import Spool, SpoolError


@dataclass(frozen=True, slots=True)
class Ack:
    """Where the record is: the broker (``spooled`` False) or the spool.

    ``broker_failure`` is why the broker did not take it directly (a PublishError
    reason), None when it did or when the spool was chosen to keep arrival order.
    """

    spooled: bool = False
    broker_failure: str | None = None


class DurablePublisher:
    def __init__(
        self,
        publisher: KafkaPublisher,
        spool: Spool | None,
        *,
        deadline: float,
        broker_budget: float,
        largest_record_bytes: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.spool = spool
        self._deadline = deadline
        self._broker_budget = min(broker_budget, deadline)
        self._largest_record = largest_record_bytes
        self._clock = clock

    async def publish(self, topic: str, *, key: bytes | None, value: bytes,
                      headers: Headers) -> Ack:
        spool = self.spool
        if spool is None:
            await self.publisher.publish(topic, key=key, value=value, headers=headers,
                                         deadline=self._deadline)
            return Ack()
        ends_at = time.monotonic() + self._deadline
        broker_failure: str | None = None
        tried_broker = False
        if spool.records == 0 and self.publisher.connected:
            tried_broker = True
            try:
                await self.publisher.publish(topic, key=key, value=value, headers=headers,
                                             deadline=self._broker_budget)
            except PublishError as exc:
                if not exc.transient:
                    raise
                broker_failure = exc.reason
            else:
                return Ack()
        elif not self.publisher.connected:
            broker_failure = "broker_unavailable"
        record = SpoolRecord(topic=topic, key=key, value=value, headers=list(headers),
                             spooled_at_ms=int(self._clock() * 1000))
        try:
            async with asyncio.timeout(max(0.0, ends_at - time.monotonic())):
                await spool.append(record)
        except TimeoutError:
            raise PublishError("spool_timeout", "the spool's fsync did not finish in time",
                               ) from None
        except SpoolError as exc:
            if tried_broker or not self.publisher.connected:
                raise PublishError(exc.reason, str(exc)) from exc
            try:
                await self.publisher.publish(topic, key=key, value=value, headers=headers,
                                             deadline=max(0.0, ends_at - time.monotonic()))
            except PublishError as broker:
                raise PublishError(exc.reason, f"{exc}; the broker: {broker.reason}") from exc
            return Ack()
        return Ack(spooled=True, broker_failure=broker_failure)

    async def check(self) -> str | None:
        """Readiness, "can accept durably": None when the broker or the spool can keep a
        record now; else the reasons of both."""
        broker = await self.publisher.check()
        if broker is None or self.spool is None:
            return broker
        spool = self.spool.unwritable(self._largest_record)
        return None if spool is None else f"{broker}; {spool}"

