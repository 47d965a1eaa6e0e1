"""The consumer framework against the real broker: commit after work, backpressure, crash."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from service.config.kafka import KafkaSettings
from service.kafka.consumer import (
    ConsumerMetrics,
    ConsumerOptions,
    ProcessingCrashedError,
    Record,
    StreamConsumer,
)
from tests.harness.factories import consumer_record
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import produce, unique

pytestmark = pytest.mark.kafka


class Recorder:
    def __init__(self, gate: asyncio.Event | None = None, fail_on: bytes | None = None) -> None:
        self.seen: list[bytes] = []
        self.gate = gate
        self.fail_on = fail_on
        self.concurrent = 0
        self.max_concurrent = 0

    async def process(self, record: Record) -> None:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.gate is not None:
                await self.gate.wait()
            assert record.value is not None
            if record.value == self.fail_on:
                raise ValueError("boom")
            self.seen.append(record.value)
        finally:
            self.concurrent -= 1

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        del partitions


class BatchRecorder:
    """A batch processor: every poll in one call, failing on ``fail_on``."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.batches: list[list[bytes]] = []
        self.fail_on = fail_on

    @property
    def seen(self) -> list[bytes]:
        return [value for batch in self.batches for value in batch]

    async def process_batch(self, records: Sequence[Record]) -> None:
        values = [record.value or b"" for record in records]
        if self.fail_on in values:
            raise ValueError("boom")
        self.batches.append(values)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        del partitions


async def produce_values(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """``values`` in order, under one key (so on one partition)."""
    await produce(bootstrap, [consumer_record(topic, value, key=b"k") for value in values])


def make(broker: KafkaBroker, topic: str, group: str, processor: Any,
         **options: Any) -> StreamConsumer:
    return StreamConsumer(
        KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        ConsumerOptions(topics=(topic,), group_id=group, session_timeout_ms=6000,
                        heartbeat_interval_ms=500, **options),
        processor, ConsumerMetrics(CollectorRegistry(), "test"),
    )


async def run_until(consumer: StreamConsumer, condition: Any, timeout: float = 20) -> None:
    done = asyncio.Event()

    async def watch() -> None:
        while not condition():  # noqa: ASYNC110 - polls a plain predicate, there is no event
            await asyncio.sleep(0.05)
        done.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(consumer.run(done.is_set), timeout)
    finally:
        watcher.cancel()


async def test_commits_after_processing_and_resumes_from_committed_offsets(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any,
) -> None:
    topic = kafka_topic_factory(partitions=1)
    group = unique("group")
    await produce_values(kafka_broker.bootstrap_servers, topic, [b"1", b"2", b"3"])
    first = Recorder()
    await run_until(make(kafka_broker, topic, group, first), lambda: len(first.seen) == 3)
    await produce_values(kafka_broker.bootstrap_servers, topic, [b"4"])
    second = Recorder()
    await run_until(make(kafka_broker, topic, group, second), lambda: len(second.seen) >= 1)
    assert sorted(first.seen) == [b"1", b"2", b"3"]
    assert second.seen == [b"4"]  # committed work is not processed again


async def test_saturation_pauses_fetching_within_the_in_flight_bound(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any,
) -> None:
    topic = kafka_topic_factory(partitions=1)
    await produce_values(kafka_broker.bootstrap_servers, topic,
                         [str(i).encode() for i in range(40)])
    gate = asyncio.Event()
    recorder = Recorder(gate)
    consumer = make(kafka_broker, topic, unique("group"), recorder, max_in_flight=5,
                    max_poll_records=5)

    async def open_gate_later() -> None:
        await asyncio.sleep(1.5)
        gate.set()

    paused_seen: list[float] = []

    async def watch_paused() -> None:
        while True:
            paused_seen.extend(sample.value for metric in consumer.metrics.paused.collect()
                               for sample in metric.samples)
            await asyncio.sleep(0.05)

    opener = asyncio.create_task(open_gate_later())
    watcher = asyncio.create_task(watch_paused())
    await run_until(consumer, lambda: len(recorder.seen) == 40)
    await opener
    watcher.cancel()
    assert recorder.max_concurrent <= 5  # a poll takes no more than the free slots
    assert sorted(recorder.seen, key=int) == [str(i).encode() for i in range(40)]
    # Saturated for longer than a commit interval: paused (and still a member), resumed.
    assert 1.0 in paused_seen
    assert paused_seen[-1] == 0.0


async def test_a_saturated_consumer_takes_the_next_records_as_soon_as_a_slot_frees(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any,
) -> None:
    # The loop used to wait out a 200 ms poll on its paused partitions after every
    # bound's worth of records: 300 records, 5 at a time, took 12 s.
    topic = kafka_topic_factory(partitions=1)
    await produce_values(kafka_broker.bootstrap_servers, topic,
                         [str(i).encode() for i in range(300)])
    recorder = Recorder()
    stamps: list[float] = []
    original = recorder.process

    async def timed(record: Record) -> None:
        await asyncio.sleep(0.001)  # some work that yields, as I/O does
        await original(record)
        stamps.append(time.monotonic())

    recorder.process = timed  # type: ignore[method-assign]
    consumer = make(kafka_broker, topic, unique("group"), recorder, max_in_flight=5,
                    max_poll_records=5)
    await run_until(consumer, lambda: len(recorder.seen) == 300)
    assert recorder.max_concurrent <= 5
    assert stamps[-1] - stamps[0] < 3.0, f"{stamps[-1] - stamps[0]:.1f} s for 300 records"


async def test_a_batch_processor_gets_whole_polls_and_its_offsets_commit_after_it(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any,
) -> None:
    topic = kafka_topic_factory(partitions=1)
    group = unique("group")
    values = [str(i).encode() for i in range(50)]
    await produce_values(kafka_broker.bootstrap_servers, topic, values)
    first = BatchRecorder()
    await run_until(make(kafka_broker, topic, group, first, max_poll_records=20),
                    lambda: len(first.seen) == 50)
    assert first.seen == values  # in offset order
    assert max(len(batch) for batch in first.batches) > 1
    assert all(len(batch) <= 20 for batch in first.batches)
    await produce_values(kafka_broker.bootstrap_servers, topic, [b"50", b"bad", b"52"])
    crashing = BatchRecorder(fail_on=b"bad")
    with pytest.raises(ProcessingCrashedError):
        await run_until(make(kafka_broker, topic, group, crashing), lambda: False)
    again = BatchRecorder()
    await run_until(make(kafka_broker, topic, group, again), lambda: b"52" in again.seen)
    assert again.seen == [b"50", b"bad", b"52"]  # the failed poll was not committed


async def test_an_unexpected_failure_stops_without_committing_past_it(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any,
) -> None:
    topic = kafka_topic_factory(partitions=1)
    group = unique("group")
    await produce_values(kafka_broker.bootstrap_servers, topic, [b"ok", b"bad", b"later"])
    crashing = Recorder(fail_on=b"bad")
    with pytest.raises(ProcessingCrashedError):
        await run_until(make(kafka_broker, topic, group, crashing), lambda: False)
    again = Recorder()
    await run_until(make(kafka_broker, topic, group, again), lambda: b"bad" in again.seen)
    assert again.seen[0] == b"bad"  # redelivered after the "restart"
