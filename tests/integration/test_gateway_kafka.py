"""The gateway against the real Kafka broker: every promise of the ingress issue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from service.config.env import Env
from service.contracts.registry import EVENT_V1, REJECTED_V1, SchemaRegistry
from service.core.kinds import kind_named
from service.core.normalize import event_id_for
from service.core.records import body_from_rejected
from service.gateway.app import PUBLISHER_KEY, create_app
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.examples import example_bytes
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import headers_of, read_records
from tests.harness.loopback import free_port

pytestmark = pytest.mark.kafka
SCHEMAS = SchemaRegistry.load()
CALLBACK_PATH = kind_named("extend-music").route
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def env(kafka_broker: KafkaBroker) -> dict[str, str]:
    env = gateway_env(kafka_broker.bootstrap_servers)
    config = gateway_config(env)
    await ensure_topics(config.kafka, project_topics(Env(env)))
    return env


async def start_gateway(aiohttp_client: ClientFactory, env: dict[str, str]) -> TestClient[Any, Any]:
    app = create_app(gateway_config(env))
    client = await aiohttp_client(app)
    assert await app[PUBLISHER_KEY].wait_connected(20), "producer did not connect"
    return client


@pytest.fixture
async def gateway(aiohttp_client: ClientFactory, env: dict[str, str]) -> TestClient[Any, Any]:
    return await start_gateway(aiohttp_client, env)


async def test_documented_example_becomes_exactly_one_event(
    gateway: TestClient[Any, Any], env: dict[str, str], kafka_broker: KafkaBroker,
) -> None:
    body = example_bytes("documented-complete.json")
    response = await gateway.post(CALLBACK_PATH, data=body,
                                  headers={"Content-Type": "application/json"})
    assert response.status == 200
    answer = await response.json()
    expected_id = event_id_for("2fac****9f72", "complete", body)
    assert answer == {"status": "received", "event_id": expected_id}

    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=1)
    assert len(records) == 1
    record = records[0]
    assert record.key == b"2fac****9f72"
    headers = headers_of(record)
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == expected_id
    assert headers["ce_source"] == "/callbacks/extend-music"
    assert headers["ce_type"] == "music.callback.extend-music.complete"
    assert headers["ce_subject"] == "2fac****9f72"
    assert headers["ce_dataschema"] == SCHEMAS.schema_id(EVENT_V1)
    assert headers["content-type"] == "application/json"
    assert headers["ce_time"].endswith("Z")
    assert record.value is not None
    event = orjson.loads(record.value)
    assert SCHEMAS.errors(EVENT_V1, event) == []
    assert event["event_id"] == expected_id
    assert event["received_at"] == headers["ce_time"]
    assert event["tracks"][0]["tags"] == ["electrifying", "rock"]
    assert event["raw"] == orjson.loads(body)


async def test_duplicate_delivery_yields_the_same_event_id(
    gateway: TestClient[Any, Any], env: dict[str, str], kafka_broker: KafkaBroker,
) -> None:
    body = example_bytes("real-first-partial.json")
    ids = []
    for _ in range(2):
        response = await gateway.post(CALLBACK_PATH, data=body)
        assert response.status == 200
        ids.append((await response.json())["event_id"])
    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=2)
    assert ids[0] == ids[1]
    assert [headers_of(r)["ce_id"] for r in records] == ids
    assert len({r.partition for r in records}) == 1  # same key, same partition, same order


async def test_invalid_body_lands_on_the_rejected_topic_before_the_400(
    gateway: TestClient[Any, Any], env: dict[str, str], kafka_broker: KafkaBroker,
) -> None:
    body = orjson.dumps({"code": "200", "data": {"callbackType": "complete", "task_id": "t-77",
                                                 "data": [{"duration": "long"}]}})
    response = await gateway.post(CALLBACK_PATH, data=body,
                                  headers={"Content-Type": "application/json"})
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "schema_violation"
    assert answer["kept"] is True
    assert {e["path"] for e in answer["errors"]} == {"/code", "/data/data/0/duration"}

    records = await read_records(kafka_broker.bootstrap_servers, env["REJECTED_TOPIC"], expect=1)
    assert len(records) == 1
    assert records[0].key == b"t-77"
    assert records[0].value is not None
    value = orjson.loads(records[0].value)
    assert SCHEMAS.errors(REJECTED_V1, value) == []
    assert value["reason"] == "schema_violation"
    assert value["content_type"] == "application/json"
    assert body_from_rejected(value) == body
    assert await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=0) == []


async def test_non_utf8_body_is_kept_as_base64_without_a_key(
    gateway: TestClient[Any, Any], env: dict[str, str], kafka_broker: KafkaBroker,
) -> None:
    body = b'{"code": \xff}'
    response = await gateway.post(CALLBACK_PATH, data=body)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_utf8"
    records = await read_records(kafka_broker.bootstrap_servers, env["REJECTED_TOPIC"], expect=1)
    assert records[0].key is None
    assert records[0].value is not None
    value = orjson.loads(records[0].value)
    assert value["encoding"] == "base64"
    assert body_from_rejected(value) == body


async def test_a_body_at_the_size_limit_travels_end_to_end(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker,
) -> None:
    """Producer max_request_size and topic max.message.bytes fit the largest accepted body."""
    limit = 300 * 1024  # above Kafka's 1 MiB default once the body is carried twice, escaped
    env = gateway_env(kafka_broker.bootstrap_servers, MAX_BODY_BYTES=str(limit),
                      KAFKA_COMPRESSION_TYPE="none")
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    client = await start_gateway(aiohttp_client, env)
    skeleton = orjson.dumps({"code": 200, "msg": "ok", "data": {
        "callbackType": "complete", "task_id": "big", "data": [{"id": "x", "prompt": ""}]}})
    # '\n' is escaped to two bytes in the event, so this is the worst case for its size
    padding = limit - len(skeleton)
    body = skeleton.replace(b'"prompt":""', b'"prompt":"' + b"\\n" * (padding // 2) + b'"')
    body = body + b" " * (limit - len(body))
    assert len(body) == limit
    response = await client.post(CALLBACK_PATH, data=body)
    assert response.status == 200, await response.text()
    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=1,
                                 fetch_max_bytes=64 * 1024 * 1024,
                                 max_partition_fetch_bytes=16 * 1024 * 1024)
    assert len(records) == 1
    assert records[0].value is not None
    assert len(records[0].value) > 1024 * 1024 // 2

    response = await client.post(CALLBACK_PATH, data=body + b" ")
    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"


async def test_errors_are_json_with_a_machine_readable_reason(
    gateway: TestClient[Any, Any],
) -> None:
    not_found = await gateway.post("/nowhere", data=b"{}")
    assert (not_found.status, (await not_found.json())["error"]) == (404, "not_found")
    wrong_method = await gateway.get(CALLBACK_PATH)
    assert wrong_method.status == 405
    assert (await wrong_method.json())["error"] == "method_not_allowed"
    assert "POST" in wrong_method.headers["Allow"]
    too_big = await gateway.post(CALLBACK_PATH, data=b" " * (256 * 1024 + 1))
    assert (too_big.status, (await too_big.json())["error"]) == (413, "body_too_large")
    for response in (not_found, wrong_method, too_big):
        assert response.content_type == "application/json"
        assert response.headers["X-Request-Id"]


async def test_unreachable_broker_answers_503_with_retry_after_never_200(
    aiohttp_client: ClientFactory,
) -> None:
    env = gateway_env(f"127.0.0.1:{free_port()}")
    client = await aiohttp_client(create_app(gateway_config(env)))
    started = time.monotonic()
    response = await client.post(CALLBACK_PATH, data=example_bytes("documented-complete.json"))
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"] == "broker_unavailable"
    assert time.monotonic() - started < 2.5


async def test_stalled_broker_answers_503_within_the_publish_deadline(
    aiohttp_client: ClientFactory, kafka_broker_factory: Any,
) -> None:
    broker: KafkaBroker = kafka_broker_factory()
    env = gateway_env(broker.bootstrap_servers, PUBLISH_TIMEOUT_SECONDS="1.5")
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    client = await start_gateway(aiohttp_client, env)
    body = example_bytes("documented-complete.json")
    assert (await client.post(CALLBACK_PATH, data=body)).status == 200
    broker.pause()
    try:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.post(CALLBACK_PATH, data=body)
                                           for _ in range(5)))
        elapsed = time.monotonic() - started
        assert [r.status for r in responses] == [503] * 5
        assert all(r.headers["Retry-After"] == "2" for r in responses)
        assert {(await r.json())["error"] for r in responses} == {"publish_timeout"}
        assert elapsed < 1.5 + 1.5
    finally:
        broker.resume()
    async def recovered() -> bool:
        return (await client.post(CALLBACK_PATH, data=body)).status == 200
    deadline = time.monotonic() + 30
    while not await recovered():
        assert time.monotonic() < deadline, "gateway did not recover after the broker resumed"
        await asyncio.sleep(0.5)


async def test_sasl_scram_connection_publishes(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker,
) -> None:
    env = gateway_env(
        kafka_broker.sasl_bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM=kafka_broker.sasl_mechanism,
        KAFKA_SASL_USERNAME=kafka_broker.sasl_username,
        KAFKA_SASL_PASSWORD=kafka_broker.sasl_password,
    )
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    client = await start_gateway(aiohttp_client, env)
    response = await client.post(CALLBACK_PATH, data=example_bytes("real-text.json"))
    assert response.status == 200
    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=1)
    assert headers_of(records[0])["ce_type"] == "music.callback.extend-music.text"


async def test_topics_ensure_creates_missing_topics_once_with_size_limits(
    kafka_broker: KafkaBroker,
) -> None:
    env = gateway_env(kafka_broker.bootstrap_servers, MAX_BODY_BYTES="524288")
    config = gateway_config(env)
    specs = project_topics(Env(env))
    assert sorted(await ensure_topics(config.kafka, specs)) == sorted(s.name for s in specs)
    assert await ensure_topics(config.kafka, specs) == []  # existing topics are fine
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, env["EVENTS_TOPIC"])])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in described[0].resources[0][4]}
    assert int(entries["max.message.bytes"]) >= 4 * 524288


def test_the_app_factory_does_no_io_until_started() -> None:
    """create_app only builds objects: no connection is attempted before the app starts."""
    app = create_app(gateway_config(gateway_env(f"127.0.0.1:{free_port()}")))
    assert isinstance(app, web.Application)
    assert not app[PUBLISHER_KEY].connected


async def test_trace_context_is_continued_or_started_and_travels_as_a_kafka_header(
    gateway: TestClient[Any, Any], env: dict[str, str], kafka_broker: KafkaBroker,
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = f"00-{trace_id}-00f067aa0ba902b7-01"
    body = example_bytes("real-text.json")
    assert (await gateway.post(CALLBACK_PATH, data=body,
                               headers={"traceparent": incoming})).status == 200
    assert (await gateway.post(CALLBACK_PATH, data=body)).status == 200
    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=2)
    continued, started = (headers_of(r)["traceparent"] for r in records)
    assert continued.split("-")[1] == trace_id
    assert continued != incoming  # the gateway's own hop is the parent now
    assert len(started.split("-")[1]) == 32
    assert started.split("-")[1] != trace_id
