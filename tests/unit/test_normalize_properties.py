"""Property tests: any body, on any kind's route, yields an event or a rejection, never an
exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.contracts.registry import EVENT_V1, REJECTED_V1, SchemaRegistry
from service.core.kinds import KINDS, CallbackKind, kind_named
from service.core.kinds.midi import NOTE_FIELDS
from service.core.kinds.vocal_separation import STEMS
from service.core.model import CallbackEvent, Rejection
from service.core.records import body_from_rejected, rejected_value
from tests.harness.factories import normalized

SCHEMAS = SchemaRegistry.load()
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
TRACKS = kind_named("extend-music")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
optional_text = st.none() | st.text(max_size=30)
urls = st.none() | st.sampled_from(["", " ", "https://example.com/a", "https://example.com/b"]) \
    | st.text(max_size=12)
tracks = st.fixed_dictionaries({}, optional={
    "id": optional_text, "audio_url": urls, "source_audio_url": urls, "stream_audio_url": urls,
    "image_url": urls, "source_image_url": urls, "title": optional_text, "tags": optional_text,
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


def outcome(body: bytes, kind: CallbackKind) -> CallbackEvent | Rejection:
    return normalized(body, kind, received_at=RECEIVED)


def check(body: bytes, kind: CallbackKind = TRACKS) -> CallbackEvent | Rejection:
    result = outcome(body, kind)
    if isinstance(result, CallbackEvent):
        assert SCHEMAS.errors(EVENT_V1, result.data) == [], result.data
        assert result.data["kind"] == kind.name
        again = outcome(body, kind)
        assert isinstance(again, CallbackEvent)
        assert again.event_id == result.event_id  # stable under re-delivery
    else:
        value = rejected_value(result, body, received_at=RECEIVED, content_type=None,
                               kind=kind.name)
        assert SCHEMAS.errors(REJECTED_V1, value) == []
        assert body_from_rejected(value) == body
    return result


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_give_an_event_or_a_kept_rejection(body: bytes) -> None:
    check(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(KINDS))
def test_any_json_on_any_kind_gives_an_event_or_a_kept_rejection(
    document: Any, kind: CallbackKind,
) -> None:
    check(orjson.dumps(document), kind)


def check_files(event: CallbackEvent) -> None:
    """files[]: non-blank URLs, a fallback that differs, track files keyed by a track id."""
    track_ids = {track["id"] for track in event.data["tracks"]}
    for entry in event.data["files"]:
        assert entry["url"].strip()
        assert entry["fallback_url"] != entry["url"]
        assert entry["fallback_url"] is None or entry["fallback_url"].strip()
        assert (entry["track_id"] in track_ids) == (entry["role"] in {"audio", "cover"})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(callbacks, st.sampled_from([kind for kind in KINDS if kind.schema == TRACKS.schema]))
def test_callback_shaped_documents_give_valid_events_or_precise_rejections(
    document: dict[str, Any], kind: CallbackKind,
) -> None:
    # stdlib json writes integers beyond 64 bits, which orjson reads back as floats
    result = check(json.dumps(document).encode(), kind)
    if isinstance(result, Rejection):
        assert result.reason in {"schema_violation", "missing_task_id", "unknown_callback_type"}
    else:
        check_files(result)
        if result.stage in {"text", "first"}:  # a track not ready yields no audio
            ready = {t["id"] for t in result.data["tracks"] if t["audio_url"] is not None}
            assert all(f["track_id"] in ready for f in result.data["files"]
                       if f["role"] == "audio")


note_values = st.none() | st.booleans() | st.integers(-(2**70), 2**70) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8) \
    | st.sampled_from(["0.5", " 7 ", "1e400", "nan", "-3", "7.0"])
notes = st.fixed_dictionaries({}, optional=dict.fromkeys(NOTE_FIELDS, note_values))
stem_fields = st.sampled_from([f"{stem}_url" for stem in STEMS] + ["piano_url", "backingVocalsUrl"])
one_shot_data = st.fixed_dictionaries({}, optional={
    "task_id": optional_text, "taskId": optional_text, "error": optional_text,
    "callbackType": st.sampled_from(["complete", "first", "text", "error", "failed"])
    | st.text(max_size=6),
    "images": st.none() | st.lists(urls, max_size=3),
    "audioWavUrl": urls, "audio_wav_url": urls, "video_url": urls, "videoUrl": urls,
    "vocal_removal_info": st.none() | st.dictionaries(stem_fields, urls, max_size=5),
    "vocal_separation_info": st.none() | st.dictionaries(stem_fields, urls, max_size=5),
    "data": st.none() | st.lists(st.fixed_dictionaries({}, optional={
        "text": optional_text, "title": optional_text, "status": optional_text,
        "errorMessage": optional_text, "error_message": optional_text}), max_size=3),
    "state": optional_text,
    "instruments": st.none() | st.lists(st.fixed_dictionaries({}, optional={
        "name": optional_text, "notes": st.none() | st.lists(notes, max_size=4)}), max_size=3),
    "more": json_values,
})
one_shot_callbacks = st.fixed_dictionaries(
    {"code": st.sampled_from([200, 200, 400, 500, 501])},
    optional={"msg": optional_text, "task_id": optional_text, "data": st.none() | one_shot_data},
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(one_shot_callbacks, st.sampled_from([kind for kind in KINDS
                                            if kind.schema != TRACKS.schema]))
def test_one_shot_documents_give_the_kinds_event_shape_or_precise_rejections(
    document: dict[str, Any], kind: CallbackKind,
) -> None:
    result = check(json.dumps(document).encode(), kind)
    if isinstance(result, Rejection):
        assert result.reason in {"schema_violation", "missing_task_id", "unknown_callback_type"}
        return
    data = result.data
    check_files(result)
    assert data["tracks"] == []
    assert ("lyrics" in data) == (kind.name == "lyrics")
    assert ("midi" in data) == (kind.name == "midi")
    assert result.stage != "complete" or data["code"] == 200
    if kind.name == "midi":
        assert all(isinstance(value, int | float) and not isinstance(value, bool)
                   for instrument in data["midi"]["instruments"]
                   for note in instrument["notes"] for value in note.values())
