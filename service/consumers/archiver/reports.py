"""Reports: one archived record per stored object, one dead letter per failed one.

Both are CloudEvents (binary mode, headers from :func:`service.core.records.
envelope_headers`) keyed by the task id, carrying the event's ``traceparent``. Their ids
are derived from the object (:mod:`.keys`), so a re-report shares the first one's id.
A publish failure is an outage: it propagates and the event is not committed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson
import structlog

from service.consumers.archiver.keys import archive_event_id, dead_letter_event_id
from service.consumers.archiver.metrics import ALREADY_STORED, STORED, ArchiverMetrics
from service.consumers.archiver.plan import Job
from service.core.kinds import KIND_NAMES
from service.core.records import Headers, envelope_headers
from service.core.timefmt import rfc3339
from service.observability.tracing import TRACEPARENT
from service.storage.base import ObjectMetadata

log = structlog.get_logger(__name__)

ARCHIVED_TYPE: Final = "music.archive.stored"
ARCHIVE_FAILED_TYPE: Final = "music.archive.failed"
SOURCE: Final = "/archiver"


class Publisher(Protocol):
    """What the reports need from :class:`service.kafka.producer.KafkaPublisher`."""

    async def publish(self, topic: str, *, key: bytes | None, value: bytes, headers: Headers,
                      deadline: float) -> Any: ...


@dataclass(frozen=True)
class EventContext:
    """Where the jobs came from, for reports and dead letters."""

    event_id: str
    topic: str
    partition: int
    offset: int
    traceparent: bytes | None


@dataclass(frozen=True)
class Failure:
    """An object that cannot be archived (becomes a dead letter unless held)."""

    url: str | None
    reason: str
    detail: str
    attempts: int
    status: int | None = None
    transient: bool = False


@dataclass(frozen=True)
class ReportTopics:
    archived_topic: str
    dead_letter_topic: str
    archived_schema: str
    dead_letter_schema: str
    publish_timeout_seconds: float


def _identity(job: Job) -> dict[str, Any]:
    """The fields naming the object, common to both reports (``kind`` only when known)."""
    fields: dict[str, Any] = {"task_id": job.task_id, "track_id": job.track_id,
                              "object": job.role}
    if job.kind in KIND_NAMES:
        fields["kind"] = job.kind
    return fields


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


class Reporter:
    def __init__(self, publisher: Publisher, topics: ReportTopics, metrics: ArchiverMetrics,
                 ) -> None:
        self._publisher = publisher
        self._topics = topics
        self._metrics = metrics

    def _headers(self, *, ce_id: str, ce_type: str, job: Job, dataschema: str,
                 context: EventContext) -> Headers:
        headers = envelope_headers(ce_id=ce_id, source=SOURCE, ce_type=ce_type,
                                   time=datetime.now(UTC), subject=job.task_id,
                                   dataschema=dataschema)
        if context.traceparent is not None:
            headers.append((TRACEPARENT, context.traceparent))
        return headers

    async def _publish(self, topic: str, job: Job, value: dict[str, Any],
                       headers: Headers) -> None:
        await self._publisher.publish(topic, key=job.task_id.encode(), value=orjson.dumps(value),
                                      headers=headers,
                                      deadline=self._topics.publish_timeout_seconds)

    async def archived(self, job: Job, context: EventContext, metadata: ObjectMetadata,
                       uri: str, *, already_stored: bool, started: float,
                       attempts: int = 0) -> None:
        value = {
            **_identity(job),
            "uri": uri,
            "size": metadata.size,
            "sha256": metadata.sha256,
            "content_type": metadata.content_type,
            "source_url": metadata.source_url,
            "source_event_id": context.event_id,
            "title": metadata.title,
            "duration_seconds": metadata.duration_seconds,
            "already_stored": already_stored,
        }
        headers = self._headers(
            ce_id=archive_event_id(job.task_id, job.track_id, job.name, metadata.sha256),
            ce_type=ARCHIVED_TYPE, job=job, dataschema=self._topics.archived_schema,
            context=context)
        await self._publish(self._topics.archived_topic, job, value, headers)
        result = ALREADY_STORED if already_stored else STORED
        self._metrics.objects_stored.labels(job.role, result).inc()
        log.info("object_archived", track_id=job.track_id, object=job.role, result=result,
                 size=metadata.size, content_type=metadata.content_type, attempts=attempts,
                 duration_ms=_elapsed_ms(started))

    async def dead_letter(self, job: Job, context: EventContext, failure: Failure, *,
                          started: float, host: str) -> None:
        value = {
            **_identity(job),
            "url": failure.url,
            "reason": failure.reason,
            "detail": failure.detail,
            "attempts": failure.attempts,
            "source_event_id": context.event_id,
            "topic": context.topic,
            "partition": context.partition,
            "offset": context.offset,
            "failed_at": rfc3339(datetime.now(UTC)),
        }
        headers = self._headers(
            ce_id=dead_letter_event_id(job.task_id, job.track_id, job.name, context.event_id),
            ce_type=ARCHIVE_FAILED_TYPE, job=job, dataschema=self._topics.dead_letter_schema,
            context=context)
        headers.append(("reason", failure.reason.encode()))
        await self._publish(self._topics.dead_letter_topic, job, value, headers)
        self._metrics.dead_lettered.labels(failure.reason).inc()
        # No URL and no detail at INFO/WARNING (they may carry signed tokens): the host only.
        log.warning("object_dead_lettered", track_id=job.track_id, object=job.role,
                    reason=failure.reason, status=failure.status, attempts=failure.attempts,
                    host=host, duration_ms=_elapsed_ms(started))
