"""``python -m service replay``: run kept rejections through the current normalizer again.

After a fix (a new provider variant understood, a schema relaxed), the bodies the
gateway once rejected are still on the rejected topic, byte for byte. Replay reads
a range of it (offsets per partition, or a time window), decodes and normalizes
each body with the code deployed now, and publishes the events. The event id is
computed over the same task id, stage and bytes, so it is exactly the id a first
delivery would have had (consumers deduplicate a body that was also re-posted).
``received_at`` (and ``ce_time``) keep the original reception time, and the
original ``traceparent`` travels on.

A body that is still rejected is reported and left where it is; with
``--republish-rejected`` it is written to the rejected topic again with today's
reason. Every record gives one JSON line on stdout; a summary line ends the run.
Publishing stops at the first failure, and the line says where to resume.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from service.config.gateway import GatewayConfig
from service.config.kafka import max_record_bytes
from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import CallbackKind, kind_named
from service.core.kinds.base import ROUTE_PREFIX
from service.core.model import CallbackEvent, Rejection
from service.core.normalize import decode, normalize
from service.core.records import body_from_rejected, cloudevent_headers, rejected_value
from service.core.timefmt import epoch_seconds
from service.gateway.app import build_publisher
from service.kafka.producer import KafkaPublisher, PublishError

log = structlog.get_logger(__name__)

_POLL_MS = 500
_MAX_IDLE_POLLS = 60  # 30 s without a record while some are expected: give up


@dataclass(frozen=True)
class ReplayRange:
    """Which records: partitions (None: all), offsets (inclusive), times (epoch seconds)."""

    partitions: tuple[int, ...] | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class Replayed:
    partition: int
    offset: int
    outcome: str  # published, would_publish, still_rejected, republished_rejected, unreadable
    event_id: str | None = None
    reason: str | None = None

    def line(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None}


class Replayer:
    def __init__(self, config: GatewayConfig, publisher: KafkaPublisher | None,
                 schemas: SchemaRegistry, *, republish_rejected: bool) -> None:
        self._config = config
        self._publisher = publisher  # None: dry run
        self._schemas = schemas
        self._republish = republish_rejected

    async def one(self, record: ConsumerRecord[bytes, bytes]) -> Replayed:
        where = {"partition": record.partition, "offset": record.offset}
        try:
            value = orjson.loads(record.value or b"")
            body = body_from_rejected(value)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return Replayed(**where, outcome="unreadable", reason=type(exc).__name__)
        seconds = epoch_seconds(value.get("received_at"))
        received_at = datetime.fromtimestamp(
            seconds if seconds is not None else record.timestamp / 1000, UTC)
        kind = kind_of(value)
        if kind is None:
            return Replayed(**where, outcome="unreadable", reason="unknown_kind")
        decoded = decode(body, kind)
        result: CallbackEvent | Rejection = decoded if isinstance(decoded, Rejection) else (
            normalize(decoded, body, kind=kind, received_at=received_at, schemas=self._schemas,
                      provider_tz=self._config.provider_timezone, task_ref=None))
        trace = [(key, data) for key, data in record.headers if key == "traceparent"]
        if isinstance(result, CallbackEvent):
            if self._publisher is None:
                return Replayed(**where, outcome="would_publish", event_id=result.event_id)
            headers = cloudevent_headers(
                result, dataschema=self._schemas.schema_id(EVENT_V1)) + trace
            await self._publisher.publish(
                self._config.topics.events, key=result.task_id.encode(),
                value=orjson.dumps(result.data), headers=headers,
                deadline=self._config.publish_timeout_seconds)
            return Replayed(**where, outcome="published", event_id=result.event_id)
        if not self._republish or self._publisher is None:
            return Replayed(**where, outcome="still_rejected", reason=result.reason)
        kept = rejected_value(result, body, received_at=received_at,
                              content_type=value.get("content_type"), kind=kind.name)
        await self._publisher.publish(
            self._config.topics.rejected,
            key=result.task_id.encode() if result.task_id else None, value=orjson.dumps(kept),
            headers=[("content-type", b"application/json"), ("reason", result.reason.encode()),
                     *trace],
            deadline=self._config.publish_timeout_seconds)
        return Replayed(**where, outcome="republished_rejected", reason=result.reason)


def kind_of(value: dict[str, Any]) -> CallbackKind | None:
    """The kind a rejected record was posted to: its ``kind``, else the route in its
    ``source`` (records kept before kinds existed name ``/callbacks/extend-music``)."""
    name = value.get("kind")
    if not isinstance(name, str):
        source = value.get("source")
        name = source.removeprefix(ROUTE_PREFIX) if isinstance(source, str) else "extend-music"
    try:
        return kind_named(name)
    except KeyError:
        return None


async def _partitions(config: GatewayConfig, topic: str) -> set[int]:
    admin = AIOKafkaAdminClient(**config.kafka.client_kwargs())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {part["partition"] for entry in described if entry.get("error_code", 0) == 0
            for part in entry.get("partitions", [])}


async def _bounds(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                  wanted: ReplayRange) -> dict[TopicPartition, tuple[int, int]]:
    """(first offset, end offset exclusive) per partition; the end is fixed at the start."""
    beginnings = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    starts = dict(beginnings)
    if wanted.since is not None:
        found = await consumer.offsets_for_times(
            {tp: int(wanted.since * 1000) for tp in partitions})
        starts = {tp: (found[tp].offset if found.get(tp) is not None else ends[tp])
                  for tp in partitions}
    bounds = {}
    for tp in partitions:
        first = max(starts[tp], wanted.from_offset or 0)
        end = ends[tp] if wanted.to_offset is None else min(ends[tp], wanted.to_offset + 1)
        if first < end:
            bounds[tp] = (first, end)
    return bounds


Emit = Callable[[dict[str, Any]], None]


async def replay(config: GatewayConfig, wanted: ReplayRange, *, dry_run: bool,
                 republish_rejected: bool, out: TextIO = sys.stdout) -> int:
    def emit(line: dict[str, Any]) -> None:
        print(orjson.dumps(line).decode(), file=out, flush=True)

    topic = config.topics.rejected
    consumer = AIOKafkaConsumer(
        **config.kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
        max_partition_fetch_bytes=max_record_bytes(config.max_body_bytes),
        fetch_max_bytes=4 * max_record_bytes(config.max_body_bytes))
    publisher = None if dry_run else build_publisher(config)
    counts: Counter[str] = Counter()
    await consumer.start()
    try:
        if publisher is not None:
            await publisher.start()
            if not await publisher.wait_connected(30):
                emit({"error": "broker_unavailable", "detail": "the producer did not connect"})
                return 1
        known = await _partitions(config, topic)
        chosen = sorted(known if wanted.partitions is None else set(wanted.partitions) & known)
        bounds = await _bounds(consumer, [TopicPartition(topic, p) for p in chosen], wanted)
        replayer = Replayer(config, publisher, SchemaRegistry.load(),
                            republish_rejected=republish_rejected)
        complete = await _replay_bounds(consumer, bounds, replayer, wanted=wanted,
                                        counts=counts, emit=emit)
    finally:
        await consumer.stop()
        if publisher is not None:
            await publisher.stop(flush_timeout=config.process.shutdown_timeout_seconds)
    emit({"summary": dict(counts), "topic": topic, "dry_run": dry_run})
    return 0 if complete else 1


async def _replay_bounds(
    consumer: AIOKafkaConsumer, bounds: dict[TopicPartition, tuple[int, int]],
    replayer: Replayer, *, wanted: ReplayRange, counts: Counter[str], emit: Emit,
) -> bool:
    """Replay every record within ``bounds``; False when it stopped early."""
    consumer.assign(list(bounds))
    for tp, (first, _) in bounds.items():
        consumer.seek(tp, first)
    remaining = dict(bounds)
    idle = 0
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=_POLL_MS)
        idle = 0 if batch else idle + 1
        if idle > _MAX_IDLE_POLLS:
            emit({"error": "no_records", "detail": "the expected records did not arrive",
                  "remaining": {str(tp.partition): list(span) for tp, span in remaining.items()}})
            return False
        for tp, records in batch.items():
            for record in records:
                if tp not in remaining or record.offset >= remaining[tp][1]:
                    remaining.pop(tp, None)
                    break
                if wanted.until is not None and record.timestamp > wanted.until * 1000:
                    continue
                try:
                    result = await replayer.one(record)
                except PublishError as exc:
                    emit({**Replayed(tp.partition, record.offset, "failed",
                                     reason=exc.reason).line(),
                          "resume": f"--partition {tp.partition} --from-offset {record.offset}"})
                    return False
                counts[result.outcome] += 1
                emit(result.line())
        for tp in list(remaining):
            if await consumer.position(tp) >= remaining[tp][1]:
                remaining.pop(tp)
    return True
