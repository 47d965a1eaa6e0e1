"""``python -m service reconciler`` as a process: it starts, rebuilds, polls, recovers,
stops cleanly on SIGTERM, refuses bad configuration naming the variable, and never
writes the provider's API key to its logs, at DEBUG either, whatever the provider does."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from service.config.env import Env
from service.core.timefmt import rfc3339
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.fake_provider import FakeProvider, Reply, answer, refusal
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import read_records
from tests.harness.loopback import free_port
from tests.harness.processes import ServiceProcess, run_command

pytestmark = pytest.mark.kafka


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider(api_key=f"sk-live-{secrets.token_hex(20)}")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_the_process_recovers_stops_cleanly_and_never_logs_the_key(
    kafka_broker: KafkaBroker, provider: FakeProvider, tmp_path: Path,
) -> None:
    admin_port = free_port()
    key_file = tmp_path / "provider-key"
    key_file.write_text(provider.api_key + "\n")
    env = gateway_env(kafka_broker.bootstrap_servers, ADMIN_PORT=str(admin_port),
                      ADMIN_HOST="127.0.0.1", LOG_LEVEL="DEBUG",
                      PROVIDER_API_BASE_URL=provider.base_url,
                      PROVIDER_API_KEY_FILE=str(key_file), RECONCILE_AFTER_SECONDS="0",
                      RECONCILE_POLL_INTERVAL_SECONDS="0.2",
                      RECONCILE_MAX_REQUESTS_PER_SECOND="100")
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    # Every path a request can take: pending, refused in the body and as the status,
    # a provider failure, a cut connection, an unreadable answer, then the outcome.
    tasks = {name: f"{name}-{secrets.token_hex(3)}" for name in ("rough", "smooth")}
    provider.script(tasks["rough"], answer("generate-pending.json", tasks["rough"]),
                    refusal(430, in_body=True), refusal(455), refusal(500),
                    # aiohttp sends a request again once when a kept-alive connection drops
                    Reply(None), Reply(None), Reply({"code": 200, "data": "not an object"}),
                    answer("cover-success.json", tasks["rough"]))
    provider.script(tasks["smooth"], answer("mp4-success.json", tasks["smooth"]))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    await producer.start()
    try:
        for kind, name in (("cover-image", "rough"), ("music-video", "smooth")):
            value = {"task_id": tasks[name], "kind": kind,
                     "submitted_at": rfc3339(datetime.now(UTC))}
            await producer.send_and_wait(env["TASKS_TOPIC"], orjson.dumps(value),
                                         key=tasks[name].encode())
    finally:
        await producer.stop()

    with ServiceProcess(["reconciler"], env, tmp_path) as reconciler:
        await asyncio.to_thread(reconciler.wait_ready, admin_port)
        records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"],
                                     expect=2, timeout=30)
        reconciler.signal(signal.SIGTERM)
        assert await asyncio.to_thread(reconciler.wait, 30) == 0
        output = reconciler.output()

    assert sorted(orjson.loads(record.value or b"{}")["kind"] for record in records) == [
        "cover-image", "music-video"]
    assert all(seen.authorized for seen in provider.asked())
    outcomes = {line.get("outcome") for line in reconciler.log_lines()
                if line.get("event") == "poll"}
    assert {"pending", "throttled", "provider_error", "network", "unreadable",
            "recovered"} <= outcomes
    assert any(line.get("level") == "debug" for line in reconciler.log_lines())
    assert provider.api_key not in output
    assert provider.api_key[8:24] not in output  # not even a piece of it
    assert "Bearer" not in output


def test_bad_configuration_stops_start_up_naming_the_variable() -> None:
    env = gateway_env("127.0.0.1:9", PROVIDER_API_BASE_URL="http://127.0.0.1:9")
    result = run_command(["reconciler"], env, timeout=20)
    assert result.returncode == 2
    assert "configuration error: PROVIDER_API_KEY" in result.stderr
    env["PROVIDER_API_KEY"] = "some-key-value"
    env["RECONCILE_HORIZON_SECONDS"] = "60"
    env["RECONCILE_AFTER_SECONDS"] = "600"
    result = run_command(["reconciler"], env, timeout=20)
    assert result.returncode == 2
    assert "configuration error: RECONCILE_AFTER_SECONDS" in result.stderr
    assert "some-key-value" not in result.stderr + result.stdout
