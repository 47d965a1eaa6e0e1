"""``python -m service metrics`` against the real broker: exact metrics, restarts, trace ids."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.config.env import Env
from service.config.metrics_consumer import MetricsConsumerConfig
from service.consumers.metrics.exporter import MusicMetrics
from service.consumers.metrics.main import MetricsConsumerLoop
from service.consumers.metrics.processor import MetricsProcessor, StateTables
from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import kind_named
from service.core.model import CallbackEvent, Decoded
from service.core.normalize import decode, normalize
from service.core.records import Headers, cloudevent_headers
from service.kafka.consumer import ConsumerMetrics
from service.kafka.topics import ensure_topics, project_topics
from service.observability.tracing import kafka_header, start_or_continue
from service.runtime import ShutdownFlag
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import unique
from tests.harness.loopback import free_port
from tests.harness.polling import wait_until
from tests.harness.processes import ServiceProcess, run_command

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CREATED_MS = int((T0 - timedelta(seconds=10)).timestamp() * 1000)  # every track's createTime
SCHEMAS = SchemaRegistry.load()
KIND = "extend-music"  # the kind every event of this file has

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Message:
    topic: str
    key: bytes
    value: bytes
    headers: Headers = field(default_factory=list)
    event_id: str = ""


def callback(topic: str, task: str, kind: str, *, at: float, code: int = 200,
             durations: Sequence[float] = (), msg: str = "ok",
             traceparent: str | None = None) -> Message:
    """An event exactly as the gateway publishes it, received ``at`` seconds after T0."""
    tracks = [{"id": f"{task}-{n}", "title": "Song", "duration": duration,
               "createTime": CREATED_MS, "audio_url": f"https://cdn.example/{task}-{n}.mp3"}
              for n, duration in enumerate(durations)]
    body = orjson.dumps({"code": code, "msg": msg,
                         "data": {"callbackType": kind, "task_id": task, "data": tracks}})
    extend_music = kind_named("extend-music")
    decoded = decode(body, extend_music)
    assert isinstance(decoded, Decoded), decoded
    event = normalize(decoded, body, kind=extend_music, received_at=T0 + timedelta(seconds=at),
                      schemas=SCHEMAS, provider_tz=UTC)
    assert isinstance(event, CallbackEvent), event
    headers = cloudevent_headers(event, dataschema=SCHEMAS.schema_id(EVENT_V1))
    if traceparent is not None:
        headers.append(kafka_header(traceparent))
    return Message(topic, task.encode(), orjson.dumps(event.data), headers, event.event_id)


def archived(topic: str, task: str, role: str, size: int) -> Message:
    object_id = f"{task}-{role}-object"
    value = {"task_id": task, "track_id": f"{task}-0", "object": role, "kind": "extend-music",
             "uri": f"file:///archive/{object_id}", "size": size, "sha256": "a" * 64,
             "content_type": "audio/mpeg", "source_url": "https://cdn.example/x",
             "source_event_id": "e" * 32, "future_field": [1, 2]}
    return Message(topic, task.encode(), orjson.dumps(value), [
        ("ce_specversion", b"1.0"), ("ce_id", object_id.encode()),
        ("ce_type", b"music.archive.stored"), ("ce_source", b"/archiver")])


def dead_letter(topic: str, task: str, reason: str, report: str) -> Message:
    value = {"task_id": task, "track_id": f"{task}-0", "object": "audio", "url": None,
             "kind": "extend-music",
             "reason": reason, "detail": "…", "attempts": 3, "source_event_id": "e" * 32,
             "topic": "music.callbacks.v1", "partition": 0, "offset": 7,
             "failed_at": "2026-01-01T00:00:00Z"}
    return Message(topic, task.encode(), orjson.dumps(value), [
        ("ce_specversion", b"1.0"), ("ce_id", report.encode()),
        ("ce_type", b"music.archive.failed")])


async def produce(bootstrap: str, messages: list[Message]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for message in messages:  # one by one: the order within each partition is the script
            await producer.send_and_wait(message.topic, message.value, key=message.key,
                                         headers=message.headers)
    finally:
        await producer.stop()


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; an absent counter child is 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scraped(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)


def metrics_env(bootstrap: str, admin_port: int, **topics: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "METRICS_GROUP_ID": unique("metrics"),
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(admin_port),
        "SHUTDOWN_TIMEOUT_SECONDS": "5",
        **topics,
    }


async def wait_for_messages(port: int, count: int, timeout: float = 30.0) -> Samples:
    latest: Samples = {}

    async def processed() -> bool:
        nonlocal latest
        latest = await scraped(port)
        return value(latest, "metrics_messages_total", outcome="ok") >= count

    await wait_until(processed, timeout=timeout, interval=0.1)
    return latest


@pytest.mark.parametrize(("overrides", "variable"), [
    ({"TASK_STATE_MAX_ENTRIES": "0"}, "TASK_STATE_MAX_ENTRIES"),
    ({"TASK_STATE_TTL_SECONDS": "soon"}, "TASK_STATE_TTL_SECONDS"),
    ({"ADMIN_PORT": "99999"}, "ADMIN_PORT"),
    ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "KAFKA_BOOTSTRAP_SERVERS"),
])
def test_bad_configuration_fails_fast_naming_the_variable(
    overrides: dict[str, str], variable: str,
) -> None:
    env = {**metrics_env("127.0.0.1:9", free_port()), **overrides}
    result = run_command(["metrics"], env, timeout=20)
    assert result.returncode == 2
    assert f"configuration error: {variable}:" in result.stderr


@pytest.mark.kafka
async def test_a_scripted_stream_yields_exactly_the_expected_metrics(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any, tmp_path: Path,
) -> None:
    events = kafka_topic_factory(partitions=3)
    stored, failed = kafka_topic_factory(partitions=1), kafka_topic_factory(partitions=2)
    traceparent, trace_id = start_or_continue(None)
    # A: text → first → complete, and the provider re-delivers `first`.
    a_text = callback(events, "task-a", "text", at=0, traceparent=traceparent)
    a_first = callback(events, "task-a", "first", at=20, durations=[100.0])
    a_complete = callback(events, "task-a", "complete", at=65, durations=[100.0, 200.5])
    # B: fails with 531, the error delivered twice.
    b_text = callback(events, "task-b", "text", at=1)
    b_error = callback(events, "task-b", "error", at=6, code=531, msg="refunded")
    # C: complete, then a late `first`.
    c_complete = callback(events, "task-c", "complete", at=100, durations=[60.0])
    c_late_first = callback(events, "task-c", "first", at=101, durations=[60.0])
    # D: two different `complete` bodies (a repeated stage, not a duplicate).
    d_text = callback(events, "task-d", "text", at=2)
    d_complete = callback(events, "task-d", "complete", at=50, durations=[150.0])
    d_again = callback(events, "task-d", "complete", at=52, durations=[150.0], msg="again")
    # E: fails with a code the exporter does not know.
    e_error = callback(events, "task-e", "error", at=3, code=999)
    broken = [Message(events, b"task-x", b"{not json"),
              Message(events, b"task-y", orjson.dumps({"event_id": "f" * 32,
                                                       "task_id": "task-y", "stage": "bogus"}))]
    script = [a_text, b_text, e_error, d_text, a_first, a_first, b_error, b_error, d_complete,
              d_again, a_complete, c_complete, c_late_first, *broken,
              archived(stored, "task-a", "audio", 1000), archived(stored, "task-a", "audio", 1000),
              archived(stored, "task-a", "cover", 50),
              dead_letter(failed, "task-b", "timeout", "dl-1"),
              dead_letter(failed, "task-b", "something-new", "dl-2")]
    await produce(kafka_broker.bootstrap_servers, script)

    admin_port = free_port()
    env = metrics_env(kafka_broker.bootstrap_servers, admin_port, EVENTS_TOPIC=events,
                      ARCHIVED_TOPIC=stored, ARCHIVE_DLQ_TOPIC=failed)
    with ServiceProcess(["metrics"], env, tmp_path) as consumer:
        await asyncio.to_thread(consumer.wait_ready, admin_port)
        m = await wait_for_messages(admin_port, len(script))

    def v(name: str, **labels: str) -> float:
        return value(m, name, **labels)

    assert v("metrics_messages_total", outcome="ok") == len(script)
    counted = {(s, c): v("music_callbacks_total", kind=KIND, stage=s, code=c)
               for s in ("text", "first", "complete", "error") for c in ("200", "531", "other")}
    assert {k: n for k, n in counted.items() if n} == {
        ("text", "200"): 3, ("first", "200"): 2, ("complete", "200"): 4,
        ("error", "531"): 1, ("error", "other"): 1,
    }
    assert [v("music_duplicate_callbacks_total", kind=KIND, stage=s)
            for s in ("text", "first", "complete", "error")] == [0, 1, 0, 1]
    assert v("music_repeated_stages_total", kind=KIND, stage="complete") == 1
    assert [v("music_out_of_order_stages_total", kind=KIND, stage=s)
            for s in ("text", "first", "complete", "error")] == [0, 1, 0, 0]
    assert v("music_tasks_completed_total", kind=KIND, code="200") == 3  # A, C, D once each
    assert v("music_tasks_failed_total", kind=KIND, code="531") == 1
    assert v("music_tasks_failed_total", kind=KIND, code="other") == 1
    assert v("music_tracks_total", kind=KIND) == 4
    assert v("music_track_duration_seconds_count", kind=KIND) == 4
    assert v("music_track_duration_seconds_sum", kind=KIND) == 100.0 + 200.5 + 60.0 + 150.0
    assert v("music_track_duration_seconds_bucket", kind=KIND, le="60.0") == 1
    assert v("music_track_duration_seconds_bucket", kind=KIND, le="120.0") == 2
    assert v("music_track_duration_seconds_bucket", kind=KIND, le="240.0") == 4
    assert v("music_task_phase_seconds_count", kind=KIND, phase="text_to_first") == 1
    assert v("music_task_phase_seconds_sum", kind=KIND, phase="text_to_first") == 20.0
    assert v("music_task_phase_seconds_count", kind=KIND, phase="first_to_complete") == 1
    assert v("music_task_phase_seconds_sum", kind=KIND, phase="first_to_complete") == 45.0
    # createTime is T0-10s: A first 30, A complete 75, D 60 and 62, C 110 and 111.
    assert v("music_callback_delay_seconds_count", kind=KIND) == 6
    assert v("music_callback_delay_seconds_sum", kind=KIND) == 30 + 75 + 60 + 62 + 110 + 111
    assert v("music_callback_delay_seconds_bucket", kind=KIND, le="60.0") == 2
    assert v("music_archived_objects_total", kind=KIND, role="audio") == 1
    assert v("music_archived_objects_total", kind=KIND, role="cover") == 1
    assert v("music_archived_bytes_total", kind=KIND, role="audio") == 1000
    assert v("music_duplicate_archive_reports_total", topic="archived") == 1
    assert v("music_archive_dead_letters_total", kind=KIND, reason="timeout") == 1
    assert v("music_archive_dead_letters_total", kind=KIND, reason="other") == 1
    assert v("music_invalid_records_total", topic="events") == 2
    assert v("music_task_state_entries", table="events") == 5  # A to E; none for bad records
    assert v("music_task_state_entries", table="archive") == 2
    assert v("metrics_consumer_lag", topic=events) == 0

    lines = [line for line in consumer.log_lines() if line.get("event") == "message"]
    assert len(lines) == len(script)
    traced = [line for line in lines if line.get("event_id") == a_text.event_id]
    assert len(traced) == 1
    assert traced[0]["trace_id"] == trace_id
    assert traced[0]["process"] == "metrics"
    assert traced[0]["task_id"] == "task****sk-a"
    assert all("trace_id" not in line for line in lines if line is not traced[0])


@pytest.mark.kafka
async def test_after_a_restart_committed_events_are_not_counted_again(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any, tmp_path: Path,
) -> None:
    events = kafka_topic_factory(partitions=1)
    admin_port = free_port()
    # The archive topics do not exist: the consumer reads the events topic alone.
    env = metrics_env(kafka_broker.bootstrap_servers, admin_port, EVENTS_TOPIC=events,
                      ARCHIVED_TOPIC=unique("absent"), ARCHIVE_DLQ_TOPIC=unique("absent"))
    await produce(kafka_broker.bootstrap_servers, [
        callback(events, "task-a", "text", at=0),
        callback(events, "task-a", "first", at=20, durations=[90.0]),
    ])
    with ServiceProcess(["metrics"], env, tmp_path) as first:
        await asyncio.to_thread(first.wait_ready, admin_port)
        before = await wait_for_messages(admin_port, 2)
        first.signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 30) == 0, first.output()[-3000:]
    assert value(before, "music_callbacks_total", kind=KIND, stage="text", code="200") == 1
    assert value(before, "music_callbacks_total", kind=KIND, stage="first", code="200") == 1
    assert any(line.get("event") == "optional_topics_missing" for line in first.log_lines())

    await produce(kafka_broker.bootstrap_servers, [
        callback(events, "task-a", "complete", at=60, durations=[90.0, 80.0]),
    ])
    with ServiceProcess(["metrics"], env, tmp_path) as second:
        await asyncio.to_thread(second.wait_ready, admin_port)
        after = await wait_for_messages(admin_port, 1)
    # One partition, read in order: had the first two records not been committed, they
    # would have been processed before this one.
    assert value(after, "metrics_messages_total", outcome="ok") == 1
    assert value(after, "music_callbacks_total", kind=KIND, stage="text", code="200") == 0
    assert value(after, "music_callbacks_total", kind=KIND, stage="first", code="200") == 0
    assert value(after, "music_callbacks_total", kind=KIND, stage="complete", code="200") == 1
    assert value(after, "music_tasks_completed_total", kind=KIND, code="200") == 1
    assert value(after, "music_tracks_total", kind=KIND) == 2
    # The per-task state started empty: no first→complete time without the `first` event.
    assert value(after, "music_task_phase_seconds_count", kind=KIND,
                 phase="first_to_complete") == 0


@pytest.mark.kafka
async def test_a_traceparent_sent_to_the_gateway_appears_in_the_metrics_consumer_log(
    kafka_broker: KafkaBroker, tmp_path: Path,
) -> None:
    http_port, gateway_admin, metrics_admin = free_port(), free_port(), free_port()
    env = gateway_env(kafka_broker.bootstrap_servers, HTTP_HOST="127.0.0.1",
                      ADMIN_HOST="127.0.0.1")
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    body = orjson.dumps({"code": 200, "msg": "ok", "data": {
        "callbackType": "text", "task_id": "traced-task-1", "data": []}})
    with ServiceProcess(["gateway"], {**env, "HTTP_PORT": str(http_port),
                                      "ADMIN_PORT": str(gateway_admin)}, tmp_path) as gateway, \
            ServiceProcess(["metrics"], {**env, "ADMIN_PORT": str(metrics_admin),
                                         "METRICS_GROUP_ID": unique("trace")},
                           tmp_path) as consumer:
        await asyncio.to_thread(gateway.wait_ready, gateway_admin)
        await asyncio.to_thread(consumer.wait_ready, metrics_admin)
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{http_port}/callbacks/extend-music", data=body,
            headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01",
                     "content-type": "application/json"},
        ) as response:
            assert response.status == 200, await response.text()
            event_id = (await response.json())["event_id"]
        counted = await wait_for_messages(metrics_admin, 1)
    assert value(counted, "music_callbacks_total", kind=KIND, stage="text", code="200") == 1
    requests = [line for line in gateway.log_lines() if line.get("event") == "request"]
    messages = [line for line in consumer.log_lines() if line.get("event") == "message"]
    assert [line.get("trace_id") for line in requests] == [trace_id]
    assert [(line["event_id"], line["trace_id"]) for line in messages] == [(event_id, trace_id)]


@pytest.mark.kafka
async def test_an_archive_topic_created_later_is_picked_up_without_a_restart(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any,
) -> None:
    events, stored = kafka_topic_factory(partitions=1), unique("test.archived-later")
    env = metrics_env(kafka_broker.bootstrap_servers, free_port(), EVENTS_TOPIC=events,
                      ARCHIVED_TOPIC=stored, ARCHIVE_DLQ_TOPIC=unique("absent"))
    config = MetricsConsumerConfig.from_env(Env(env))
    registry = CollectorRegistry()
    processor = MetricsProcessor(topics=config.topics, metrics=MusicMetrics(registry),
                                 state=StateTables(ttl_seconds=60, max_entries=100))
    shutdown = ShutdownFlag()
    loop = MetricsConsumerLoop(config, processor, ConsumerMetrics(registry, "metrics"), shutdown,
                               recheck_seconds=0.3)
    running = asyncio.create_task(loop.run())

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    async def counted(name: str, **labels: str) -> bool:
        return sample(name, **labels) == 1

    try:
        await produce(kafka_broker.bootstrap_servers, [callback(events, "task-a", "text", at=0)])
        await wait_until(lambda: counted("music_callbacks_total", kind=KIND, stage="text",
                                         code="200"), timeout=20)
        kafka_topic_factory(partitions=1, name=stored)
        await produce(kafka_broker.bootstrap_servers, [archived(stored, "task-a", "audio", 10)])
        await wait_until(lambda: counted("music_archived_objects_total", kind=KIND,
                                         role="audio"), timeout=20)
    finally:
        shutdown.event.set()
        await asyncio.wait_for(running, 20)
    # The events already committed were not read again by the re-subscribed member.
    assert sample("music_callbacks_total", kind=KIND, stage="text", code="200") == 1
    assert sample("metrics_messages_total", outcome="ok") == 2
