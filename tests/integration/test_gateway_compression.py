"""Every ``KAFKA_COMPRESSION_TYPE`` works end to end: a gateway process, the real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from service.config.env import Env
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.examples import example
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import read_records
from tests.harness.loopback import free_port
from tests.harness.processes import ServiceProcess


@pytest.mark.kafka
@pytest.mark.parametrize("compression", ["zstd", "lz4", "snappy"])
async def test_a_gateway_compressing_with_a_codec_publishes_readable_events(
    kafka_broker: KafkaBroker, tmp_path: Path, compression: str,
) -> None:
    http_port, admin_port = free_port(), free_port()
    env = gateway_env(kafka_broker.bootstrap_servers, HTTP_PORT=str(http_port),
                      ADMIN_PORT=str(admin_port), HTTP_HOST="127.0.0.1", ADMIN_HOST="127.0.0.1",
                      KAFKA_COMPRESSION_TYPE=compression)
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    callback = example("documented-complete.json")
    with ServiceProcess(["gateway"], env, tmp_path) as gateway:
        await asyncio.to_thread(gateway.wait_ready, admin_port)
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{http_port}/callbacks/extend-music", data=orjson.dumps(callback),
        ) as response:
            assert response.status == 200
            event_id = (await response.json())["event_id"]
    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=1)
    assert [orjson.loads(record.value)["event_id"] for record in records] == [event_id]
    assert orjson.loads(records[0].value)["raw"] == callback
