"""Records on the test broker: producing, reading a topic back, headers and values, unique names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import RecordMetadata

from service.contracts.registry import EVENT_V1
from tests.harness.factories import event_record, schemas


async def read_records(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 15.0, **kwargs: Any,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, waiting until ``expect`` arrived."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, **kwargs,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
        # a short grace period catches records that should not be there
        batch = await consumer.getmany(timeout_ms=300)
        for partition_records in batch.values():
            records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def values_of(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    """The JSON values of ``records``."""
    return [orjson.loads(record.value or b"null") for record in records]


async def produce(bootstrap: str, records: Iterable[ConsumerRecord[bytes, bytes]],
                  ) -> list[RecordMetadata]:
    """Publish each record's key, value and headers to its topic, one by one (so the order
    within each partition is the order given); partition and offset come from the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        return [await producer.send_and_wait(record.topic, record.value, key=record.key,
                                             headers=record.headers)
                for record in records]
    finally:
        await producer.stop()


async def produce_events(bootstrap: str, topic: str, *documents: dict[str, Any],
                         traceparent: str | None = None) -> list[RecordMetadata]:
    """Publish v1 events as the gateway does (key = task id, the CloudEvents envelope, the
    trace context); the gateway publishes only valid events, so each is checked first."""
    for document in documents:
        assert schemas().errors(EVENT_V1, document) == [], document
    return await produce(bootstrap, [event_record(document, topic=topic, traceparent=traceparent)
                                     for document in documents])
