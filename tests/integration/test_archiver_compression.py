"""The archiver honours ``KAFKA_COMPRESSION_TYPE``: a real ``python -m service archiver``
writes its records to the real broker in the codec asked for, read back from the broker's
own log segment (the record batch's attributes), and readable by any consumer.

The download it attempts goes to a closed port on 127.0.0.1 (``ARCHIVE_ALLOW_LOOPBACK``),
so the one record it writes is a dead letter; nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.harness.factories import event_value, track_value
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_fixtures import KafkaTopicFactory
from tests.harness.kafka_records import read_records, unique
from tests.harness.loopback import free_port
from tests.harness.processes import ServiceProcess

# Kafka record batch v2: baseOffset int64, batchLength int32, partitionLeaderEpoch int32,
# magic int8, crc uint32, attributes int16 whose low three bits are the codec.
_BATCH_HEADER = struct.Struct(">qiibIh")
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def first_batch_codec(broker: KafkaBroker, topic: str) -> int:
    segment = broker.data_dir / f"{topic}-0" / "00000000000000000000.log"
    *_, magic, _, attributes = _BATCH_HEADER.unpack_from(segment.read_bytes())
    assert magic == 2
    codec: int = attributes & 0x7
    return codec


@pytest.mark.kafka
@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_the_archiver_publishes_with_the_configured_compression(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, tmp_path: Path,
    compression: str,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    events, archived, dead = (kafka_topic_factory(partitions=1) for _ in range(3))
    admin_port, closed_port = free_port(), free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_COMPRESSION_TYPE": compression,
        "EVENTS_TOPIC": events, "ARCHIVED_TOPIC": archived, "ARCHIVE_DLQ_TOPIC": dead,
        "ARCHIVER_GROUP_ID": unique("archiver"), "ARCHIVE_STORAGE_URL": tmp_path.as_uri(),
        "ARCHIVE_ALLOW_LOOPBACK": "true", "ARCHIVE_RETRY_ATTEMPTS": "1",
        "ARCHIVE_CONNECT_TIMEOUT_SECONDS": "1", "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(admin_port),
    }
    document = event_value("task-z", track_value(audio=f"http://127.0.0.1:{closed_port}/a.wav"))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(events, orjson.dumps(document), key=b"task-z",
                                     headers=[("ce_id", document["event_id"].encode())])
    finally:
        await producer.stop()

    with ServiceProcess(["archiver"], env, tmp_path) as archiver:
        await asyncio.to_thread(archiver.wait_ready, admin_port)
        [record] = await read_records(bootstrap, dead, expect=1, timeout=30)
    assert orjson.loads(record.value)["reason"] == "network"
    assert first_batch_codec(kafka_broker, dead) == CODECS[compression]
