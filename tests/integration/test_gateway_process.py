"""``python -m service gateway`` as a real process: start-up, admin port, SIGTERM, logs."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest

from service.config.env import Env
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.examples import example
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import headers_of, read_records
from tests.harness.loopback import free_port
from tests.harness.processes import ServiceProcess, assert_configuration_error

CALLBACK = "/callbacks/extend-music"
ProcessEnv = tuple[dict[str, str], int, int]


@pytest.fixture
async def process_env(kafka_broker: KafkaBroker) -> ProcessEnv:
    """Environment, callback port and admin port for a gateway process; topics exist."""
    http_port, admin_port = free_port(), free_port()
    env = gateway_env(kafka_broker.bootstrap_servers, HTTP_PORT=str(http_port),
                      ADMIN_PORT=str(admin_port), HTTP_HOST="127.0.0.1", ADMIN_HOST="127.0.0.1")
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    return env, http_port, admin_port


@pytest.mark.parametrize(("overrides", "variable"), [
    ({"HTTP_PORT": "eighty"}, "HTTP_PORT"),
    ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "KAFKA_BOOTSTRAP_SERVERS"),
    ({"PUBLISH_TIMEOUT_SECONDS": "30"}, "PUBLISH_TIMEOUT_SECONDS"),
    ({"PROVIDER_TIMEZONE": "Mars/Olympus"}, "PROVIDER_TIMEZONE"),
    ({"KAFKA_ENABLE_IDEMPOTENCE": "perhaps"}, "KAFKA_ENABLE_IDEMPOTENCE"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SASL_PASSWORD_FILE": "/nonexistent/secret"}, "KAFKA_SASL_PASSWORD_FILE"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"EVENT_SOURCE": "/callbacks/extend-music"}, "EVENT_SOURCE"),  # the kind gives the source
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CA_FILE"),
    ({"SPOOL_MAX_BYTES": "1048576"}, "SPOOL_MAX_BYTES"),
    ({"SPOOL_AFTER_SECONDS": "2"}, "SPOOL_AFTER_SECONDS"),  # not below the deadline (2 s)
    ({"SPOOL_DIR": "/dev/null/spool"}, "SPOOL_DIR"),  # cannot be created: found at start-up
])
def test_bad_configuration_fails_fast_naming_the_variable(
    overrides: dict[str, str], variable: str,
) -> None:
    assert_configuration_error(["gateway"], gateway_env("127.0.0.1:9", **overrides), variable,
                               timeout=20)


@pytest.mark.kafka
async def test_admin_port_serves_health_readiness_and_metrics_apart_from_callbacks(
    kafka_broker: KafkaBroker, process_env: ProcessEnv, tmp_path: Path,
) -> None:
    env, http_port, admin_port = process_env
    with ServiceProcess(["gateway"], env, tmp_path) as gateway:
        await asyncio.to_thread(gateway.wait_ready, admin_port)
        async with aiohttp.ClientSession() as session:
            body = orjson.dumps(example("documented-complete.json"))
            async with session.post(f"http://127.0.0.1:{http_port}{CALLBACK}", data=body) as r:
                assert r.status == 200
            async with session.post(f"http://127.0.0.1:{http_port}{CALLBACK}", data=b"{") as r:
                assert r.status == 400
            async with session.get(f"http://127.0.0.1:{admin_port}/healthz") as r:
                assert (r.status, await r.json()) == (200, {"status": "ok"})
            async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as r:
                metrics = await r.text()
            for path in ("/metrics", "/healthz", "/readyz"):
                async with session.get(f"http://127.0.0.1:{http_port}{path}") as r:
                    assert r.status == 404  # never exposed on the public callback port
    assert 'gateway_requests_total{route="/callbacks/extend-music",status="200"} 1.0' in metrics
    assert 'gateway_rejections_total{reason="invalid_json"} 1.0' in metrics
    assert 'gateway_publish_duration_seconds_count{topic="events"} 1.0' in metrics
    assert "gateway_in_flight_requests 0.0" in metrics


@pytest.mark.kafka
async def test_sigterm_under_load_loses_no_acknowledged_callback(
    kafka_broker: KafkaBroker, process_env: ProcessEnv, tmp_path: Path,
) -> None:
    env, http_port, admin_port = process_env
    gateway = ServiceProcess(["gateway"], env, tmp_path).start()
    acknowledged: list[str] = []
    refused = 0
    try:
        await asyncio.to_thread(gateway.wait_ready, admin_port)
        template = example("real-first-partial.json")
        stop_sending = asyncio.Event()

        async def sender(worker: int, session: aiohttp.ClientSession) -> None:
            nonlocal refused
            for sequence in range(10_000):
                if stop_sending.is_set():
                    return
                template["data"]["task_id"] = f"load-{worker}-{sequence}"
                try:
                    async with session.post(f"http://127.0.0.1:{http_port}{CALLBACK}",
                                            data=orjson.dumps(template)) as response:
                        if response.status == 200:
                            acknowledged.append((await response.json())["event_id"])
                        else:
                            assert response.status == 503, response.status
                except aiohttp.ClientError:
                    refused += 1  # the listener is closed: the provider would retry
                    await asyncio.sleep(0.01)

        async with aiohttp.ClientSession() as session:
            senders = [asyncio.create_task(sender(w, session)) for w in range(8)]
            await asyncio.sleep(1.5)
            acknowledged_before = len(acknowledged)
            gateway.signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(gateway.wait, 30)
            stop_sending.set()
            await asyncio.gather(*senders)
    finally:
        gateway.stop()
    assert exit_code == 0, gateway.output()[-3000:]
    assert acknowledged_before > 20, "the load did not get going"
    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"],
                                 expect=len(acknowledged), timeout=30)
    published = {headers_of(record)["ce_id"] for record in records}
    missing = set(acknowledged) - published
    assert not missing, f"{len(missing)} acknowledged callbacks are not on the topic"
    lines = gateway.log_lines()
    assert any(line.get("event") == "shutting_down" for line in lines)


@pytest.mark.kafka
async def test_one_canonical_log_line_per_request_without_payload_contents(
    kafka_broker: KafkaBroker, process_env: ProcessEnv, tmp_path: Path,
) -> None:
    env, http_port, admin_port = process_env
    callback = example("documented-complete.json")
    with ServiceProcess(["gateway"], env, tmp_path) as gateway:
        await asyncio.to_thread(gateway.wait_ready, admin_port)
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{http_port}{CALLBACK}?token=sekrit-query-value"
            async with session.post(url, data=orjson.dumps(callback),
                                    headers={"X-Request-Id": "req-123"}) as response:
                assert response.status == 200
                assert response.headers["X-Request-Id"] == "req-123"
                event_id = (await response.json())["event_id"]
    requests = [line for line in gateway.log_lines() if line.get("event") == "request"]
    assert len(requests) == 1
    line = requests[0]
    assert line["request_id"] == "req-123"
    assert line["task_id"] == "2fac****9f72"
    assert line["event_id"] == event_id
    assert line["stage"] == "complete"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    everything = gateway.output()
    track = callback["data"]["data"][0]
    for secret_or_content in ("sekrit-query-value", track["prompt"], track["audio_url"]):
        assert secret_or_content not in everything
