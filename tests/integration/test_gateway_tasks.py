"""``POST /tasks`` on the gateway against the real broker: verified like a callback,
validated, on the tasks topic once the broker has it, refused without a trace otherwise."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from service.config.env import Env
from service.contracts.registry import TASKS_V1, SchemaRegistry
from service.core.timefmt import epoch_seconds
from service.gateway.app import PUBLISHER_KEY, create_app
from service.gateway.security import sign_callback_url
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import headers_of, read_records
from tests.harness.loopback import free_port

pytestmark = pytest.mark.kafka
CODEC = SchemaRegistry.load()
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
TOKEN = secrets.token_urlsafe(24)


async def start(aiohttp_client: ClientFactory, env: dict[str, str]) -> TestClient[Any, Any]:
    app = create_app(gateway_config(env), registry=CollectorRegistry())
    client = await aiohttp_client(app)
    assert await app[PUBLISHER_KEY].wait_connected(20), "producer did not connect"
    return client


@pytest.fixture
async def env(kafka_broker: KafkaBroker) -> dict[str, str]:
    env = gateway_env(kafka_broker.bootstrap_servers, AUTH_MODE="verify", CALLBACK_TOKENS=TOKEN)
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    return env


async def test_a_verified_task_is_on_the_tasks_topic_once_acknowledged(
    aiohttp_client: ClientFactory, env: dict[str, str], kafka_broker: KafkaBroker,
) -> None:
    gateway = await start(aiohttp_client, env)
    before = time.time()
    response = await gateway.post(f"/tasks?token={TOKEN}", json={
        "task_id": "5c79be8e", "kind": "extend-music", "task_ref": "order-1",
        "unknown": "dropped"}, headers={"traceparent":
                                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert (response.status, await response.json()) == (
        200, {"status": "accepted", "task_id": "5c79be8e"})
    explicit = {"task_id": "988ec8d3", "kind": "wav", "submitted_at": "2026-11-25T10:00:00Z"}
    assert (await gateway.post(f"/tasks?token={TOKEN}", json=explicit)).status == 200
    records = sorted(await read_records(kafka_broker.bootstrap_servers, env["TASKS_TOPIC"],
                                        expect=2), key=lambda record: record.key or b"")
    assert len(records) == 2
    first, second = (orjson.loads(record.value or b"{}") for record in records)  # by key
    assert CODEC.errors(TASKS_V1, first) == []
    assert set(first) == {"task_id", "kind", "submitted_at", "task_ref"}
    assert (first["task_id"], first["kind"], first["task_ref"]) == ("5c79be8e", "extend-music",
                                                                    "order-1")
    submitted_at = epoch_seconds(first["submitted_at"])
    assert submitted_at is not None
    assert before - 1 <= submitted_at <= time.time() + 1
    assert second == explicit
    headers = headers_of(records[0])
    assert records[0].key == b"5c79be8e"
    assert (headers["ce_type"], headers["ce_source"], headers["ce_subject"],
            headers["ce_dataschema"]) == ("music.task.submitted", "/tasks", "5c79be8e",
                                          CODEC.schema_id(TASKS_V1))
    assert headers["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(("body", "error"), [
    (b"{", "invalid_json"), (b"[1]", "not_an_object"),
    (b'{"kind": "wav"}', "schema_violation"),
    (b'{"task_id": "t", "kind": "opera"}', "schema_violation"),
    (b'{"task_id": "t", "kind": "wav", "submitted_at": "yesterday"}', "schema_violation"),
    (b'{"task_id": "  ", "kind": "wav"}', "schema_violation"),
])
async def test_a_body_that_is_no_task_is_refused_and_not_published(
    aiohttp_client: ClientFactory, env: dict[str, str], kafka_broker: KafkaBroker,
    body: bytes, error: str,
) -> None:
    gateway = await start(aiohttp_client, env)
    response = await gateway.post(f"/tasks?token={TOKEN}", data=body)
    answer = await response.json()
    assert (response.status, answer["error"]) == (400, error)
    assert answer["errors"]
    assert await read_records(kafka_broker.bootstrap_servers, env["TASKS_TOPIC"], expect=0,
                              timeout=1) == []


async def test_tasks_are_verified_like_callbacks(
    aiohttp_client: ClientFactory, env: dict[str, str], kafka_broker: KafkaBroker,
) -> None:
    gateway = await start(aiohttp_client, env)
    task = {"task_id": "t1", "kind": "lyrics"}
    with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]) as logs:
        for query in ("", "?token=wrong-token-of-some-length"):
            response = await gateway.post(f"/tasks{query}", json=task, headers={
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
            assert response.status == 401
    # A refused request's line still carries the caller's trace, to find it by.
    refused = [line for line in logs if line["event"] == "request"]
    assert [line["status"] for line in refused] == [401, 401]
    assert {line["trace_id"] for line in refused} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    assert await read_records(kafka_broker.bootstrap_servers, env["TASKS_TOPIC"], expect=0,
                              timeout=1) == []


async def test_the_reference_of_a_signed_url_becomes_the_task_ref(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker,
) -> None:
    key = secrets.token_urlsafe(32)
    env = gateway_env(kafka_broker.bootstrap_servers, AUTH_MODE="verify",
                      CALLBACK_URL_SIGNING_KEY=key)
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    gateway = await start(aiohttp_client, env)
    signed = sign_callback_url("http://127.0.0.1/tasks", "order-77", key)
    response = await gateway.post(signed[signed.index("/tasks"):], json={
        "task_id": "t-signed", "kind": "midi"})
    assert response.status == 200
    [record] = await read_records(kafka_broker.bootstrap_servers, env["TASKS_TOPIC"], expect=1)
    assert orjson.loads(record.value or b"{}")["task_ref"] == "order-77"


async def test_an_unreachable_broker_answers_503_with_retry_after(
    aiohttp_client: ClientFactory,
) -> None:
    env = gateway_env(f"127.0.0.1:{free_port()}")
    client = await aiohttp_client(create_app(gateway_config(env), registry=CollectorRegistry()))
    response = await client.post("/tasks", json={"task_id": "t", "kind": "wav"})
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    assert (await response.json())["error"] == "broker_unavailable"
