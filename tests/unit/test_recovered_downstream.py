"""Consumers need no change for recovered events and count a task once: the metrics
consumer when a callback arrives after the reconciler recovered the same stage (or the
reconciler recovers it twice across a restart), the archiver by its keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from service.config.shared import TopicNames
from service.consumers.archiver.plan import plan_event
from service.consumers.metrics.exporter import MusicMetrics
from service.consumers.metrics.processor import MetricsProcessor, StateTables
from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import kind_named
from service.core.model import CallbackEvent, Decoded
from service.core.normalize import decode, normalize, normalize_recovered
from service.core.records import cloudevent_headers
from service.core.recovery import Recovered, recovered_callback
from tests.harness.fake_provider import answer

CODEC = SchemaRegistry.load()
KIND = kind_named("generate-music")
TASK = "task-both-ways"
TOPICS = TopicNames(events="events", archived="archived", archive_failed="failed")


def recovered_and_received() -> tuple[CallbackEvent, CallbackEvent]:
    """The complete stage of one task twice: recovered by polling, and then delivered by
    the provider's late callback carrying the same tracks."""
    result = recovered_callback(KIND, answer("generate-success.json", TASK).body or {}, TASK)
    assert isinstance(result, Recovered)
    recovered = normalize_recovered(
        result.document, kind=KIND, recovered_by="polling",
        received_at=datetime(2026, 1, 1, 10, 0, tzinfo=UTC), schemas=CODEC, provider_tz=UTC)
    body = orjson.dumps(result.document)
    decoded = decode(body, KIND)
    assert isinstance(decoded, Decoded)
    received = normalize(decoded, body, kind=KIND, schemas=CODEC, provider_tz=UTC,
                         received_at=datetime(2026, 1, 1, 10, 5, tzinfo=UTC))
    assert isinstance(recovered, CallbackEvent)
    assert isinstance(received, CallbackEvent)
    return recovered, received


def record(offset: int, event: CallbackEvent) -> ConsumerRecord[bytes, bytes]:
    value = orjson.dumps(event.data)
    headers: list[tuple[str, bytes]] = cloudevent_headers(
        event, dataschema=CODEC.schema_id(EVENT_V1))
    return ConsumerRecord("events", 0, offset, 0, 0, TASK.encode(), value, None, 0, len(value),
                          headers)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_the_metrics_consumer_counts_the_task_once() -> None:
    recovered, received = recovered_and_received()
    assert recovered.event_id != received.event_id
    registry = CollectorRegistry()
    processor = MetricsProcessor(topics=TOPICS, metrics=MusicMetrics(registry),
                                 state=StateTables(ttl_seconds=3600, max_entries=100))
    for offset, event in enumerate((recovered, recovered, received)):  # a restart re-publishes
        await processor.process(record(offset, event))
    labels: dict[str, Any] = {"kind": "generate-music"}
    assert sample(registry, "music_tasks_completed_total", code="200", **labels) == 1
    assert sample(registry, "music_tracks_total", **labels) == 2
    assert sample(registry, "music_duplicate_callbacks_total", stage="complete", **labels) == 1
    assert sample(registry, "music_repeated_stages_total", stage="complete", **labels) == 1


def test_the_archiver_plans_the_same_objects_for_both() -> None:
    """Same keys: whichever comes second finds its objects stored and downloads nothing."""
    recovered, received = recovered_and_received()
    plans = [plan_event(event.data) for event in (recovered, received)]
    keys = [sorted(job.key for job in plan.jobs) for plan in plans if plan is not None]
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert len(keys[0]) == 4  # audio and cover of two tracks
