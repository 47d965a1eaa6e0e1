"""The metrics processor on constructed records: every series labelled by a closed ``kind``.

The processor is pure (a record in, counters updated), so it is driven directly here;
tests/integration/test_metrics_consumer.py runs the same code against the real broker.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from service.config.shared import TopicNames
from service.consumers.metrics.exporter import KIND_LABELS, MusicMetrics
from service.consumers.metrics.processor import MetricsProcessor, StateTables
from service.core.kinds import KIND_NAMES
from tests.harness.factories import event_value, file_value, track_value

TOPICS = TopicNames(events="events", archived="archived", archive_failed="failed")


class Rig:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.processor = MetricsProcessor(topics=TOPICS, metrics=MusicMetrics(self.registry),
                                          state=StateTables(ttl_seconds=3600, max_entries=100))
        self.offset = 0

    async def feed(self, topic: str, value: dict[str, Any],
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        self.offset += 1
        body = orjson.dumps(value)
        record = ConsumerRecord(topic, 0, self.offset, 0, 0, b"k", body, None, 0, len(body),
                                headers or [])
        await self.processor.process(record)

    async def event(self, task_id: str, stage: str, *, kind: str | None, at: str,
                    code: int = 200, tracks: list[dict[str, Any]] | None = None,
                    ce_type: str | None = None, event_id: str | None = None) -> None:
        value = event_value(task_id, *(tracks or []), kind=kind or "", stage=stage,
                            event_id=event_id)
        value.update(code=code, received_at=at)
        if kind is None:
            del value["kind"]
        headers = [("ce_type", ce_type.encode())] if ce_type is not None else []
        await self.feed("events", value, headers)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def label_values(self, label: str) -> set[str]:
        return {sample.labels[label] for family in self.registry.collect()
                for sample in family.samples if label in sample.labels}


def created(track_id: str, duration: float) -> dict[str, Any]:
    """A track created at 09:59:00."""
    return {**track_value(track_id, audio="https://cdn.test/a.mp3", duration=duration),
            "created_at": "2026-11-25T09:59:00Z"}


async def test_callbacks_tasks_and_phases_are_counted_per_kind() -> None:
    rig = Rig()
    await rig.event("g", "text", kind="generate-music", at="2026-11-25T10:00:00Z")
    await rig.event("g", "first", kind="generate-music", at="2026-11-25T10:00:20Z",
                    tracks=[created("g1", 100.0)])
    await rig.event("g", "complete", kind="generate-music", at="2026-11-25T10:01:05Z",
                    tracks=[created("g1", 100.0), created("g2", 50.0)])
    await rig.event("s", "first", kind="sounds", at="2026-11-25T10:00:00Z")
    await rig.event("s", "complete", kind="sounds", at="2026-11-25T10:00:30Z")
    await rig.event("w", "complete", kind="wav", at="2026-11-25T10:00:00Z")
    await rig.event("i", "error", kind="cover-image", code=531, at="2026-11-25T10:00:00Z")

    v = rig.value
    assert v("music_callbacks_total", kind="generate-music", stage="complete", code="200") == 1
    assert v("music_callbacks_total", kind="wav", stage="complete", code="200") == 1
    assert v("music_callbacks_total", kind="cover-image", stage="error", code="531") == 1
    assert v("music_tasks_completed_total", kind="generate-music", code="200") == 1
    assert v("music_tasks_completed_total", kind="sounds", code="200") == 1
    assert v("music_tasks_completed_total", kind="wav", code="200") == 1
    assert v("music_tasks_failed_total", kind="cover-image", code="531") == 1
    assert v("music_tracks_total", kind="generate-music") == 2
    assert v("music_track_duration_seconds_sum", kind="generate-music") == 150.0
    # Phases per kind, for the track family.
    assert v("music_task_phase_seconds_sum", kind="generate-music", phase="text_to_first") == 20
    assert v("music_task_phase_seconds_sum", kind="generate-music",
             phase="first_to_complete") == 45
    assert v("music_task_phase_seconds_count", kind="sounds", phase="first_to_complete") == 1
    assert v("music_task_phase_seconds_count", kind="sounds", phase="text_to_first") == 0
    # A one-shot kind has one callback: no phase, no delay without a track createTime.
    phases = {labels["kind"] for labels in
              (s.labels for f in rig.registry.collect() if f.name == "music_task_phase_seconds"
               for s in f.samples)}
    assert not phases & {"wav", "cover-image"}
    # Delay from the earliest createTime (09:59:00): 80 s at first, 125 s at complete.
    assert v("music_callback_delay_seconds_count", kind="generate-music") == 2
    assert v("music_callback_delay_seconds_sum", kind="generate-music") == 80 + 125
    assert v("music_callback_delay_seconds_count", kind="wav") == 0


async def test_duplicates_repeats_and_late_stages_carry_the_kind() -> None:
    rig = Rig()
    await rig.event("m", "complete", kind="mashup", at="2026-11-25T10:00:00Z", event_id="a" * 32)
    await rig.event("m", "complete", kind="mashup", at="2026-11-25T10:00:00Z", event_id="a" * 32)
    await rig.event("m", "complete", kind="mashup", at="2026-11-25T10:00:01Z", event_id="b" * 32)
    await rig.event("m", "first", kind="mashup", at="2026-11-25T10:00:02Z", event_id="c" * 32)
    assert rig.value("music_duplicate_callbacks_total", kind="mashup", stage="complete") == 1
    assert rig.value("music_repeated_stages_total", kind="mashup", stage="complete") == 1
    assert rig.value("music_out_of_order_stages_total", kind="mashup", stage="first") == 1
    assert rig.value("music_tasks_completed_total", kind="mashup", code="200") == 1


async def test_the_kind_label_is_a_closed_set() -> None:
    rig = Rig()
    # A future producer's kind, in the value and in ce_type.
    await rig.event("f", "complete", kind="karaoke", at="2026-11-25T10:00:00Z")
    await rig.event("h", "complete", kind=None, ce_type="music.callback.karaoke.complete",
                    at="2026-11-25T10:00:00Z")
    # No kind in the value: the one in ce_type counts.
    await rig.event("c", "complete", kind=None, ce_type="music.callback.upload-cover.complete",
                    at="2026-11-25T10:00:00Z")
    # Neither: other.
    await rig.event("n", "complete", kind=None, at="2026-11-25T10:00:00Z")
    await rig.event("x", "complete", kind=None, ce_type="something.else",
                    at="2026-11-25T10:00:00Z")
    assert rig.value("music_callbacks_total", kind="other", stage="complete", code="200") == 4
    assert rig.value("music_callbacks_total", kind="upload-cover", stage="complete",
                     code="200") == 1
    assert rig.label_values("kind") <= set(KIND_LABELS)
    assert set(KIND_LABELS) == {*KIND_NAMES, "other"}


def archived(task_id: str, role: str, *, kind: str | None, size: int, track_id: str | None,
             uri: str) -> dict[str, Any]:
    value = {"task_id": task_id, "track_id": track_id, "object": role, "uri": uri,
             "size": size, "sha256": "a" * 64, "content_type": "video/mp4",
             "source_url": "https://cdn.test/x", "source_event_id": "e" * 32}
    if kind is not None:
        value["kind"] = kind
    return value


async def test_archived_objects_and_dead_letters_by_kind_and_role() -> None:
    rig = Rig()
    video = archived("v", "video", kind="music-video", size=5000, track_id=None,
                     uri="file:///a/v/_/video")
    await rig.feed("archived", video, [("ce_id", b"r1")])
    await rig.feed("archived", video, [("ce_id", b"r1")])  # a re-report
    # Without ce_id, a file of the task as a whole is named by its URI.
    image = archived("i", "image", kind="cover-image", size=10, track_id=None,
                     uri="file:///a/i/_/image")
    image_2 = {**image, "uri": "file:///a/i/_/image-2"}
    for value in (image, image, image_2):
        await rig.feed("archived", value)
    await rig.feed("archived", archived("o", "audio", kind=None, size=7, track_id="t1",
                                        uri="file:///a/o/t1/audio"))
    await rig.feed("archived", archived("h", "hologram", kind="music-video", size=1,
                                        track_id=None, uri="file:///a/h/_/hologram"))
    dead = {"task_id": "w", "track_id": None, "object": "wav", "kind": "wav",
            "url": "https://cdn.test/w.wav", "reason": "too_large", "detail": "…",
            "attempts": 1, "source_event_id": "e" * 32, "topic": "events", "partition": 0,
            "offset": 1, "failed_at": "2026-11-25T10:00:00Z"}
    await rig.feed("failed", dead)
    await rig.feed("failed", dead)  # the same dead letter again (no ce_id): its URL names it
    await rig.feed("failed", {**dead, "url": "https://cdn.test/other.wav"})

    v = rig.value
    assert v("music_archived_objects_total", kind="music-video", role="video") == 1
    assert v("music_archived_bytes_total", kind="music-video", role="video") == 5000
    assert v("music_archived_objects_total", kind="cover-image", role="image") == 2
    assert v("music_archived_objects_total", kind="other", role="audio") == 1
    assert v("music_archived_objects_total", kind="music-video", role="other") == 1
    assert v("music_duplicate_archive_reports_total", topic="archived") == 2
    assert v("music_archive_dead_letters_total", kind="wav", reason="too_large") == 2
    assert v("music_duplicate_archive_reports_total", topic="archive_failed") == 1


async def test_an_event_with_files_counts_like_any_event() -> None:
    rig = Rig()
    value = event_value("s", kind="vocal-separation",
                        files=[file_value("vocal", "https://cdn.test/v.mp3")])
    await rig.feed("events", value)
    assert rig.value("music_callbacks_total", kind="vocal-separation", stage="complete",
                     code="200") == 1
    assert rig.value("music_tasks_completed_total", kind="vocal-separation", code="200") == 1
    assert rig.value("music_tracks_total", kind="vocal-separation") == 0
