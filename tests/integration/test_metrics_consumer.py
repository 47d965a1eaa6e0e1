"""``python -m service metrics`` against the real broker: the scripted stream counted by the
running process, restarts, trace ids, late topics.

What the processor counts for each record is asserted on constructed records in
tests/unit/test_metrics_processor.py; here the same scripted stream goes through the real
broker and the real process.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.config.env import Env
from service.config.metrics_consumer import MetricsConsumerConfig
from service.config.shared import TopicNames
from service.consumers.metrics.exporter import MusicMetrics
from service.consumers.metrics.main import MetricsConsumerLoop
from service.consumers.metrics.processor import MetricsProcessor, StateTables
from service.kafka.consumer import ConsumerMetrics, Record
from service.kafka.topics import ensure_topics, project_topics
from service.observability.tracing import start_or_continue
from service.runtime import ShutdownFlag
from tests.harness.environments import gateway_config, gateway_env, metrics_env
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import produce, unique
from tests.harness.loopback import free_port
from tests.harness.metrics_stream import KIND, archived, callback, scripted_stream
from tests.harness.polling import wait_until
from tests.harness.processes import ServiceProcess, assert_configuration_error

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


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


def music_series(samples: Samples) -> Samples:
    """The music_* samples, without the counters' creation times."""
    return {key: number for key, number in samples.items()
            if key[0].startswith("music_") and not key[0].endswith("_created")}


async def processed_in_order(records: list[Record], topics: TopicNames) -> Samples:
    """The samples of a fresh processor fed ``records`` in the order given."""
    registry = CollectorRegistry()
    processor = MetricsProcessor(topics=topics, metrics=MusicMetrics(registry),
                                 state=StateTables(ttl_seconds=3600, max_entries=100))
    for record in records:
        await processor.process(record)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in registry.collect() for sample in family.samples}


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
    assert_configuration_error(["metrics"], env, variable, timeout=20)


@pytest.mark.kafka
async def test_the_scripted_stream_through_the_broker_is_counted_by_the_process(
    kafka_broker: KafkaBroker, kafka_topic_factory: Any, tmp_path: Path,
) -> None:
    """The three topics are read, each task's records in order (key = task id), the envelope
    survives the broker; the exact counts are asserted in tests/unit/test_metrics_processor.py
    on the same records."""
    events = kafka_topic_factory(partitions=3)
    stored, failed = kafka_topic_factory(partitions=1), kafka_topic_factory(partitions=2)
    traceparent, trace_id = start_or_continue(None)
    stream = scripted_stream(events, stored, failed, traceparent=traceparent)
    script = stream.records
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
    # Every music_* series the process exports is what the processor counts for the same
    # records in one script order: each task's records reached it in order.
    topics = TopicNames(events=events, archived=stored, archive_failed=failed)
    expected = await processed_in_order(script, topics)
    assert music_series(m) == music_series(expected)
    assert music_series(expected)  # the script counts something
    assert v("metrics_consumer_lag", topic=events) == 0

    lines = [line for line in consumer.log_lines() if line.get("event") == "message"]
    assert len(lines) == len(script)
    traced_id = dict(stream.traced.headers)["ce_id"].decode()
    traced = [line for line in lines if line.get("event_id") == traced_id]
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
