"""The metrics processor on constructed records: every series labelled by a closed ``kind``.

The processor is pure (a record in, counters updated), so it is driven directly here, on
records built by tests/harness/factories.py; tests/integration/test_metrics_consumer.py runs
the same code, on the same scripted stream, in the real process against the real broker.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from service.config.shared import TopicNames
from service.consumers.metrics.exporter import KIND_LABELS, MusicMetrics
from service.consumers.metrics.processor import MetricsProcessor, StateTables
from service.core.kinds import KIND_NAMES
from service.kafka.consumer import Record
from tests.harness.factories import (
    archived_record,
    archived_value,
    consumer_record,
    dead_letter_value,
    event_headers,
    event_record,
    event_value,
    file_value,
    track_value,
)
from tests.harness.metrics_stream import KIND, scripted_stream

TOPICS = TopicNames(events="events", archived="archived", archive_failed="failed")


class Rig:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.processor = MetricsProcessor(topics=TOPICS, metrics=MusicMetrics(self.registry),
                                          state=StateTables(ttl_seconds=3600, max_entries=100))

    async def feed(self, *records: Record) -> None:
        for record in records:
            await self.processor.process(record)

    async def event(self, task_id: str, stage: str, *, kind: str, at: str, code: int = 200,
                    tracks: list[dict[str, Any]] | None = None,
                    event_id: str | None = None) -> None:
        """An event as the gateway publishes it."""
        await self.feed(event_record(event_value(task_id, *(tracks or []), kind=kind,
                                                 stage=stage, code=code, received_at=at,
                                                 event_id=event_id)))

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def label_values(self, label: str) -> set[str]:
        return {sample.labels[label] for family in self.registry.collect()
                for sample in family.samples if label in sample.labels}


def created(track_id: str, duration: float) -> dict[str, Any]:
    """A track created at 09:59:00."""
    return track_value(track_id, audio="https://cdn.test/a.mp3", duration=duration,
                       created_at="2026-11-25T09:59:00Z")


def without_kind(task_id: str, *, envelope_kind: str | None) -> Record:
    """An event whose value names no kind (an older producer's): its envelope, when it has
    one, is the gateway's for ``envelope_kind``."""
    document = event_value(task_id, kind=envelope_kind or "")
    headers = event_headers(document) if envelope_kind is not None else []
    del document["kind"]
    return consumer_record("events", document, key=task_id.encode(), headers=headers)


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
    await rig.feed(without_kind("h", envelope_kind="karaoke"))
    # No kind in the value: the one in ce_type counts.
    await rig.feed(without_kind("c", envelope_kind="upload-cover"))
    # Neither: other.
    await rig.feed(without_kind("n", envelope_kind=None))
    foreign = without_kind("x", envelope_kind=None)
    await rig.feed(consumer_record("events", foreign.value, key=b"x",
                                   headers=[("ce_type", b"something.else")]))
    assert rig.value("music_callbacks_total", kind="other", stage="complete", code="200") == 4
    assert rig.value("music_callbacks_total", kind="upload-cover", stage="complete",
                     code="200") == 1
    assert rig.label_values("kind") <= set(KIND_LABELS)
    assert set(KIND_LABELS) == {*KIND_NAMES, "other"}


async def test_archived_objects_and_dead_letters_by_kind_and_role() -> None:
    rig = Rig()
    video = archived_value("v", "video", kind="music-video", size=5000, track_id=None,
                           content_type="video/mp4")
    await rig.feed(archived_record(video, topic="archived"),
                   archived_record(video, topic="archived"))  # a re-report
    # Without ce_id, a file of the task as a whole is named by its URI.
    image = archived_value("i", "image", kind="cover-image", size=10, track_id=None,
                           uri="file:///a/i/_/image")
    image_2 = {**image, "uri": "file:///a/i/_/image-2"}
    await rig.feed(*(consumer_record("archived", value) for value in (image, image, image_2)))
    await rig.feed(consumer_record("archived", archived_value("o", "audio", kind=None, size=7,
                                                              track_id="t1")))
    await rig.feed(consumer_record("archived", archived_value(
        "h", "hologram", kind="music-video", size=1, track_id=None)))
    dead = dead_letter_value("w", "wav", kind="wav", track_id=None, reason="too_large",
                             url="https://cdn.test/w.wav")
    # A dead letter and the same one again, without ce_id: its URL names it.
    await rig.feed(consumer_record("failed", dead), consumer_record("failed", dead))
    await rig.feed(consumer_record("failed", {**dead, "url": "https://cdn.test/other.wav"}))

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
    await rig.feed(event_record(value))
    assert rig.value("music_callbacks_total", kind="vocal-separation", stage="complete",
                     code="200") == 1
    assert rig.value("music_tasks_completed_total", kind="vocal-separation", code="200") == 1
    assert rig.value("music_tracks_total", kind="vocal-separation") == 0


async def test_a_scripted_stream_yields_exactly_the_expected_metrics() -> None:
    rig = Rig()
    await rig.feed(*scripted_stream("events", "archived", "failed").records)

    v = rig.value
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


async def test_a_poll_processed_in_one_call_counts_what_one_record_at_a_time_counts() -> None:
    one_by_one, batched = Rig(), Rig()
    records = scripted_stream("events", "archived", "failed").records
    await one_by_one.feed(*records)
    await batched.processor.process_batch(records)

    def samples(rig: Rig) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in rig.registry.collect() for sample in family.samples
                if not sample.name.endswith("_created")}

    counted = samples(one_by_one)
    assert counted == samples(batched)
    assert sum(value for (name, _), value in counted.items()
               if name == "music_callbacks_total") > 0
