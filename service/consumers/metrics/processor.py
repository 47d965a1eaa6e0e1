"""The metrics consumer's processor: one record in, Prometheus counters updated.

Reads the three topics (events, archived, archive-failed) as a tolerant
reader: CloudEvents headers first (``ce_id``, ``ce_subject``, ``ce_type``,
``ce_time``), the JSON value for the rest, unknown fields ignored. A record it
cannot read is counted in ``music_invalid_records_total`` and skipped (so it is
committed): bad data never stops the consumer.

What counts, per task (state in :mod:`service.consumers.metrics.state`):

* an event id already seen for the task is a *duplicate*: only
  ``music_duplicate_callbacks_total`` moves;
* every other event counts once in ``music_callbacks_total{kind,stage,code}`` and
  in the delay histogram; then, by the task's progress (``text`` < ``first`` <
  ``complete``; ``complete`` and ``error`` are terminal):

  - a stage the task already reached (new event id) is *repeated*;
  - a stage after a terminal stage, or before a stage already reached, is
    *out of order* (``first`` after ``complete``, ``text`` after ``first``);
  - otherwise the task advances: ``first`` observes text→first, ``complete``
    counts the task completed, its tracks and their durations and observes
    first→complete, ``error`` counts the task failed.

Every series is labelled with the event's ``kind`` (its value's, else the one
in ``ce_type``; ``other`` outside the contract's 15). Phase times exist for the
track family only: a one-shot kind (cover-image, lyrics, wav, ...) answers with
a single ``complete`` or ``error``, so it has no phase to time; its delay is
observed when its event carries a track ``createTime``.

Phase times use the events' ``received_at`` (the gateway's clock), so consumer
lag and replays do not distort them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
import structlog
from aiokafka import TopicPartition

from service.config.shared import TopicNames
from service.consumers.metrics.exporter import (
    DEAD_LETTER_REASONS,
    KIND_LABELS,
    ROLE_LABELS,
    STAGES,
    MusicMetrics,
    closed_label,
    code_label,
)
from service.consumers.metrics.state import EvictionCounts, Partition, TaskStates
from service.core.timefmt import epoch_seconds
from service.kafka.consumer import Record
from service.observability.metrics import LabelledChildren
from service.observability.tracing import from_kafka_headers

log = structlog.get_logger("service.consumers.metrics.message")

Role = Literal["events", "archived", "archive_failed"]
Outcome = Literal["counted", "duplicate", "repeated", "out_of_order", "invalid"]

STAGE_BITS: Final = {"text": 1, "first": 2, "complete": 4, "error": 8}
_RANK: Final = {"text": 0, "first": 1, "complete": 2, "error": 2}
_TERMINAL: Final = STAGE_BITS["complete"] | STAGE_BITS["error"]
_MAX_ID_LENGTH: Final = 256
_EVENT_TYPE_PREFIX: Final = "music.callback."


class InvalidRecordError(ValueError):
    """The record cannot be read; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CallbackView:
    """The fields of a v1 event the metrics need."""

    event_id: str
    task_id: str
    kind: str  # a closed label value
    stage: str
    code: object
    received_at: float | None
    track_durations: tuple[float | None, ...]
    earliest_created_at: float | None


@dataclass(frozen=True, slots=True)
class ArchiveView:
    task_id: str
    report_id: str | None
    kind: str  # a closed label value
    label: str  # the role for archived, the reason for archive-failed
    size: int


def mask(task_id: str) -> str:
    """A task id shortened for logs, the way the gateway logs it."""
    return f"{task_id[:4]}****{task_id[-4:]}"


