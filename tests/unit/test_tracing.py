"""W3C trace context helpers: continue or start at the gateway, read back in consumers."""

from __future__ import annotations

import re

import pytest
import structlog
from multidict import CIMultiDict

from service.observability.tracing import (
    bind_trace_from_kafka,
    extract_context,
    from_kafka_headers,
    kafka_header,
    remote_span_context,
    start_or_continue,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{SPAN_ID}-01"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def test_a_valid_traceparent_is_continued_with_a_new_span_for_this_hop() -> None:
    forwarded, trace_id = start_or_continue(INCOMING)
    match = TRACEPARENT.match(forwarded)
    assert match is not None
    assert trace_id == TRACE_ID
    assert match.group(1) == TRACE_ID
    assert match.group(2) not in (SPAN_ID, "0" * 16)  # the gateway is the parent downstream
    assert match.group(3) == "01"  # the caller's sampling decision is kept


def test_an_unsampled_caller_stays_unsampled() -> None:
    forwarded, _ = start_or_continue(f"00-{TRACE_ID}-{SPAN_ID}-00")
    assert forwarded.endswith("-00")


@pytest.mark.parametrize("incoming", [
    None, "", "garbage", f"00-{'0' * 32}-{SPAN_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01",
    f"ff-{TRACE_ID}-{SPAN_ID}-01", f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",
])
def test_anything_but_a_valid_traceparent_starts_a_new_trace(incoming: str | None) -> None:
    forwarded, trace_id = start_or_continue(incoming)
    match = TRACEPARENT.match(forwarded)
    assert match is not None
    assert match.group(1) == trace_id
    assert trace_id not in (TRACE_ID, "0" * 32)
    assert start_or_continue(incoming)[1] != trace_id  # random ids: each start is a new trace


def test_http_headers_are_read_case_insensitively() -> None:
    headers = CIMultiDict({"TraceParent": INCOMING})
    span_context = remote_span_context(extract_context(headers))
    assert span_context is not None
    assert f"{span_context.trace_id:032x}" == TRACE_ID


def test_the_kafka_header_round_trips_the_trace_id() -> None:
    forwarded, trace_id = start_or_continue(INCOMING)
    name, value = kafka_header(forwarded)
    assert name == "traceparent"
    assert from_kafka_headers([("ce_id", b"x"), (name, value)]) == trace_id == TRACE_ID


@pytest.mark.parametrize("headers", [
    None, [], [("ce_id", b"x")], [("traceparent", None)], [("traceparent", b"\xff\xfe")],
    [("traceparent", b"nope")], [("Traceparent", INCOMING.encode())],
    [("traceparent", INCOMING.encode() + b"-" + b"a" * 600)],
])
def test_consumers_get_none_for_a_missing_or_bad_header(
    headers: list[tuple[str, bytes | None]] | None,
) -> None:
    assert from_kafka_headers(headers) is None


def test_binding_puts_the_trace_id_in_the_log_context_and_clears_a_stale_one() -> None:
    structlog.contextvars.clear_contextvars()
    try:
        assert bind_trace_from_kafka([("traceparent", INCOMING.encode())]) == TRACE_ID
        assert structlog.contextvars.get_contextvars()["trace_id"] == TRACE_ID
        assert bind_trace_from_kafka([]) is None
        assert "trace_id" not in structlog.contextvars.get_contextvars()
    finally:
        structlog.contextvars.clear_contextvars()


@pytest.mark.parametrize("value", [
    INCOMING, f"00-{TRACE_ID}-{SPAN_ID}-00", f"00-{'0' * 32}-{SPAN_ID}-01",
    f"00-{TRACE_ID}-{'0' * 16}-01", f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",
    f"01-{TRACE_ID}-{SPAN_ID}-01-future", f"ff-{TRACE_ID}-{SPAN_ID}-01",
    f"00-{TRACE_ID}-{SPAN_ID}-01-extra", f" {INCOMING} ", f"00-{TRACE_ID}-{SPAN_ID}-1",
])
def test_the_fast_reading_of_kafka_headers_agrees_with_the_propagator(value: str) -> None:
    span_context = remote_span_context(extract_context({"traceparent": value}))
    expected = f"{span_context.trace_id:032x}" if span_context is not None else None
    assert from_kafka_headers([("traceparent", value.encode())]) == expected
