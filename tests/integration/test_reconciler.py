"""The reconciler against the real broker and a fake provider on loopback: silent tasks
end with the events a callback would have given, a callback that comes while polling is
not duplicated, the budget and the back-off hold with 10,000 open tasks, a restart
rebuilds the state from the topics, and a task with no outcome is given up at the horizon.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from service.config.env import Env
from service.config.reconciler import ReconcilerConfig
from service.consumers.reconciler.main import build_publisher, build_reconciler, provider_session
from service.consumers.reconciler.reconciler import Reconciler
from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import kind_named
from service.core.model import CallbackEvent
from service.core.normalize import normalize_recovered, recovered_event_id
from service.core.recovery import Recovered, recovered_callback
from service.core.timefmt import rfc3339
from service.gateway.app import PUBLISHER_KEY, create_app
from service.kafka.consumer import Record
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.examples import example_bytes
from tests.harness.fake_provider import FakeProvider, Reply, answer, pending, refusal
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import headers_of, read_records
from tests.harness.polling import wait_until

pytestmark = pytest.mark.kafka
CODEC = SchemaRegistry.load()
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider(api_key=secrets.token_urlsafe(24))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def env(kafka_broker: KafkaBroker, provider: FakeProvider) -> dict[str, str]:
    env = gateway_env(
        kafka_broker.bootstrap_servers,
        PROVIDER_API_BASE_URL=provider.base_url, PROVIDER_API_KEY=provider.api_key,
        RECONCILE_AFTER_SECONDS="0", RECONCILE_POLL_INTERVAL_SECONDS="0.3",
        RECONCILE_HORIZON_SECONDS="600", RECONCILE_MAX_REQUESTS_PER_SECOND="200",
        PUBLISH_TIMEOUT_SECONDS="5", SHUTDOWN_TIMEOUT_SECONDS="5")
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    return env


@dataclass
class Running:
    reconciler: Reconciler
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def running(env: dict[str, str]) -> AsyncIterator[Running]:
    """The reconciler in this process, wired as ``python -m service reconciler`` wires it."""
    config = ReconcilerConfig.from_env(Env(env))
    registry = CollectorRegistry()
    publisher = build_publisher(config)
    await publisher.start()
    session = provider_session(config)
    reconciler = build_reconciler(config, registry=registry, session=session,
                                  publisher=publisher)
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop.is_set))
    try:
        await asyncio.wait_for(reconciler.live.wait(), 30)
        yield Running(reconciler, registry)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await session.close()
        await publisher.stop()


async def submit(bootstrap: str, topic: str, *tasks: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for task in tasks:
            await producer.send(topic, orjson.dumps(task), key=task["task_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def task(task_id: str, kind: str, *, ago: float = 1.0, **extra: Any) -> dict[str, Any]:
    submitted = datetime.now(UTC) - timedelta(seconds=ago)
    return {"task_id": task_id, "kind": kind, "submitted_at": rfc3339(submitted), **extra}


def of_task(records: list[Record], task_id: str) -> list[Record]:
    return [record for record in records if record.key == task_id.encode()]


def stages(records: list[Record]) -> list[str]:
    return [orjson.loads(record.value or b"{}")["stage"] for record in records]


async def gateway_client(aiohttp_client: ClientFactory, env: dict[str, str],
                         ) -> TestClient[Any, Any]:
    app = create_app(gateway_config(env), registry=CollectorRegistry())
    client = await aiohttp_client(app)
    assert await app[PUBLISHER_KEY].wait_connected(20), "producer did not connect"
    return client


def expected_event(kind_name: str, example: str, task_id: str) -> CallbackEvent:
    """What the recovered event of ``example`` must be, but for its time."""
    kind = kind_named(kind_name)
    result = recovered_callback(kind, answer(example, task_id).body or {}, task_id)
    assert isinstance(result, Recovered)
    event = normalize_recovered(result.document, kind=kind, recovered_by="polling",
                                received_at=datetime.now(UTC), schemas=CODEC, provider_tz=UTC)
    assert isinstance(event, CallbackEvent)
    return event


async def test_silent_tasks_end_with_the_events_a_callback_would_have_given(
    env: dict[str, str], provider: FakeProvider, kafka_broker: KafkaBroker,
    aiohttp_client: ClientFactory,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    track, wav, midi = (f"{name}-{secrets.token_hex(4)}" for name in ("track", "wav", "midi"))
    # Status transitions over time (one step per request), camelCase answers, and the
    # provider's refusals: 430 in the envelope with HTTP 200, 455 as the HTTP status.
    provider.script(track, pending(track), refusal(430, in_body=True),
                    answer("generate-text-success.json", track), refusal(455),
                    answer("generate-first-success.json", track),
                    answer("generate-success.json", track))
    provider.script(wav, pending(wav), answer("wav-success.json", wav))
    provider.script(midi, answer("midi-generate-failed.json", midi))
    await submit(bootstrap, env["TASKS_TOPIC"], task(track, "extend-music", task_ref="order-7"),
                 task(midi, "midi"))
    gateway = await gateway_client(aiohttp_client, env)
    response = await gateway.post("/tasks", json={"task_id": wav, "kind": "wav"})
    assert (response.status, await response.json()) == (200, {"status": "accepted",
                                                              "task_id": wav})

    async with running(env) as reconciler:
        records = await read_records(bootstrap, env["EVENTS_TOPIC"], expect=5, timeout=30)
        await wait_until(lambda: _async(reconciler.sample("reconciler_open_tasks") == 0))
        asked = len(provider.asked())
        await asyncio.sleep(1.0)  # three poll intervals: nobody is asked about closed tasks
        assert len(provider.asked()) == asked
        closed = {kind: reconciler.sample("reconciler_tasks_closed_total", kind=kind,
                                          by="polling")
                  for kind in ("extend-music", "wav", "midi")}
        assert reconciler.sample("reconciler_provider_errors_total", code="430") == 1
        assert reconciler.sample("reconciler_provider_errors_total", code="455") == 1
        assert reconciler.sample("reconciler_polls_total", outcome="throttled") == 2
        assert reconciler.sample("reconciler_polls_total", outcome="recovered") == 5

    assert closed == {"extend-music": 1, "wav": 1, "midi": 1}
    assert len(records) == 5
    assert stages(of_task(records, track)) == ["text", "first", "complete"]
    assert stages(of_task(records, wav)) == ["complete"]
    assert stages(of_task(records, midi)) == ["error"]
    for record in records:
        headers = headers_of(record)
        event = orjson.loads(record.value or b"{}")
        assert CODEC.errors(EVENT_V1, event) == []
        assert event["recovered_by"] == "polling"
        assert headers["ce_source"] == f"/reconciler/{event['kind']}"
        assert headers["ce_type"] == f"music.callback.{event['kind']}.{event['stage']}"
        assert headers["ce_id"] == event["event_id"] == recovered_event_id(
            event["task_id"], event["stage"], "polling")
        assert "traceparent" in headers
    complete = orjson.loads(of_task(records, track)[-1].value or b"{}")
    expected = expected_event("extend-music", "generate-success.json", track).data
    assert {key: value for key, value in complete.items() if key != "received_at"} == {
        **{key: value for key, value in expected.items() if key != "received_at"},
        "task_ref": "order-7"}
    wav_event = orjson.loads(of_task(records, wav)[0].value or b"{}")
    assert [(f["role"], f["url"]) for f in wav_event["files"]] == [
        ("wav", "https://example.com/s/04e6****e727.wav")]
    midi_event = orjson.loads(of_task(records, midi)[0].value or b"{}")
    assert (midi_event["code"], midi_event["error"]) == (500, "MIDI generation failed")
    # Each kind was asked at its own endpoint, always with the key.
    assert {seen.path for seen in provider.asked(track)} == {"/api/v1/generate/record-info"}
    assert {seen.path for seen in provider.asked(wav)} == {"/api/v1/wav/record-info"}
    assert {seen.path for seen in provider.asked(midi)} == {"/api/v1/midi/record-info"}
    assert all(seen.authorized for seen in provider.asked())


async def test_a_callback_that_arrives_while_polling_is_not_duplicated(
    env: dict[str, str], provider: FakeProvider, kafka_broker: KafkaBroker,
    aiohttp_client: ClientFactory,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    task_id = f"late-{secrets.token_hex(4)}"
    await submit(bootstrap, env["TASKS_TOPIC"], task(task_id, "generate-music"))
    gateway = await gateway_client(aiohttp_client, env)
    async with running(env) as reconciler:
        await wait_until(lambda: _async(len(provider.asked(task_id)) >= 2), timeout=15)
        assert reconciler.sample("reconciler_silent_tasks") == 1
        callback = orjson.loads(example_bytes("generate-music-complete.json"))
        callback["data"]["task_id"] = task_id
        response = await gateway.post("/callbacks/generate-music", json=callback)
        assert response.status == 200
        await wait_until(lambda: _async(reconciler.sample(
            "reconciler_tasks_closed_total", kind="generate-music", by="callback") == 1),
            timeout=15)
        closed_after = len(provider.asked(task_id))
        # The provider now has the outcome too: it must not be published a second time.
        provider.script(task_id, answer("generate-success.json", task_id))
        await asyncio.sleep(1.5)
        assert len(provider.asked(task_id)) <= closed_after + 1  # at most one in flight
        assert reconciler.sample("reconciler_silent_tasks") == 0
        assert reconciler.sample("reconciler_events_published_total", kind="generate-music",
                                 stage="complete") == 0
    records = of_task(await read_records(bootstrap, env["EVENTS_TOPIC"], expect=1), task_id)
    assert [headers_of(record)["ce_source"] for record in records] == [
        "/callbacks/generate-music"]


async def test_budget_and_back_off_hold_with_ten_thousand_open_tasks(
    env: dict[str, str], provider: FakeProvider, kafka_broker: KafkaBroker,
) -> None:
    rate, concurrency = 50, 4
    env |= {"RECONCILE_POLL_INTERVAL_SECONDS": "1", "RECONCILE_MAX_REQUESTS_PER_SECOND":
            str(rate), "RECONCILE_MAX_CONCURRENCY": str(concurrency),
            "RECONCILE_BACKOFF_MAX_SECONDS": "4"}
    ids = [f"bulk-{n:05d}-{secrets.token_hex(2)}" for n in range(10_000)]
    await submit(kafka_broker.bootstrap_servers, env["TASKS_TOPIC"],
                 *(task(task_id, "sounds") for task_id in ids))
    windows: dict[str, tuple[float, float]] = {}

    def refusals(now: float) -> Reply | None:
        """430 during one window, then 429 with Retry-After: 2 during another."""
        for name, reply in (("430", refusal(430, in_body=True)),
                            ("429", refusal(429, retry_after="2"))):
            start, end = windows.get(name, (0.0, 0.0))
            if start <= now < end:
                return reply
        return None

    async with running(env) as reconciler:
        started = time.monotonic()
        assert reconciler.sample("reconciler_open_tasks") == 10_000
        provider.window = refusals
        await asyncio.sleep(3.0)
        windows["430"] = (time.monotonic(), time.monotonic() + 2.0)
        await asyncio.sleep(2.0)
        # The 430s escalated the pause (1, 2, 4 s, jittered): wait for answers again, which
        # reset the escalation, so the 429 below starts from its first strike. (A fixed
        # 1.5 s here let the 429 land inside the escalated pause now and then: no requests
        # in the second checked below, seen under CI load.)
        async def resumed() -> bool:
            return any(seen.at >= windows["430"][1] + 0.5 for seen in provider.asked())

        await wait_until(resumed, timeout=15)
        await asyncio.sleep(0.5)
        # Shorter than its Retry-After (2 s): the requests that resume after the pause find
        # the window closed (a resumed request on the window's last instant would get 429
        # again and pause 2 s more).
        windows["429"] = (time.monotonic(), time.monotonic() + 1.5)
        await asyncio.sleep(4.5)
        elapsed = time.monotonic() - started
        backoff_counted = (reconciler.sample("reconciler_provider_errors_total", code="430"),
                           reconciler.sample("reconciler_provider_errors_total", code="429"))
        silent = reconciler.sample("reconciler_silent_tasks")

    times = [seen.at for seen in provider.asked() if seen.at >= started]
    assert len(times) <= rate * elapsed + rate  # the budget, plus one second's burst

    def between(start: float, end: float) -> int:
        return sum(1 for at in times if start <= at < end)

    steady = between(started + 1.0, windows["430"][0]) / (windows["430"][0] - started - 1.0)
    first_429 = min(at for at in times if at >= windows["429"][0])
    print(f"\n[budget] {len(times)} requests in {elapsed:.1f} s (budget {rate}/s), steady "
          f"{steady:.1f}/s, {between(*windows['430'])} during the 2 s of 430, "
          f"{between(first_429 + 0.05, first_429 + 1.9)} in the 1.85 s after the first 429, "
              f"{between(windows['429'][1] + 1.0, windows['429'][1] + 2.0)} in the second "
              "after the next")
    assert steady >= 0.6 * rate, steady  # the budget was really used before the refusals
    start_430, end_430 = windows["430"]
    during_430 = between(start_430, end_430)
    assert during_430 <= 0.4 * rate * (end_430 - start_430), during_430  # backed off
    # Retry-After: 2 is honoured: nothing but the requests already in flight for ~2 s
    assert between(first_429 + 0.05, first_429 + 1.9) <= concurrency
    assert between(windows["429"][1] + 1.0, windows["429"][1] + 2.0) >= 0.5 * rate  # resumed
    assert backoff_counted[0] >= 1
    assert backoff_counted[1] >= 1
    assert silent == 10_000  # all past RECONCILE_AFTER_SECONDS (0)


async def test_a_restart_rebuilds_the_state_from_the_topics(
    env: dict[str, str], provider: FakeProvider, kafka_broker: KafkaBroker,
    aiohttp_client: ClientFactory,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    recovered, called_back, first_only, silent = (
        f"{name}-{secrets.token_hex(4)}" for name in ("recovered", "called", "first", "silent"))
    provider.script(recovered, answer("generate-success.json", recovered))
    provider.script(first_only, answer("generate-first-success.json", first_only))
    # called_back gets its callback before it is due: it must never be asked about.
    env_first = {**env, "RECONCILE_AFTER_SECONDS": "2"}
    await submit(bootstrap, env["TASKS_TOPIC"], task(recovered, "add-vocals", ago=3),
                 task(first_only, "add-vocals", ago=3), task(called_back, "add-vocals", ago=0))
    gateway = await gateway_client(aiohttp_client, env)
    callback = orjson.loads(example_bytes("add-vocals-complete.json"))
    callback["data"]["task_id"] = called_back
    assert (await gateway.post("/callbacks/add-vocals", json=callback)).status == 200

    async with running(env_first):
        await read_records(bootstrap, env["EVENTS_TOPIC"], expect=3, timeout=20)
    asked_before = {task_id: len(provider.asked(task_id))
                    for task_id in (recovered, called_back, first_only)}
    assert asked_before[called_back] == 0
    # A task submitted while the reconciler is down is picked up by the next one.
    await submit(bootstrap, env["TASKS_TOPIC"], task(silent, "add-vocals", ago=1))

    async with running(env_first) as again:
        assert again.sample("reconciler_open_tasks") == 2  # first_only and silent
        await wait_until(lambda: _async(len(provider.asked(silent)) >= 2
                                         and len(provider.asked(first_only))
                                         >= asked_before[first_only] + 2), timeout=15)
        assert again.sample("reconciler_events_published_total", kind="add-vocals",
                            stage="first") == 0  # the first stage is already on the topic
    assert len(provider.asked(recovered)) == asked_before[recovered]  # closed: not asked again
    assert len(provider.asked(called_back)) == 0
    records = await read_records(bootstrap, env["EVENTS_TOPIC"], expect=3)
    assert stages(of_task(records, recovered)) == ["complete"]
    assert stages(of_task(records, first_only)) == ["first"]
    assert stages(of_task(records, called_back)) == ["complete"]
    assert of_task(records, silent) == []


async def test_a_task_without_an_outcome_is_given_up_at_the_horizon(
    env: dict[str, str], provider: FakeProvider, kafka_broker: KafkaBroker,
) -> None:
    task_id = f"never-{secrets.token_hex(4)}"
    env |= {"RECONCILE_HORIZON_SECONDS": "3"}
    await submit(kafka_broker.bootstrap_servers, env["TASKS_TOPIC"],
                 task(task_id, "lyrics", ago=0.5, task_ref="ref-9"))
    async with running(env) as reconciler:
        records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"],
                                     expect=1, timeout=15)
        asked = len(provider.asked(task_id))
        await asyncio.sleep(1.0)
        assert len(provider.asked(task_id)) == asked
        assert reconciler.sample("reconciler_tasks_closed_total", kind="lyrics",
                                 by="horizon") == 1
    assert asked >= 3
    [record] = records
    event = orjson.loads(record.value or b"{}")
    assert CODEC.errors(EVENT_V1, event) == []
    assert (event["stage"], event["code"], event["message"], event["recovered_by"],
            event["task_ref"]) == ("error", 408, "RECONCILE_HORIZON", "horizon", "ref-9")
    assert event["error"] == ("no outcome within 3 s of submission (the provider last said "
                              "PENDING); the reconciler gave up")
    assert headers_of(record)["ce_source"] == "/reconciler/lyrics"


async def _async(value: bool) -> bool:
    return value
