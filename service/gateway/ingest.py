"""Callback ingestion: normalize → publish, answering only once the record is kept
(acknowledged by the broker, or fsynced to the spool: ``service/kafka/durable.py``).

This is the application service behind the HTTP handler. It knows nothing of
aiohttp: it takes the body bytes and returns an ``Outcome`` (status + JSON body),
so it is easy to test and the handler stays thin.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from service.config.gateway import GatewayConfig
from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import CallbackKind
from service.core.model import CallbackEvent, Decoded, Rejection
from service.core.normalize import normalize
from service.core.records import cloudevent_headers, rejected_value
from service.gateway.metrics import GatewayMetrics
from service.kafka.durable import Ack, DurablePublisher
from service.kafka.producer import Headers, PublishError
from service.observability.tracing import kafka_header

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def utc_now() -> datetime:
    return datetime.now(UTC)


class CallbackIngest:
    def __init__(
        self,
        *,
        config: GatewayConfig,
        schemas: SchemaRegistry,
        publisher: DurablePublisher,
        metrics: GatewayMetrics,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._config = config
        self._schemas = schemas
        self._metrics = metrics
        self._clock = clock
        self._dataschema = schemas.schema_id(EVENT_V1)
        self._sender = DurableSender(publisher, metrics,
                                     retry_after=config.publish_timeout_seconds)

    async def accept(
        self,
        kind: CallbackKind,
        body: bytes,
        decoded: Decoded | Rejection,
        *,
        content_type: str | None,
        task_ref: str | None = None,
        traceparent: str | None = None,
    ) -> Outcome:
        """Publish a verified body: as an event when valid, else on the rejected topic."""
        received_at = self._clock()
        result: CallbackEvent | Rejection
        if isinstance(decoded, Rejection):
            result = decoded
        else:
            result = normalize(
                decoded, body, kind=kind, received_at=received_at, schemas=self._schemas,
                provider_tz=self._config.provider_timezone, task_ref=task_ref,
            )
        trace = [kafka_header(traceparent)] if traceparent else []
        if isinstance(result, Rejection):
            return await self._reject(kind, result, body, received_at=received_at,
                                      content_type=content_type, trace=trace)
        return await self._publish_event(result, trace)

    async def _publish_event(self, event: CallbackEvent, trace: Headers) -> Outcome:
        structlog.contextvars.bind_contextvars(
            task_id=event.task_id, event_id=event.event_id, stage=event.stage,
        )
        headers = cloudevent_headers(event, dataschema=self._dataschema) + trace
        sent = await self._sender.send(
            "events", self._config.topics.events, key=event.task_id.encode(),
            value=orjson.dumps(event.data), headers=headers,
        )
        if isinstance(sent, Outcome):
            return sent
        self._metrics.child(self._metrics.events, event.kind, event.stage).inc()
        return Outcome(200, {"status": "received", "event_id": event.event_id, **spooled(sent)})

    async def _reject(
        self, kind: CallbackKind, rejection: Rejection, body: bytes, *, received_at: datetime,
        content_type: str | None, trace: Headers,
    ) -> Outcome:
        structlog.contextvars.bind_contextvars(
            task_id=rejection.task_id, reason=rejection.reason,
            error_paths=[error.path for error in rejection.errors][:5],
        )
        value = rejected_value(
            rejection, body, received_at=received_at, content_type=content_type, kind=kind.name,
        )
        sent = await self._sender.send(
            "rejected", self._config.topics.rejected,
            key=rejection.task_id.encode() if rejection.task_id else None,
            value=orjson.dumps(value),
            headers=[("content-type", b"application/json"),
                     ("reason", rejection.reason.encode()), *trace],
        )
        if isinstance(sent, Outcome):
            return sent
        self._metrics.rejections.labels(rejection.reason).inc()
        return Outcome(400, {
            "error": rejection.reason,
            "message": "the callback was not accepted; it is kept on the rejected topic",
            "errors": value["errors"],
            "kept": True,
            **spooled(sent),
        })

class DurableSender:
    """Publish one record through the durable publisher and account for it: the Ack, or
    the 503 answer (with ``Retry-After``) when neither the broker nor the spool kept it.
    Shared by everything the callback port accepts (callbacks, rejected bodies, tasks)."""

    def __init__(self, publisher: DurablePublisher, metrics: GatewayMetrics, *,
                 retry_after: float, noun: str = "callback") -> None:
        """``noun``: what the 503 answer says could not be kept."""
        self.publisher = publisher
        self._metrics = metrics
        self._retry_after = str(max(1, math.ceil(retry_after)))
        self._noun = noun

    async def send(
        self, role: str, topic: str, *, key: bytes | None, value: bytes, headers: Headers,
    ) -> Ack | Outcome:
        """``role`` names the topic in metrics (events, rejected, tasks)."""
        metrics = self._metrics
        started = time.perf_counter()
        try:
            ack = await self.publisher.publish(topic, key=key, value=value, headers=headers)
        except PublishError as exc:
            metrics.child(metrics.publish_failures, role, exc.reason).inc()
            structlog.contextvars.bind_contextvars(publish_error=exc.reason)
            kept_by = "the spool" if exc.reason.startswith("spool") else "the broker"
            return Outcome(
                503,
                {"error": exc.reason,
                 "message": f"{kept_by} could not keep the {self._noun}; retry later"},
                {"Retry-After": self._retry_after},
            )
        if ack.broker_failure is not None:
            metrics.child(metrics.publish_failures, role, ack.broker_failure).inc()
            structlog.contextvars.bind_contextvars(publish_error=ack.broker_failure)
        if ack.spooled:
            metrics.child(metrics.spooled, role).inc()
            structlog.contextvars.bind_contextvars(spooled=True)
        else:
            metrics.child(metrics.publish_duration, role).observe(
                time.perf_counter() - started)
        return ack


def spooled(ack: Ack) -> dict[str, bool]:
    """``"spooled": true`` in the answer when the spool (not yet the broker) has the record."""
    return {"spooled": True} if ack.spooled else {}
