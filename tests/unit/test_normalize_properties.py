"""Property tests: any body yields an event or a rejection, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.contracts.codec import EVENT_V1, REJECTED_V1, SchemaCodec
from service.core.model import CallbackEvent, Rejection
from service.core.normalize import decode, normalize
from service.core.records import body_from_rejected, rejected_value

CODEC = SchemaCodec.load()
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
optional_text = st.none() | st.text(max_size=30)
tracks = st.fixed_dictionaries({}, optional={
    "id": optional_text, "audio_url": optional_text, "source_audio_url": optional_text,
    "image_url": optional_text, "title": optional_text, "tags": optional_text,
    "prompt": optional_text, "model_name": optional_text,
    "createTime": st.none() | st.text(max_size=25) | st.integers(-(2**62), 2**62),
    "duration": st.none() | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-1000, 10**6),
    "extra": json_values,
})
callbacks = st.fixed_dictionaries(
    {"code": st.sampled_from([200, 400, 451, 500, 531]) | st.integers(),
     "data": st.fixed_dictionaries(
         {"callbackType": st.sampled_from(["text", "first", "complete", "error", "failed"])
          | st.text(max_size=10)},
         optional={"task_id": optional_text, "taskId": optional_text,
                   "data": st.none() | st.lists(tracks, max_size=3), "error": optional_text})},
    optional={"msg": optional_text, "task_id": optional_text, "more": json_values},
)


def outcome(body: bytes) -> CallbackEvent | Rejection:
    decoded = decode(body)
    if isinstance(decoded, Rejection):
        return decoded
    return normalize(decoded, body, received_at=RECEIVED, codec=CODEC, provider_tz=UTC)


def check(body: bytes) -> CallbackEvent | Rejection:
    result = outcome(body)
    if isinstance(result, CallbackEvent):
        assert CODEC.errors(EVENT_V1, result.data) == [], result.data
        again = outcome(body)
        assert isinstance(again, CallbackEvent)
        assert again.event_id == result.event_id  # stable under re-delivery
    else:
        value = rejected_value(result, body, received_at=RECEIVED, content_type=None,
                               source="/callbacks/extend-music")
        assert CODEC.errors(REJECTED_V1, value) == []
        assert body_from_rejected(value) == body
    return result


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_give_an_event_or_a_kept_rejection(body: bytes) -> None:
    check(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_gives_an_event_or_a_kept_rejection(document: Any) -> None:
    check(orjson.dumps(document))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(callbacks)
def test_callback_shaped_documents_give_valid_events_or_precise_rejections(
    document: dict[str, Any],
) -> None:
    # stdlib json writes integers beyond 64 bits, which orjson reads back as floats
    result = check(json.dumps(document).encode())
    if isinstance(result, Rejection):
        assert result.reason in {"schema_violation", "missing_task_id", "unknown_callback_type"}
