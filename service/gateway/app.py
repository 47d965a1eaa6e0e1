"""``create_app(config)``: the gateway's public callback application.

Typed ``web.AppKey``s hold the clients; each client has one ``cleanup_ctx``
that starts it and, on shutdown, flushes and closes it. Every registered callback
kind gets its route, ``POST /callbacks/<kind>``, whose one-line handler runs the one
pipeline (read, decode, verify, normalize, publish); any other path is a 404 that
publishes nothing. The spool's cleanup, registered after the producer's, runs first:
its forwarder stops before the producer. ``POST /tasks`` takes submitted tasks for the
reconciler, behind the same guard (``service.gateway.tasks``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from service.config.gateway import GatewayConfig
from service.contracts.registry import SchemaRegistry
from service.core.kinds import KINDS, CallbackKind
from service.core.normalize import decode
from service.gateway.guard import Guard, make_guard_middleware
from service.gateway.http import Handler, json_answer, make_request_middleware, read_body
from service.gateway.ingest import CallbackIngest, DurableSender, Outcome
from service.gateway.metrics import GatewayMetrics
from service.gateway.tasks import ROUTE as TASKS_ROUTE
from service.gateway.tasks import TaskIntake, read_task, task_id_of
from service.kafka.durable import DurablePublisher
from service.kafka.producer import KafkaPublisher
from service.observability.tracing import start_or_continue
from service.spool.forwarder import Forwarder
from service.spool.lifecycle import forwarding
from service.spool.metrics import SpoolCollector
from service.spool.store import Spool

log = structlog.get_logger(__name__)

CONFIG_KEY: Final = web.AppKey("config", GatewayConfig)
PUBLISHER_KEY: Final = web.AppKey("publisher", KafkaPublisher)
INGEST_KEY: Final = web.AppKey("ingest", CallbackIngest)
METRICS_KEY: Final = web.AppKey("metrics", GatewayMetrics)
GUARD_KEY: Final = web.AppKey("guard", Guard)
DURABLE_KEY: Final = web.AppKey("durable", DurablePublisher)
FORWARDER_KEY: Final = web.AppKey("forwarder", Forwarder)
TASKS_KEY: Final = web.AppKey("tasks", TaskIntake)


async def receive_callback(request: web.Request, kind: CallbackKind) -> web.Response:
    """The pipeline every kind shares. A refusal (size, time, verification, rate) raises
    before anything reaches a topic; the error middleware answers it."""
    traceparent = _continue_trace(request, kind=kind.name)
    body = await _read_body(request)
    decoded = decode(body, kind)
    verified = request.app[GUARD_KEY].verify(request, body, decoded.task_id)
    return _answer(await request.app[INGEST_KEY].accept(
        kind, body, decoded, content_type=request.content_type,
        task_ref=verified.task_ref, traceparent=traceparent))


async def receive_task(request: web.Request) -> web.Response:
    """``POST /tasks``: verified like a callback, then put on the tasks topic."""
    traceparent = _continue_trace(request)
    body = await _read_body(request)
    task = read_task(body, request.app[TASKS_KEY].schemas)
    verified = request.app[GUARD_KEY].verify(request, body, task_id_of(task))
    return _answer(await request.app[TASKS_KEY].accept(
        task, task_ref=verified.task_ref, traceparent=traceparent))


def _continue_trace(request: web.Request, **context: str) -> str:
    """The request's trace (continued, else a new one) bound to its log line; returns
    the ``traceparent`` its record carries."""
    traceparent, trace_id = start_or_continue(request.headers.get("traceparent"),
                                              request.headers.get("tracestate"))
    structlog.contextvars.bind_contextvars(trace_id=trace_id, **context)
    return traceparent


async def _read_body(request: web.Request) -> bytes:
    config = request.app[CONFIG_KEY]
    return await read_body(request, config.max_body_bytes,
                           config.security.body_read_timeout_seconds)


def _answer(outcome: Outcome) -> web.Response:
    return json_answer(outcome.body, status=outcome.status, headers=outcome.headers)


def callback_handler(kind: CallbackKind) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        return await receive_callback(request, kind)

    return handle


async def _publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    publisher = app[PUBLISHER_KEY]
    await publisher.start()
    yield
    # Flushes buffered records before closing, bounded: every record it may still hold
    # was answered 503 or is in the spool, so giving up costs a duplicate at most.
    await publisher.stop(flush_timeout=app[CONFIG_KEY].process.shutdown_timeout_seconds)


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    forwarder = app.get(FORWARDER_KEY)
    if forwarder is None:
        log.warning("spool_disabled", detail="SPOOL_DIR is not set: while the broker is down "
                    "callbacks are answered 503")
        yield
        return
    async with forwarding(forwarder):
        yield


def build_publisher(config: GatewayConfig) -> KafkaPublisher:
    return KafkaPublisher(config.kafka, config.producer)


def build_spool(config: GatewayConfig) -> Spool | None:
    if config.spool.directory is None:
        return None
    return Spool(config.spool.directory, max_bytes=config.spool.max_bytes)


def create_app(
    config: GatewayConfig,
    *,
    registry: CollectorRegistry | None = None,
    schemas: SchemaRegistry | None = None,
    publisher: KafkaPublisher | None = None,
) -> web.Application:
    registry = registry if registry is not None else CollectorRegistry()
    metrics = GatewayMetrics(registry)
    publisher = publisher if publisher is not None else build_publisher(config)
    guard = Guard(config.security, metrics)
    # Read at scrape time from the guard's own count: no gauge update on every request.
    metrics.in_flight.set_function(lambda: guard.in_flight)
    app = web.Application(
        middlewares=[make_request_middleware(metrics), make_guard_middleware(guard)],
        client_max_size=config.max_body_bytes + 1,
    )
    app[GUARD_KEY] = guard
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    app[PUBLISHER_KEY] = publisher
    spool = build_spool(config)
    forwarder = Forwarder(spool, publisher) if spool is not None else None
    if forwarder is not None:
        app[FORWARDER_KEY] = forwarder
    registry.register(SpoolCollector(spool, forwarder))
    app[DURABLE_KEY] = durable = DurablePublisher(
        publisher, spool, deadline=config.publish_timeout_seconds,
        broker_budget=config.spool.after_seconds,
        largest_record_bytes=config.spool.largest_record_bytes,
    )
    schemas = schemas or SchemaRegistry.load()
    app[INGEST_KEY] = CallbackIngest(
        config=config, schemas=schemas, publisher=durable, metrics=metrics,
    )
    app[TASKS_KEY] = TaskIntake(
        config=config, schemas=schemas,
        sender=DurableSender(durable, metrics, retry_after=config.publish_timeout_seconds,
                             noun="task"))
    app.cleanup_ctx.append(_publisher_ctx)
    app.cleanup_ctx.append(_spool_ctx)
    for kind in KINDS:
        app.router.add_post(kind.route, callback_handler(kind))
    app.router.add_post(TASKS_ROUTE, receive_task)
    return app
