"""Normalization of extend-music's documented and observed variants (pure, no I/O).

The other kinds, and what every kind shares, are pinned in tests/unit/test_kinds.py.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import kind_named
from service.core.kinds.tracks import split_tags
from service.core.model import CallbackEvent, Decoded, Rejection
from service.core.normalize import decode, event_id_for
from service.core.records import body_from_rejected, rejected_value
from service.core.timefmt import parse_create_time
from tests.harness.examples import example_bytes
from tests.harness.factories import normalized

SCHEMAS = SchemaRegistry.load()
RECEIVED = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
EXTEND_MUSIC = kind_named("extend-music")


def run(body: bytes, tz: str = "UTC") -> CallbackEvent | Rejection:
    return normalized(body, EXTEND_MUSIC, received_at=RECEIVED, provider_tz=ZoneInfo(tz))


def accepted(body: bytes, tz: str = "UTC") -> CallbackEvent:
    result = run(body, tz)
    assert isinstance(result, CallbackEvent), result
    assert SCHEMAS.errors(EVENT_V1, result.data) == []
    return result


def rejected(body: bytes) -> Rejection:
    result = run(body)
    assert isinstance(result, Rejection), result
    return result


def test_documented_example_becomes_the_documented_event() -> None:
    body = example_bytes("documented-complete.json")
    event = accepted(body)
    assert event.data == {
        "event_id": event_id_for("2fac****9f72", "complete", body),
        "task_id": "2fac****9f72",
        "kind": "extend-music",
        "stage": "complete",
        "code": 200,
        "message": "All generated successfully.",
        "received_at": "2026-11-25T10:00:00.123456Z",
        "error": None,
        "tracks": [{
            "id": "8551****662c",
            "title": "Iron Man",
            "prompt": "[Verse] Night city lights shining bright",
            "model_name": "chirp-v3-5",
            "tags": ["electrifying", "rock"],
            "duration_seconds": 228.28,
            "created_at": "2025-01-01T00:00:00Z",
            "audio_url": "https://example.cn/****.mp3",
            "source_audio_url": "https://example.cn/****.mp3",
            "stream_audio_url": "https://example.cn/****",
            "source_stream_audio_url": "https://example.cn/****",
            "image_url": "https://example.cn/****.jpeg",
            "source_image_url": "https://example.cn/****.jpeg",
        }],
        "files": [
            {"role": "audio", "url": "https://example.cn/****.mp3",
             "fallback_url": "https://example.cn/****", "track_id": "8551****662c"},
            {"role": "cover", "url": "https://example.cn/****.jpeg", "fallback_url": None,
             "track_id": "8551****662c"},
        ],
        "raw": orjson.loads(body),
    }


def test_event_id_is_sha256_of_task_stage_and_exact_body() -> None:
    body = example_bytes("documented-complete.json")
    expected = hashlib.sha256(b"2fac****9f72\ncomplete\n" + body).hexdigest()[:32]
    assert accepted(body).event_id == expected


def test_redelivery_of_same_bytes_gets_same_id_and_other_bytes_another() -> None:
    body = example_bytes("documented-complete.json")
    assert accepted(body).event_id == accepted(body).event_id
    assert accepted(body + b"\n").event_id != accepted(body).event_id


def test_text_stage_has_no_tracks() -> None:
    event = accepted(example_bytes("real-text.json"))
    assert (event.stage, event.data["tracks"], event.data["files"]) == ("text", [], [])


def test_first_with_pending_tracks_keeps_them_with_null_urls_and_duration() -> None:
    """The pending track is listed, but yields no audio file: its stream is partial."""
    event = accepted(example_bytes("real-first-partial.json"))
    ready, pending = event.data["tracks"]
    assert ready["tags"] == ["synthwave", "dreamy"]
    assert ready["duration_seconds"] == 182
    assert ready["created_at"] == "2025-09-16T17:44:24.461000Z"
    assert pending["audio_url"] is None
    assert pending["source_audio_url"] is None
    assert pending["duration_seconds"] is None
    assert pending["tags"] == []
    assert pending["stream_audio_url"] == "https://cdn.provider.example/stream/t-002"
    assert [(f["role"], f["track_id"]) for f in event.data["files"]] == [
        ("audio", "t-001"), ("cover", "t-001"), ("cover", "t-002")]


def test_failed_alias_taskid_alias_and_null_track_list() -> None:
    event = accepted(example_bytes("variant-failed-taskId-null-data.json"))
    assert (event.task_id, event.stage, event.data["tracks"]) == ("c0ffee00beef", "error", [])
    assert event.data["error"] == "audio generation failed"
    assert event.data["code"] == 531


def test_top_level_task_id_and_non_200_code_is_error_stage() -> None:
    event = accepted(example_bytes("variant-top-level-task-id.json"))
    assert (event.task_id, event.stage) == ("top-level-7781", "error")


@pytest.mark.parametrize("callback_type", ["text", "first", "complete"])
def test_any_stage_with_a_non_200_code_is_an_error(callback_type: str) -> None:
    body = orjson.dumps({"code": 501, "msg": "x",
                         "data": {"callbackType": callback_type, "task_id": "t", "data": []}})
    assert accepted(body).stage == "error"


def test_undocumented_fields_are_accepted_and_kept_in_raw() -> None:
    body = orjson.dumps({"code": 200, "msg": "ok", "new_top": 1, "data": {
        "callbackType": "complete", "task_id": "t", "extra": [1, 2],
        "data": [{"id": "a", "x": {}}]}})
    assert accepted(body).data["raw"]["new_top"] == 1


def test_provider_timezone_is_applied_to_zone_less_create_time() -> None:
    body = example_bytes("documented-complete.json")
    event = accepted(body, tz="Asia/Shanghai")
    assert event.data["tracks"][0]["created_at"] == "2024-12-31T16:00:00Z"


@pytest.mark.parametrize(("value", "expected"), [
    ("2025-01-01 00:00:00", "2025-01-01T00:00:00Z"),
    (1758044664461, "2025-09-16T17:44:24.461000Z"),
    ("1758044664461", "2025-09-16T17:44:24.461000Z"),
    (1758044664, "2025-09-16T17:44:24Z"),
    ("2025-01-01T08:00:00+08:00", "2025-01-01T00:00:00Z"),
    ("", None), ("yesterday", None), (None, None), (True, None), (10**30, None),
])
def test_create_time_forms(value: object, expected: str | None) -> None:
    assert parse_create_time(value, UTC) == expected


@pytest.mark.parametrize(("tags", "expected"), [
    ("electrifying, rock", ["electrifying", "rock"]), ("", []), (" , ,", []),
    ("solo", ["solo"]), (None, []), (42, []),
])
def test_tags_split_into_trimmed_non_empty_strings(tags: object, expected: list[str]) -> None:
    assert split_tags(tags) == expected


def test_missing_task_id_is_rejected_not_guessed() -> None:
    body = orjson.dumps({"code": 200, "msg": "", "data": {"callbackType": "complete", "data": []}})
    rejection = rejected(body)
    assert rejection.reason == "missing_task_id"
    assert rejection.errors[0].path == "/data/task_id"


def test_unknown_callback_type_is_rejected_with_the_task_id() -> None:
    body = orjson.dumps({"code": 200, "data": {"callbackType": "second", "task_id": "t9"}})
    rejection = rejected(body)
    assert (rejection.reason, rejection.task_id) == ("unknown_callback_type", "t9")


def test_schema_violation_lists_failing_paths() -> None:
    body = orjson.dumps({"code": "200", "data": {"callbackType": "complete", "task_id": "t",
                                                 "data": [{"duration": "long"}]}})
    rejection = rejected(body)
    assert rejection.reason == "schema_violation"
    assert {e.path for e in rejection.errors} == {"/code", "/data/data/0/duration"}
    assert rejection.task_id == "t"


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe{}", "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b'"a string"', "not_an_object"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "too_deep"),
    (b"[" * 5000 + b"]" * 5000, "too_deep"),
])
def test_undecodable_bodies_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    assert rejected(body).reason == reason


def test_utf8_bom_is_tolerated() -> None:
    body = b"\xef\xbb\xbf" + example_bytes("real-text.json")
    assert accepted(body).stage == "text"


def test_rejected_record_keeps_the_body_and_replay_yields_the_first_delivery_id() -> None:
    """Replaying a rejected record's body gives the id a first delivery would have had."""
    good = example_bytes("documented-complete.json")
    for body in (good, b"\xff" + good):
        rejection = Rejection("schema_violation", (), "2fac****9f72")
        value = rejected_value(rejection, body, received_at=RECEIVED,
                               content_type="application/json", kind="extend-music")
        assert SCHEMAS.errors("music.callbacks.rejected.v1", value) == []
        assert body_from_rejected(orjson.loads(orjson.dumps(value))) == body
    assert accepted(body_from_rejected(value | {"body": good.decode(), "encoding": "utf-8"})
                    ).event_id == accepted(good).event_id


def test_decode_reads_task_id_even_when_validation_fails() -> None:
    decoded = decode(orjson.dumps({"code": "bad", "data": {"taskId": "abc"}}), EXTEND_MUSIC)
    assert isinstance(decoded, Decoded)
    assert decoded.task_id == "abc"
