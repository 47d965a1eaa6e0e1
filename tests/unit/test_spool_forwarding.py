"""The durable publisher's decisions and the forwarder's order, with a scripted producer.

These pin single steps fast; the same behaviour against the real broker is in
tests/integration/test_gateway_spool.py and the fault suite (tests/fault/).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.config.kafka import KafkaSettings, ProducerSettings
from service.kafka.durable import DurablePublisher
from service.kafka.producer import Headers, KafkaPublisher, PublishError
from service.spool.forwarder import Forwarder, Step
from service.spool.framing import SpoolRecord, encode_frame
from service.spool.store import Spool


class ScriptedPublisher(KafkaPublisher):
    """Acknowledges at once unless told to hang, fail a given record, or be disconnected."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings(bootstrap_servers="127.0.0.1:9"), ProducerSettings())
        self.up = True
        self.hang = False
        self.fail_values: set[bytes] = set()
        self.permanent: PublishError | None = None
        self.delivered: list[tuple[str, bytes | None, bytes, Headers, int | None]] = []
        self.attempts: list[int] = []  # records per forwarder attempt

    @property
    def connected(self) -> bool:
        return self.up

    async def enqueue(self, topic: str, *, key: bytes | None, value: bytes, headers: Headers,
                      timestamp_ms: int | None = None) -> asyncio.Future[Any]:
        if not self.up:
            raise PublishError("broker_unavailable")
        if self.permanent is not None:
            raise self.permanent
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if value in self.fail_values:
            delivery.set_exception(RuntimeError("NotLeaderForPartitionError"))
        elif not self.hang:
            self.delivered.append((topic, key, value, headers, timestamp_ms))
            delivery.set_result(None)
        return delivery

    async def check(self, deadline: float = 2.0) -> str | None:  # noqa: ARG002 - answers at once
        return None if self.up and not self.hang else "broker_unreachable"


def record(number: int) -> SpoolRecord:
    return SpoolRecord(topic="events", key=b"task", value=f"v{number}".encode(),
                       headers=[("ce_id", f"{number}".encode())], spooled_at_ms=1000 + number)


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    spool = Spool(tmp_path / "spool", max_bytes=10 * 1024 * 1024)
    spool.open()
    await spool.start()
    yield spool
    await spool.close()


# ---- forwarder ------------------------------------------------------------------------------

async def test_the_forwarder_delivers_every_record_in_order_exactly_as_spooled(
    spool: Spool,
) -> None:
    publisher = ScriptedPublisher()
    for number in range(20):
        await spool.append(record(number))
    forwarder = Forwarder(spool, publisher, batch_records=7)
    await asyncio.wait_for(forwarder.drain(), 5)
    assert [value for _, _, value, _, _ in publisher.delivered] == [
        f"v{n}".encode() for n in range(20)]
    topic, key, _, headers, timestamp = publisher.delivered[3]
    assert (topic, key, headers, timestamp) == ("events", b"task", [("ce_id", b"3")], 1003)
    assert (spool.records, spool.bytes, forwarder.forwarded) == (0, 0, 20)


async def test_after_a_failure_it_probes_from_the_first_unacknowledged_record(
    spool: Spool,
) -> None:
    publisher = ScriptedPublisher()
    for number in range(6):
        await spool.append(record(number))
    publisher.fail_values = {b"v2"}
    forwarder = Forwarder(spool, publisher, batch_records=10)
    assert await forwarder.step() is Step.FAILED
    assert spool.records == 4  # v0 and v1 acknowledged; v3..v5 were delivered but are kept
    assert forwarder.failures == {"RuntimeError": 1}
    delivered_before = len(publisher.delivered)
    assert await forwarder.step() is Step.FAILED  # still failing: one record per probe
    assert len(publisher.delivered) == delivered_before
    publisher.fail_values = set()
    assert await forwarder.step() is Step.PROGRESS  # the probe: v2 alone
    assert publisher.delivered[-1][2] == b"v2"
    assert spool.records == 3
    assert await forwarder.step() is Step.PROGRESS  # full batches again
    assert spool.records == 0
    values = [value for _, _, value, _, _ in publisher.delivered]
    assert values == [b"v0", b"v1", b"v3", b"v4", b"v5", b"v2", b"v3", b"v4", b"v5"]


async def test_a_broker_that_does_not_answer_leaves_the_records_in_the_spool(
    spool: Spool,
) -> None:
    publisher = ScriptedPublisher()
    publisher.hang = True
    await spool.append(record(1))
    forwarder = Forwarder(spool, publisher, send_timeout=0.2)
    assert await forwarder.step() is Step.FAILED
    assert forwarder.failures == {"timeout": 1}
    publisher.up = False
    assert await forwarder.step() is Step.FAILED
    assert forwarder.failures["broker_unavailable"] == 1
    assert spool.records == 1


# ---- durable publisher ----------------------------------------------------------------------

