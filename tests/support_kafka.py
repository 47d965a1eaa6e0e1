"""Reading topics back in tests, and gateway configuration pointed at the test broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from service.config.env import Env
from service.config.gateway import GatewayConfig


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


def gateway_env(bootstrap: str, **overrides: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EVENTS_TOPIC": unique("test.events"),
        "REJECTED_TOPIC": unique("test.rejected"),
        "ARCHIVED_TOPIC": unique("test.archived"),
        "ARCHIVE_DLQ_TOPIC": unique("test.archive-failed"),
        "TASKS_TOPIC": unique("test.tasks"),
        "PUBLISH_TIMEOUT_SECONDS": "2",
        "TOPIC_PARTITIONS": "3",
        "AUTH_MODE": "none",
        "RATE_LIMIT_PER_SECOND": "100000",
        "RATE_LIMIT_BURST": "100000",
    }
    env.update(overrides)
    return env


def gateway_config(env: dict[str, str]) -> GatewayConfig:
    return GatewayConfig.from_env(Env(env))


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")
