"""Pins that the real-Kafka harness works with aiokafka: idempotent produce, group consume with
manual commits, PLAINTEXT and SASL_PLAINTEXT/SCRAM listeners, topic configs, restart, pause."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, SaslAuthenticationFailed
from aiokafka.structs import TopicPartition

from tests.harness.kafka_fixtures import create_topic

if TYPE_CHECKING:
    from tests.harness.kafka_broker import KafkaBroker
    from tests.harness.kafka_fixtures import KafkaBrokerFactory, KafkaTopicFactory

pytestmark = pytest.mark.kafka

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 500,
}


async def _produce(client: dict[str, Any], topic: str, values: list[bytes], **extra: Any) -> None:
    producer = AIOKafkaProducer(**client, acks="all", enable_idempotence=True, **extra)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=f"k{i}".encode())
        # enable_idempotence took effect: the broker handed out a producer id (aiokafka
        # internals, but the cheapest way to tell idempotence was not silently off).
        assert producer._txn_manager is not None
        assert producer._txn_manager.producer_id >= 0
    finally:
        await producer.stop()


async def _consume(consumer: AIOKafkaConsumer, count: int, within_s: float = 15.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + within_s
    while len(got) < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        got.extend(msg.value for msgs in batches.values() for msg in msgs)
    return got


async def _roundtrip_with_commits(client: dict[str, Any], topic: str, partitions: int) -> None:
    values = [f"m{i}".encode() for i in range(10)]
    await _produce(client, topic, values)

    group = f"{topic}-group"
    consumer = AIOKafkaConsumer(topic, group_id=group, **client, **CONSUMER_DEFAULTS)
    await consumer.start()
    try:
        assert sorted(await _consume(consumer, len(values))) == sorted(values)
        await consumer.commit()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        assert {tp: await consumer.committed(tp) for tp in tps} == ends
    finally:
        await consumer.stop()

    # A new member of the same group resumes after the committed offsets.
    await _produce(client, topic, [b"late"])
    consumer = AIOKafkaConsumer(topic, group_id=group, **client, **CONSUMER_DEFAULTS)
    await consumer.start()
    try:
        assert await _consume(consumer, 1) == [b"late"]
        assert await _consume(consumer, 1, within_s=0.5) == []
    finally:
        await consumer.stop()


@pytest.mark.parametrize("listener", ["plaintext", "sasl_scram_sha_512"])
async def test_idempotent_produce_and_group_consume_with_commits(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, listener: str
) -> None:
    if listener == "plaintext":
        client = kafka_broker.client_kwargs()
    else:
        client = kafka_broker.sasl_client_kwargs()
        assert client["sasl_mechanism"] == "SCRAM-SHA-512"
    topic = kafka_topic_factory(partitions=2)
    await _roundtrip_with_commits(client, topic, partitions=2)


async def test_scram_sha_256_is_enabled_too(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory
) -> None:
    topic = kafka_topic_factory()
    admin = AIOKafkaAdminClient(**kafka_broker.sasl_client_kwargs(mechanism="SCRAM-SHA-256"))
    await admin.start()
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()


async def test_wrong_scram_password_is_refused(
    kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = kafka_broker.sasl_client_kwargs(password=kafka_broker.sasl_password + "x")

    # At the connection level the broker's refusal surfaces as the auth error itself...
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        await create_conn(
            "127.0.0.1",
            kafka_broker.sasl_port,
            security_protocol=wrong["security_protocol"],
            sasl_mechanism=wrong["sasl_mechanism"],
            sasl_plain_username=wrong["sasl_plain_username"],
            sasl_plain_password=wrong["sasl_plain_password"],
        )

    # ...while aiokafka's clients only raise "Unable to bootstrap" and log the auth error.
    caplog.set_level(logging.ERROR, logger="aiokafka")
    producer = AIOKafkaProducer(**wrong)
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert "SaslAuthenticationFailed" in caplog.text


async def test_topic_config_max_message_bytes(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory
) -> None:
    big = kafka_topic_factory(config={"max.message.bytes": str(3 * 1024 * 1024)})
    small = kafka_topic_factory()

    admin = AIOKafkaAdminClient(**kafka_broker.client_kwargs())
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, big)])
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        assert entries["max.message.bytes"] == str(3 * 1024 * 1024)
    finally:
        await admin.close()

    payload = b"x" * (3 * 1024 * 1024 // 2)  # 1.5 MiB: over the broker default (1 MiB)
    client = kafka_broker.client_kwargs()
    await _produce(client, big, [payload], max_request_size=4 * 1024 * 1024)
    with pytest.raises(MessageSizeTooLargeError):
        await _produce(client, small, [payload], max_request_size=4 * 1024 * 1024)

    consumer = AIOKafkaConsumer(big, **client, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assert await _consume(consumer, 1) == [payload]
    finally:
        await consumer.stop()


async def test_restart_keeps_data_and_pause_stalls_the_broker(
    kafka_broker_factory: KafkaBrokerFactory,
) -> None:
    broker = kafka_broker_factory()
    client = broker.client_kwargs()
    await create_topic(broker, "durable", partitions=1)
    await _produce(client, "durable", [b"a", b"b"])

    ports = (broker.bootstrap_servers, broker.sasl_bootstrap_servers)
    broker.kill()  # crash; no aiokafka client is alive, so blocking the loop here is fine
    broker.restart()
    assert (broker.bootstrap_servers, broker.sasl_bootstrap_servers) == ports

    await _produce(broker.sasl_client_kwargs(), "durable", [b"c"])  # SCRAM user survived too
    consumer = AIOKafkaConsumer("durable", **client, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assert await _consume(consumer, 3) == [b"a", b"b", b"c"]
    finally:
        await consumer.stop()

    producer = AIOKafkaProducer(**client, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        broker.pause()
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(producer.send_and_wait("durable", b"stuck"), 2.0)
        finally:
            broker.resume()
        metadata = await asyncio.wait_for(producer.send_and_wait("durable", b"d"), 20.0)
        assert metadata.offset >= 3
    finally:
        await producer.stop()