class StateTables:
    """The two bounded tables: events by task id, archive reports by (topic role, task id)."""

    def __init__(self, *, ttl_seconds: float, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.events: TaskStates[str] = TaskStates(
            ttl_seconds=ttl_seconds, max_entries=max_entries, clock=clock)
        self.archive: TaskStates[tuple[str, str]] = TaskStates(
            ttl_seconds=ttl_seconds, max_entries=max_entries, clock=clock)


class MetricsProcessor:
    def __init__(self, *, topics: TopicNames, metrics: MusicMetrics, state: StateTables) -> None:
        self._roles: dict[str, Role] = {
            topics.events: "events",
            topics.archived: "archived",
            topics.archive_failed: "archive_failed",
        }
        self._metrics = metrics
        self._child = LabelledChildren()
        self._state = state
        self._evictions_seen: dict[str, tuple[int, int, int]] = {"events": (0, 0, 0),
                                                                  "archive": (0, 0, 0)}

    async def process(self, record: Record) -> None:
        """Update the metrics for ``record``; never raises for bad data (it is counted)."""
        self._count(record)
        self._sync_state_metrics()

    async def process_batch(self, records: Sequence[Record]) -> None:
        """:meth:`process` for a whole poll: CPU work only, so nothing is awaited between
        records and the state gauges are brought up to date once."""
        for record in records:
            self._count(record)
        self._sync_state_metrics()

    def _count(self, record: Record) -> None:
        role = self._roles.get(record.topic, "events")
        partition: Partition = (record.topic, record.partition)
        fields: dict[str, Any] = {}
        try:
            headers = _headers(record.headers)
            if role == "events":
                outcome = self._callback(read_callback(headers, record.key, record.value),
                                         partition, fields)
            else:
                outcome = self._archive(role, read_archive(role, headers, record.key,
                                                           record.value), partition, fields)
        except InvalidRecordError as exc:
            self._child(self._metrics.invalid, role).inc()
            outcome = "invalid"
            fields["reason"] = exc.reason
        # A field, not bound to the context: a batch's records share one task.
        trace_id = from_kafka_headers(record.headers)
        if trace_id is not None:
            fields["trace_id"] = trace_id
        log.info("message", topic=record.topic, partition=record.partition,
                 offset=record.offset, outcome=outcome, **fields)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        dropped = self._state.events.drop_partitions(keys) + self._state.archive.drop_partitions(
            keys)
        self._sync_state_metrics()
        log.info("task_state_dropped", partitions=sorted(f"{t}[{p}]" for t, p in keys),
                 entries=dropped)

    def drop_all(self) -> None:
        """Forget every task (the consumer left its group and will be assigned afresh)."""
        partitions = set(self._state.events.partitions()) | set(self._state.archive.partitions())
        self.on_revoked({TopicPartition(topic, number) for topic, number in partitions})

    def _callback(self, event: CallbackView, partition: Partition,
                  fields: dict[str, Any]) -> Outcome:
        fields.update(task_id=mask(event.task_id), event_id=event.event_id, stage=event.stage)
        metrics = self._metrics
        child = self._child
        entry = self._state.events.touch(event.task_id, partition)
        kind = event.kind
        if self._state.events.seen(entry, event.event_id):
            child(metrics.duplicates, kind, event.stage).inc()
            return "duplicate"
        code = code_label(event.code)
        child(metrics.callbacks, kind, event.stage, code).inc()
        if event.received_at is not None and event.earliest_created_at is not None:
            child(metrics.delay, kind).observe(
                max(0.0, event.received_at - event.earliest_created_at))
        bit = STAGE_BITS[event.stage]
        reached = entry.stages
        if reached & bit:
            child(metrics.repeated, kind, event.stage).inc()
            return "repeated"
        entry.stages = reached | bit
        if reached & _TERMINAL or _RANK[event.stage] < _highest_rank(reached):
            child(metrics.out_of_order, kind, event.stage).inc()
            return "out_of_order"
        now = event.received_at
        if event.stage == "text":
            entry.text_at = now
        elif event.stage == "first":
            entry.first_at = now
            self._observe_phase(kind, "text_to_first", entry.text_at, now)
        elif event.stage == "complete":
            child(metrics.tasks_completed, kind, code).inc()
            if event.track_durations:
                child(metrics.tracks, kind).inc(len(event.track_durations))
            for duration in event.track_durations:
                if duration is not None:
                    child(metrics.track_duration, kind).observe(duration)
            self._observe_phase(kind, "first_to_complete", entry.first_at, now)
        else:
            child(metrics.tasks_failed, kind, code).inc()
        return "counted"

    def _archive(self, role: Role, report: ArchiveView, partition: Partition,
                 fields: dict[str, Any]) -> Outcome:
        fields.update(task_id=mask(report.task_id), report_id=report.report_id)
        if report.report_id is not None:
            entry = self._state.archive.touch((role, report.task_id), partition)
            if self._state.archive.seen(entry, report.report_id):
                self._child(self._metrics.archive_duplicates, role).inc()
                return "duplicate"
        fields["kind"] = report.kind
        if role == "archived":
            fields["role"] = report.label
            self._child(self._metrics.archived, report.kind, report.label).inc()
            self._child(self._metrics.archived_bytes, report.kind, report.label).inc(report.size)
        else:
            fields["reason"] = report.label
            self._child(self._metrics.dead_letters, report.kind, report.label).inc()
        return "counted"

    def _observe_phase(self, kind: str, phase: str, start: float | None,
                       end: float | None) -> None:
        if start is not None and end is not None and end >= start:
            self._child(self._metrics.phase, kind, phase).observe(end - start)

    def _sync_state_metrics(self) -> None:
        for table, states in (("events", self._state.events), ("archive", self._state.archive)):
            self._child(self._metrics.state_entries, table).set(len(states))
            now = _eviction_tuple(states.evictions)
            before = self._evictions_seen[table]
            if now != before:
                for cause, new, old in zip(("ttl", "capacity", "revoked"), now, before,
                                           strict=True):
                    if new > old:
                        self._child(self._metrics.state_evictions, table, cause).inc(new - old)
                self._evictions_seen[table] = now


def _eviction_tuple(counts: EvictionCounts) -> tuple[int, int, int]:
    return (counts.ttl, counts.capacity, counts.revoked)


def _highest_rank(stages: int) -> int:
    highest = -1
    for stage, bit in STAGE_BITS.items():
        if stages & bit:
            highest = max(highest, _RANK[stage])
    return highest


# ---- reading records (tolerant reader) -------------------------------------------------------

def _headers(raw: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw or ():
        if value is None:
            continue
        try:
            headers[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue  # an unreadable header is as good as absent
    return headers


def _object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise InvalidRecordError("no_value")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidRecordError("invalid_json") from None
    if not isinstance(document, dict):
        raise InvalidRecordError("not_an_object")
    return document


def _text(*candidates: object) -> str | None:
    for candidate in candidates:
        if isinstance(candidate, str) and 0 < len(candidate) <= _MAX_ID_LENGTH:
            return candidate
    return None


def _key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def kind_label(document: Mapping[str, object], headers: Mapping[str, str]) -> str:
    """The event's kind as a label: its value's ``kind``, else the one in ``ce_type``
    (``music.callback.<kind>.<stage>``), ``other`` when neither is a known kind."""
    kind = document.get("kind")
    if kind is None:
        ce_type = headers.get("ce_type", "")
        if ce_type.startswith(_EVENT_TYPE_PREFIX):
            kind = ce_type.removeprefix(_EVENT_TYPE_PREFIX).rpartition(".")[0]
    return closed_label(kind, KIND_LABELS)


def read_callback(headers: Mapping[str, str], key: bytes | None,
                  value: bytes | None) -> CallbackView:
    document = _object(value)
    event_id = _text(headers.get("ce_id"), document.get("event_id"))
    if event_id is None:
        raise InvalidRecordError("missing_event_id")
    task_id = _text(document.get("task_id"), headers.get("ce_subject"), _key(key))
    if task_id is None:
        raise InvalidRecordError("missing_task_id")
    stage = document.get("stage")
    if stage is None:
        stage = headers.get("ce_type", "").rpartition(".")[2]
    if stage not in STAGES:
        raise InvalidRecordError("unknown_stage")
    received_at = epoch_seconds(document.get("received_at"))
    if received_at is None:
        received_at = epoch_seconds(headers.get("ce_time"))
    tracks = document.get("tracks")
    durations: list[float | None] = []
    earliest: float | None = None
    for track in tracks if isinstance(tracks, list) else ():
        if not isinstance(track, dict):
            continue
        durations.append(_number(track.get("duration_seconds")))
        created = epoch_seconds(track.get("created_at"))
        if created is not None and (earliest is None or created < earliest):
            earliest = created
    return CallbackView(
        event_id=event_id, task_id=task_id, kind=kind_label(document, headers), stage=stage,
        code=document.get("code"),
        received_at=received_at, track_durations=tuple(durations), earliest_created_at=earliest,
    )


def read_archive(role: Role, headers: Mapping[str, str], key: bytes | None,
                 value: bytes | None) -> ArchiveView:
    document = _object(value)
    task_id = _text(document.get("task_id"), headers.get("ce_subject"), _key(key))
    if task_id is None:
        raise InvalidRecordError("missing_task_id")
    report_id = _text(headers.get("ce_id"))
    if report_id is None:
        # No CloudEvents id: the fields that name one object (and, for a dead letter,
        # the event that asked for it) identify a re-report just as well. A file of
        # the task as a whole has a null track id: its URI (or URL) names it instead.
        track_id = document.get("track_id")
        where = track_id if track_id is not None else document.get(
            "uri" if role == "archived" else "url")
        parts = (where, document.get("object"),
                 document.get("sha256") if role == "archived" else
                 document.get("source_event_id"))
        if all(isinstance(part, str) and part for part in parts):
            report_id = "\n".join(str(part) for part in parts)
    kind = closed_label(document.get("kind"), KIND_LABELS)
    if role == "archived":
        size = document.get("size")
        return ArchiveView(
            task_id=task_id, report_id=report_id, kind=kind,
            label=closed_label(document.get("object"), ROLE_LABELS),
            size=size if isinstance(size, int) and not isinstance(size, bool) and size > 0
            else 0,
        )
    return ArchiveView(task_id=task_id, report_id=report_id, kind=kind,
                       label=closed_label(document.get("reason"), DEAD_LETTER_REASONS), size=0)
