"""W3C trace context across the three processes, through the OpenTelemetry API.

The gateway continues the caller's ``traceparent`` (or starts a trace), and
every record it publishes carries the result as the ``traceparent`` Kafka
header, the OpenTelemetry messaging convention for Kafka. Each consumer reads
that header and binds ``trace_id`` to its per-message log context, so one
task can be followed through the gateway, the archiver and the metrics
consumer by a single id.

Only the API is used (``TraceContextTextMapPropagator``, ``NonRecordingSpan``):
nothing is recorded or exported. The gateway's hop gets its own span id, so the
forwarded ``traceparent`` names the gateway as the parent, as an SDK would.

Gateway::

    traceparent, trace_id = start_or_continue(request.headers.get("traceparent"))
    structlog.contextvars.bind_contextvars(trace_id=trace_id)
    headers.append(kafka_header(traceparent))

Consumers (inside the per-message task, whose context is its own)::

    bind_trace_from_kafka(record.headers)
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import Final

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN_ID,
    INVALID_TRACE_ID,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    format_span_id,
    format_trace_id,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT: Final = "traceparent"
# A traceparent is 55 characters; a longer header value is not one (future
# versions may append fields, which the propagator accepts, within reason).
_MAX_HEADER_BYTES: Final = 512

_PROPAGATOR: Final = TraceContextTextMapPropagator()
# The plain version-00 form every record of ours carries: read without the propagator
# (a tenth of its cost, per consumed record). Anything else still goes through it.
_PLAIN_TRACEPARENT: Final = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE_ID: Final = b"0" * 32
_ZERO_SPAN_ID: Final = b"0" * 16


def extract_context(headers: Mapping[str, str]) -> Context:
    """The OpenTelemetry context carried by HTTP-style headers (``traceparent``, ``tracestate``).

    Works with any mapping whose ``get`` finds the lower-case names, e.g. aiohttp's
    case-insensitive ``request.headers``.
    """
    return _PROPAGATOR.extract(headers)


def remote_span_context(context: Context) -> SpanContext | None:
    """The valid span context in ``context``, or None."""
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def start_or_continue(traceparent: str | None, tracestate: str | None = None,
                      ) -> tuple[str, str]:
    """``(traceparent to forward, trace id)`` for one hop.

    A valid ``traceparent`` is continued: same trace id, flags and ``tracestate``,
    a new span id for this hop. Anything else (absent, malformed, all-zero ids)
    starts a new trace with random ids, sampled like an SDK's default sampler.
    """
    if not traceparent:
        # The common case (the provider sends no trace context), on every request's path:
        # the header the propagator would write, without building a context to write it.
        trace_id = format_trace_id(_random_id(128))
        return f"00-{trace_id}-{format_span_id(_random_id(64))}-01", trace_id
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    parent = remote_span_context(extract_context(carrier))
    if parent is not None:
        span_context = SpanContext(
            trace_id=parent.trace_id, span_id=_random_id(64), is_remote=False,
            trace_flags=parent.trace_flags, trace_state=parent.trace_state,
        )
    else:
        span_context = SpanContext(
            trace_id=_random_id(128), span_id=_random_id(64), is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out, context=trace.set_span_in_context(NonRecordingSpan(span_context)))
    return out[TRACEPARENT], format_trace_id(span_context.trace_id)


def kafka_header(traceparent: str) -> tuple[str, bytes]:
    """The Kafka record header that carries ``traceparent``."""
    return (TRACEPARENT, traceparent.encode("ascii"))


def from_kafka_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The trace id (32 lower-case hex) of a record's ``traceparent`` header, or None.

    Never raises: a missing, non-ASCII, oversized or malformed header is None.
    """
    value: bytes | None = None
    for name, raw in headers or ():
        if name == TRACEPARENT:
            value = raw  # the last one wins, as for repeated HTTP headers
    if value is None or len(value) > _MAX_HEADER_BYTES:
        return None
    plain = _PLAIN_TRACEPARENT.fullmatch(value)
    if plain is not None:
        trace_id, span_id = plain.groups()
        if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
            return None  # invalid ids, as the propagator says
        return trace_id.decode("ascii")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    span_context = remote_span_context(extract_context({TRACEPARENT: text}))
    return format_trace_id(span_context.trace_id) if span_context is not None else None


def bind_trace_from_kafka(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """Bind ``trace_id`` to the structlog context of the current message; return it.

    Call it at the start of a processor's ``process(record)``: the consumer runs each
    message in its own asyncio task, so the binding stays with that message's lines.
    """
    trace_id = from_kafka_headers(headers)
    if trace_id is not None:
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
    else:
        structlog.contextvars.unbind_contextvars("trace_id")
    return trace_id


def _random_id(bits: int) -> int:
    invalid = INVALID_TRACE_ID if bits == 128 else INVALID_SPAN_ID
    while True:
        # Not secrets: ids need to be unique, not unpredictable (the OpenTelemetry SDK's
        # generator uses random too), and secrets costs a system call per id.
        value = random.getrandbits(bits)
        if value != invalid:
            return value
