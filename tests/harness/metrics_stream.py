"""The metrics consumer's scripted stream, built with :mod:`tests.harness.factories`.

Five tasks of one kind with duplicates, a repeated stage, a late stage and failures, two
records that cannot be read, archive reports (one re-reported) and dead letters. What it
counts, exactly, is asserted in tests/unit/test_metrics_processor.py (the processor on these
records); tests/integration/test_metrics_consumer.py produces the same records to the real
broker and checks the running process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from service.core.timefmt import rfc3339
from service.kafka.consumer import Record
from tests.harness.factories import (
    archived_record,
    archived_value,
    consumer_record,
    dead_letter_record,
    dead_letter_value,
    event_record,
    event_value,
    track_value,
)

T0: Final = datetime(2026, 1, 1, tzinfo=UTC)
CREATED_AT: Final = rfc3339(T0 - timedelta(seconds=10))  # every track's creation time
KIND: Final = "extend-music"  # the kind of every event of the stream


def callback(topic: str, task: str, stage: str, *, at: float, code: int = 200,
             durations: Sequence[float] = (), message: str = "ok",
             traceparent: str | None = None) -> Record:
    """An event of ``task`` received ``at`` seconds after T0, one track per duration."""
    tracks = [track_value(f"{task}-{n}", title="Song", duration=duration,
                          audio=f"https://cdn.example/{task}-{n}.mp3", created_at=CREATED_AT)
              for n, duration in enumerate(durations)]
    document = event_value(task, *tracks, kind=KIND, stage=stage, code=code, message=message,
                           received_at=rfc3339(T0 + timedelta(seconds=at)))
    return event_record(document, topic=topic, traceparent=traceparent)


def archived(topic: str, task: str, role: str, size: int) -> Record:
    """A report of the task's first track's ``role``, with a field a future archiver adds."""
    return archived_record(archived_value(task, role, track_id=f"{task}-0", kind=KIND,
                                          size=size, future_field=[1, 2]), topic=topic)


def dead_letter(topic: str, task: str, reason: str, source_event_id: str) -> Record:
    return dead_letter_record(dead_letter_value(task, reason=reason, track_id=f"{task}-0",
                                                kind=KIND, source_event_id=source_event_id),
                              topic=topic)


@dataclass(frozen=True)
class ScriptedStream:
    records: list[Record]  # in the order they are produced
    traced: Record  # the one event that carries a trace context


def scripted_stream(events: str, archived_topic: str, failed_topic: str, *,
                    traceparent: str | None = None) -> ScriptedStream:
    # A: text → first → complete, and the provider re-delivers `first`.
    a_text = callback(events, "task-a", "text", at=0, traceparent=traceparent)
    a_first = callback(events, "task-a", "first", at=20, durations=[100.0])
    a_complete = callback(events, "task-a", "complete", at=65, durations=[100.0, 200.5])
    # B: fails with 531, the error delivered twice.
    b_text = callback(events, "task-b", "text", at=1)
    b_error = callback(events, "task-b", "error", at=6, code=531, message="refunded")
    # C: complete, then a late `first`.
    c_complete = callback(events, "task-c", "complete", at=100, durations=[60.0])
    c_late_first = callback(events, "task-c", "first", at=101, durations=[60.0])
    # D: two different `complete` bodies (a repeated stage, not a duplicate).
    d_text = callback(events, "task-d", "text", at=2)
    d_complete = callback(events, "task-d", "complete", at=50, durations=[150.0])
    d_again = callback(events, "task-d", "complete", at=52, durations=[150.0],
                       message="again")
    # E: fails with a code the exporter does not know.
    e_error = callback(events, "task-e", "error", at=3, code=999)
    broken = [consumer_record(events, b"{not json", key=b"task-x"),
              consumer_record(events, {"event_id": "f" * 32, "task_id": "task-y",
                                       "stage": "bogus"}, key=b"task-y")]
    records = [
        a_text, b_text, e_error, d_text, a_first, a_first, b_error, b_error, d_complete,
        d_again, a_complete, c_complete, c_late_first, *broken,
        archived(archived_topic, "task-a", "audio", 1000),
        archived(archived_topic, "task-a", "audio", 1000),  # re-reported
        archived(archived_topic, "task-a", "cover", 50),
        # Two dead letters for one object, from two events: two reports.
        dead_letter(failed_topic, "task-b", "timeout", "e" * 32),
        dead_letter(failed_topic, "task-b", "something-new", "d" * 32),
    ]
    return ScriptedStream(records, a_text)