def durable(publisher: ScriptedPublisher, spool: Spool | None, deadline: float = 1.0,
            budget: float = 0.3) -> DurablePublisher:
    return DurablePublisher(publisher, spool, deadline=deadline, broker_budget=budget,
                            largest_record_bytes=1024, clock=lambda: 5.0)


async def publish(target: DurablePublisher, value: bytes = b"v") -> Any:
    return await target.publish("events", key=b"k", value=value, headers=[("h", b"1")])


async def test_a_healthy_broker_takes_the_record_and_the_spool_stays_empty(
    spool: Spool,
) -> None:
    publisher = ScriptedPublisher()
    ack = await publish(durable(publisher, spool))
    assert (ack.spooled, ack.broker_failure) == (False, None)
    assert len(publisher.delivered) == 1
    assert spool.records == 0


async def test_a_slow_broker_gets_its_budget_then_the_spool_keeps_the_exact_record(
    spool: Spool,
) -> None:
    publisher = ScriptedPublisher()
    publisher.hang = True
    started = time.monotonic()
    ack = await publish(durable(publisher, spool, deadline=1.0, budget=0.3), b"exact")
    elapsed = time.monotonic() - started
    assert (ack.spooled, ack.broker_failure) == (True, "publish_timeout")
    assert 0.3 <= elapsed < 1.0
    batch = await spool.read_batch(10, 10**6)
    assert [entry.record for entry in batch.entries] == [SpoolRecord(
        topic="events", key=b"k", value=b"exact", headers=[("h", b"1")], spooled_at_ms=5000)]


async def test_while_the_spool_holds_records_new_ones_queue_behind_them(spool: Spool) -> None:
    publisher = ScriptedPublisher()
    await spool.append(record(1))
    ack = await publish(durable(publisher, spool))
    assert (ack.spooled, ack.broker_failure) == (True, None)
    assert publisher.delivered == []  # the broker was not tried: arrival order is kept
    assert spool.records == 2


async def test_a_disconnected_producer_means_spool_at_once(spool: Spool) -> None:
    publisher = ScriptedPublisher()
    publisher.up = False
    started = time.monotonic()
    ack = await publish(durable(publisher, spool, deadline=2.0, budget=1.5))
    assert (ack.spooled, ack.broker_failure) == (True, "broker_unavailable")
    assert time.monotonic() - started < 0.5


async def test_a_record_the_broker_refuses_for_what_it_is_is_not_spooled(spool: Spool) -> None:
    publisher = ScriptedPublisher()
    publisher.permanent = PublishError("publish_failed", "RecordTooLargeError", transient=False)
    with pytest.raises(PublishError) as raised:
        await publish(durable(publisher, spool))
    assert raised.value.reason == "publish_failed"
    assert spool.records == 0


async def test_a_full_spool_falls_back_to_the_broker_or_answers_spool_full(
    tmp_path: Path,
) -> None:
    frame = len(encode_frame(SpoolRecord("events", b"k", b"v", [("h", b"1")], 5000)))
    spool = Spool(tmp_path / "full", max_bytes=frame)
    spool.open()
    await spool.start()
    try:
        publisher = ScriptedPublisher()
        publisher.hang = True
        assert (await publish(durable(publisher, spool))).spooled  # fills it
        publisher.hang = False
        ack = await publish(durable(publisher, spool))  # spool non-empty and full: broker
        assert (ack.spooled, len(publisher.delivered)) == (False, 1)
        publisher.hang = True
        with pytest.raises(PublishError) as raised:
            await publish(durable(publisher, spool))  # neither can keep it: 503
        assert raised.value.reason == "spool_full"
        publisher.up = False
        started = time.monotonic()
        with pytest.raises(PublishError) as raised:
            await publish(durable(publisher, spool))  # disconnected: no need to wait
        assert raised.value.reason == "spool_full"
        assert time.monotonic() - started < 0.2
    finally:
        await spool.close()


async def test_without_a_spool_the_broker_gets_the_whole_deadline() -> None:
    publisher = ScriptedPublisher()
    publisher.hang = True
    started = time.monotonic()
    with pytest.raises(PublishError) as raised:
        await publish(durable(publisher, None, deadline=0.5, budget=0.1))
    assert raised.value.reason == "publish_timeout"
    assert time.monotonic() - started >= 0.5


async def test_ready_while_either_the_broker_or_the_spool_can_keep_a_record(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "ready", max_bytes=1400)
    publisher = ScriptedPublisher()
    target = durable(publisher, spool)
    publisher.up = False
    assert await target.check() == "broker_unreachable; spool_closed"
    spool.open()
    await spool.start()
    try:
        assert await target.check() is None  # broker down, spool writable
        for number in range(10):  # less than 1024 bytes (the largest record) left
            await spool.append(record(number))
        assert await target.check() == "broker_unreachable; spool_full"
        publisher.up = True
        assert await target.check() is None
    finally:
        await spool.close()
