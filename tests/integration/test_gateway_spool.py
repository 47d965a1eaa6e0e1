"""The spool against the real broker: 200 through outages, forwarded in order, same records.

The fault suite (tests/fault/) adds process kills and network cuts under load; this
module pins each promise once, quickly, and the operator commands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from service.config.env import Env
from service.core.kinds import kind_named
from service.core.model import Rejection
from service.core.normalize import event_id_for
from service.core.records import rejected_value
from service.gateway.app import DURABLE_KEY, PUBLISHER_KEY, create_app
from service.kafka.topics import ensure_topics, project_topics
from service.observability.tracing import kafka_header
from service.spool.store import segment_paths
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.examples import example
from tests.harness.factories import consumer_record
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import headers_of, produce, read_records
from tests.harness.loopback import free_port
from tests.harness.polling import wait_until
from tests.harness.processes import assert_configuration_error, run_command

pytestmark = pytest.mark.kafka
CALLBACK_PATH = kind_named("extend-music").route
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def callback(task_id: str, stage: str = "complete", prompt: str = "") -> bytes:
    body = example("documented-complete.json")
    body["data"]["task_id"] = task_id
    body["data"]["callbackType"] = stage
    if prompt:
        body["data"]["data"][0]["prompt"] = prompt
    return orjson.dumps(body)


async def start(aiohttp_client: ClientFactory, env: dict[str, str],
                ) -> tuple[TestClient[Any, Any], web.Application, CollectorRegistry]:
    registry = CollectorRegistry()
    app = create_app(gateway_config(env), registry=registry)
    return await aiohttp_client(app), app, registry


async def start_spooling(aiohttp_client: ClientFactory, broker: KafkaBroker, tmp_path: Path,
                         ) -> tuple[dict[str, str], TestClient[Any, Any], web.Application,
                                    CollectorRegistry]:
    """A gateway with a spool that takes over after 0.5 s, connected to ``broker``."""
    env = gateway_env(broker.bootstrap_servers, PUBLISH_TIMEOUT_SECONDS="2",
                      SPOOL_AFTER_SECONDS="0.5", SPOOL_DIR=str(tmp_path / "spool"))
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    client, app, registry = await start(aiohttp_client, env)
    assert await app[PUBLISHER_KEY].wait_connected(20)
    return env, client, app, registry


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


async def test_a_stalled_broker_gets_200_spooled_within_the_deadline_then_the_same_records(
    aiohttp_client: ClientFactory, kafka_broker_factory: Any, tmp_path: Path,
) -> None:
    broker: KafkaBroker = kafka_broker_factory()
    env, client, app, registry = await start_spooling(aiohttp_client, broker, tmp_path)
    first = await client.post(CALLBACK_PATH, data=callback("task-a", "text"))
    assert await first.json() == {"status": "received",
                                  "event_id": event_id_for("task-a", "text",
                                                           callback("task-a", "text"))}
    broker.pause()
    try:
        started = time.monotonic()
        stalled = await asyncio.gather(*(
            client.post(CALLBACK_PATH, data=callback(f"task-{n}")) for n in range(5)))
        assert time.monotonic() - started < 2.0  # the budget (0.5 s), then the fsync
        assert [r.status for r in stalled] == [200] * 5
        answers = [await r.json() for r in stalled]
        assert all(answer["spooled"] is True for answer in answers)
        # While the spool holds records, new ones go behind them at once: arrival order.
        started = time.monotonic()
        ordered = []
        for stage in ("first", "complete"):
            response = await client.post(CALLBACK_PATH, data=callback("task-a", stage))
            ordered.append((await response.json())["event_id"])
        assert time.monotonic() - started < 0.5
        assert await app[DURABLE_KEY].check() is None  # ready: the spool can keep records
        assert metric(registry, "gateway_spool_records") == 7
        assert metric(registry, "gateway_spooled_answers_total", topic="events") == 7
        assert metric(registry, "gateway_spool_oldest_record_age_seconds") > 0
    finally:
        broker.resume()

    async def drained() -> bool:
        return metric(registry, "gateway_spool_records") == 0

    await wait_until(drained, timeout=40)
    assert segment_paths(tmp_path / "spool") == []
    assert metric(registry, "gateway_spool_bytes") == 0
    assert metric(registry, "gateway_spool_forwarded_total") == 7
    records = await read_records(broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=8)
    ids = [headers_of(r)["ce_id"] for r in records]
    expected = {answer["event_id"] for answer in answers} | set(ordered)
    assert expected <= set(ids)
    by_id: dict[str, set[tuple[bytes | None, tuple[tuple[str, bytes], ...]]]] = {}
    for record in records:
        by_id.setdefault(headers_of(record)["ce_id"], set()).add(
            (record.value, tuple(record.headers)))
    assert all(len(copies) == 1 for copies in by_id.values())  # duplicates are identical
    task_a = [headers_of(r)["ce_type"].rsplit(".", 1)[1] for r in records if r.key == b"task-a"]
    assert task_a == ["text", "first", "complete"]  # one task's stages in order
    assert "gateway_spool_forwarded_total 7.0" in generate_latest(registry).decode()


async def test_with_the_broker_down_from_the_start_it_is_ready_spools_and_refuses_when_full(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker, tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    env = gateway_env(f"127.0.0.1:{free_port()}", SPOOL_DIR=str(spool_dir),
                      MAX_BODY_BYTES="262144", SPOOL_MAX_BYTES=str(5 * 1024 * 1024))
    client, app, registry = await start(aiohttp_client, env)
    assert await app[DURABLE_KEY].check() is None
    started = time.monotonic()
    response = await client.post(CALLBACK_PATH, data=callback("down-1"))
    assert (response.status, (await response.json())["spooled"]) == (200, True)
    assert time.monotonic() - started < 0.5  # no waiting for a producer that never connected
    rejected = await client.post(CALLBACK_PATH, data=b'{"code": 200}')
    answer = await rejected.json()
    assert (rejected.status, answer["kept"], answer["spooled"]) == (400, True, True)
    accepted = [(await response.json())["event_id"]]
    big = "x" * 200_000  # about 400 KB per record: the event carries the body twice
    for number in range(40):
        response = await client.post(CALLBACK_PATH, data=callback(f"big-{number}", prompt=big))
        if response.status != 200:
            break
        accepted.append((await response.json())["event_id"])
    assert response.status == 503
    assert (await response.json())["error"] == "spool_full"
    assert int(response.headers["Retry-After"]) >= 1
    assert 5 <= len(accepted) < 40
    assert (await app[DURABLE_KEY].check() or "").endswith("spool_full")  # not ready
    assert metric(registry, "gateway_spool_refused_total", reason="spool_full") == 1
    await client.close()  # the gateway stops; the spool stays on disk

    # An operator drains it into the real cluster: same ids, the rejection kept too.
    drain_env = {**env, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers}
    await ensure_topics(gateway_config(drain_env).kafka, project_topics(Env(drain_env)))
    inspected = run_command(["spool", "inspect"], drain_env)
    assert inspected.returncode == 0, inspected.stderr
    assert f"{len(accepted) + 1} records" in inspected.stdout
    assert "not in use" in inspected.stdout
    drained = run_command(["spool", "drain"], drain_env, timeout=90)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert f"drained: {len(accepted) + 1} records forwarded" in drained.stdout
    assert segment_paths(spool_dir) == []
    events = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"],
                                expect=len(accepted), fetch_max_bytes=64 * 1024 * 1024,
                                max_partition_fetch_bytes=16 * 1024 * 1024)
    assert sorted(headers_of(r)["ce_id"] for r in events) == sorted(accepted)
    kept = await read_records(kafka_broker.bootstrap_servers, env["REJECTED_TOPIC"], expect=1)
    assert kept[0].value is not None
    assert orjson.loads(kept[0].value)["reason"] == "schema_violation"


async def test_drain_refuses_a_spool_a_gateway_is_using(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    env = gateway_env(f"127.0.0.1:{free_port()}", SPOOL_DIR=str(tmp_path / "spool"))
    client, _, _ = await start(aiohttp_client, env)
    assert (await client.post(CALLBACK_PATH, data=callback("held"))).status == 200
    result = assert_configuration_error(["spool", "drain"], env, "SPOOL_DIR")
    assert "in use by another process" in result.stderr
    inspected = run_command(["spool", "inspect", "--records"], env)
    assert "in use by pid" in inspected.stdout
    assert "key=held" in inspected.stdout


async def test_replay_publishes_fixed_bodies_with_the_first_delivery_event_id(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker,
) -> None:
    env = gateway_env(kafka_broker.bootstrap_servers, TOPIC_PARTITIONS="1")
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    client, app, _ = await start(aiohttp_client, env)
    assert await app[PUBLISHER_KEY].wait_connected(20)
    # A body an older gateway rejected (say, before a variant was understood) ...
    fixed = callback("replayed-task", "first")
    value = rejected_value(Rejection("schema_violation", task_id="replayed-task"), fixed,
                           received_at=_moment("2025-03-01T10:00:00Z"),
                           content_type="application/json", kind="extend-music")
    del value["kind"]  # kept before kinds existed: the route in ``source`` names the kind
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    await produce(kafka_broker.bootstrap_servers, [consumer_record(
        env["REJECTED_TOPIC"], value, key=b"replayed-task", headers=[kafka_header(traceparent)])])
    # ... and one the current gateway still rejects.
    assert (await client.post(CALLBACK_PATH, data=b'{"code": 200}')).status == 400
    await client.close()

    dry = run_command(["replay", "--dry-run"], env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert [orjson.loads(line).get("outcome") for line in dry.stdout.splitlines()] == [
        "would_publish", "still_rejected", None]
    only_first = run_command(["replay", "--from-offset", "0", "--to-offset", "0"], env,
                             timeout=60)
    lines = [orjson.loads(line) for line in only_first.stdout.splitlines()]
    assert only_first.returncode == 0, only_first.stderr
    assert lines[0] == {"partition": 0, "offset": 0, "outcome": "published",
                        "event_id": event_id_for("replayed-task", "first", fixed)}
    assert lines[-1]["summary"] == {"published": 1}
    future = run_command(["replay", "--since", "2999-01-01T00:00:00Z"], env, timeout=60)
    assert orjson.loads(future.stdout.splitlines()[-1])["summary"] == {}

    events = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=1)
    assert len(events) == 1
    headers = headers_of(events[0])
    # the same bytes a first delivery would have published under the same id
    assert headers["ce_id"] == event_id_for("replayed-task", "first", fixed)
    assert headers["ce_time"] == "2025-03-01T10:00:00Z"
    assert headers["traceparent"].split("-")[1] == "a" * 32
    assert events[0].value is not None
    event = orjson.loads(events[0].value)
    assert event["raw"] == orjson.loads(fixed)
    assert event["received_at"] == "2025-03-01T10:00:00Z"
    kept = await read_records(kafka_broker.bootstrap_servers, env["REJECTED_TOPIC"], expect=2)
    assert len(kept) == 2  # nothing written back without --republish-rejected


def _moment(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


async def test_a_task_submitted_while_the_broker_is_stalled_is_spooled_then_forwarded(
    aiohttp_client: ClientFactory, kafka_broker_factory: Any, tmp_path: Path,
) -> None:
    """``POST /tasks`` goes the callbacks' way: the spool keeps what the broker cannot."""
    broker: KafkaBroker = kafka_broker_factory()
    env, client, _, registry = await start_spooling(aiohttp_client, broker, tmp_path)
    broker.pause()
    try:
        response = await client.post("/tasks", json={"task_id": "stalled-task", "kind": "wav"})
        assert (response.status, await response.json()) == (
            200, {"status": "accepted", "task_id": "stalled-task", "spooled": True})
        assert metric(registry, "gateway_spooled_answers_total", topic="tasks") == 1
    finally:
        broker.resume()
    records = await read_records(broker.bootstrap_servers, env["TASKS_TOPIC"], expect=1)
    # The producer may still deliver its own copy late: a duplicate, byte for byte.
    assert {(r.key, r.value, tuple(r.headers)) for r in records} == {
        (records[0].key, records[0].value, tuple(records[0].headers))}
    assert (records[0].key, orjson.loads(records[0].value or b"{}")["kind"]) == (
        b"stalled-task", "wav")
    assert headers_of(records[0])["ce_type"] == "music.task.submitted"
