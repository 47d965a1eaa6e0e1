"""Record-info answers become the events a callback would have given, kind by kind
(``service.core.recovery`` and each kind's ``RecordInfo``). Pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.core.kinds import KINDS, CallbackKind, kind_named
from service.core.model import CallbackEvent, RecoveredBy, Rejection, Stage
from service.core.normalize import decode, event_id_for, normalize, normalize_recovered
from service.core.records import cloudevent_headers
from service.core.recovery import (
    HORIZON_CODE,
    Recovered,
    Status,
    horizon_callback,
    read_status,
    recovered_callback,
)
from tests.harness.paths import EXAMPLES

CODEC = SchemaRegistry.load()
RECORD_INFO = "provider-api.record-info.v1"
RECEIVED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TASK = "task-0001"


def answer(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((EXAMPLES / RECORD_INFO / name).read_bytes())
    return document


def recover(kind_name: str, document: dict[str, Any],
            recovered_by: RecoveredBy = "polling") -> CallbackEvent | Status:
    kind = kind_named(kind_name)
    result = recovered_callback(kind, document, TASK)
    if isinstance(result, Status):
        return result
    event = normalize_recovered(result.document, kind=kind, recovered_by=recovered_by,
                                received_at=RECEIVED, schemas=CODEC, provider_tz=UTC)
    assert isinstance(event, CallbackEvent), event
    assert CODEC.errors(EVENT_V1, event.data) == []
    return event


def event_of(kind_name: str, name: str) -> CallbackEvent:
    event = recover(kind_name, answer(name))
    assert isinstance(event, CallbackEvent), event
    return event


def files(event: CallbackEvent) -> list[tuple[str, str, str | None]]:
    return [(f["role"], f["url"], f["track_id"]) for f in event.data["files"]]


# ---- every kind -------------------------------------------------------------------------

def test_every_kind_has_its_record_info_endpoint() -> None:
    paths = {kind.name: kind.record_info.path for kind in KINDS if kind.record_info}
    assert len(paths) == len(KINDS)
    assert {paths[name] for name in ("generate-music", "extend-music", "upload-cover",
                                     "upload-extend", "add-vocals", "add-instrumental",
                                     "mashup", "replace-section", "sounds")} == {
        "/api/v1/generate/record-info"}
    assert (paths["wav"], paths["vocal-separation"], paths["music-video"], paths["lyrics"],
            paths["midi"], paths["cover-image"]) == (
        "/api/v1/wav/record-info", "/api/v1/vocal-removal/record-info",
        "/api/v1/mp4/record-info", "/api/v1/lyrics/record-info", "/api/v1/midi/record-info",
        "/api/v1/suno/cover/record-info")


@pytest.mark.parametrize("path", sorted((EXAMPLES / RECORD_INFO).glob("*.json")),
                         ids=lambda path: path.name)
def test_every_record_info_example_is_valid(path: Any) -> None:
    assert CODEC.errors(RECORD_INFO, orjson.loads(path.read_bytes())) == []


def test_track_answer_becomes_the_complete_callback_in_snake_case() -> None:
    event = event_of("extend-music", "generate-success.json")
    assert (event.stage, event.data["code"], event.data["message"]) == ("complete", 200,
                                                                         "success")
    first = event.data["tracks"][0]
    assert first == {
        "id": "8551****662c", "title": "Iron Man",
        "prompt": "[Verse] Night city lights shining bright", "model_name": "chirp-v3-5",
        "tags": ["electrifying", "rock"], "duration_seconds": 198.44,
        "created_at": "2025-01-01T00:00:00Z", "audio_url": "https://example.cn/****.mp3",
        "source_audio_url": "https://cdn1.suno.ai/8551****662c.mp3",
        "stream_audio_url": "https://example.cn/****",
        "source_stream_audio_url": "https://audiopipe.suno.ai/?item_id=8551****662c",
        "image_url": "https://example.cn/****.jpeg",
        "source_image_url": "https://cdn2.suno.ai/image_8551****662c.jpeg"}
    assert event.data["tracks"][1]["created_at"] == "2025-01-01T00:00:00Z"  # epoch ms
    assert files(event) == [
        ("audio", "https://example.cn/****.mp3", "8551****662c"),
        ("cover", "https://example.cn/****.jpeg", "8551****662c"),
        ("audio", "https://example.cn/****2.mp3", "bd15****1873"),
        ("cover", "https://example.cn/****2.jpeg", "bd15****1873")]
    assert event.data["raw"]["data"]["task_id"] == TASK
    assert event.data["raw"]["data"]["callbackType"] == "complete"


def test_the_track_stages_follow_the_status() -> None:
    text = event_of("generate-music", "generate-text-success.json")
    assert (text.stage, files(text)) == ("text", [])
    first = event_of("generate-music", "generate-first-success.json")
    # the second track has no audio yet: only its cover, as for a real first callback
    assert first.stage == "first"
    assert files(first) == [("audio", "https://example.cn/****.mp3", "8551****662c"),
                            ("cover", "https://example.cn/****.jpeg", "8551****662c"),
                            ("cover", "https://example.cn/****2.jpeg", "bd15****1873")]
    assert recover("generate-music", answer("generate-pending.json")) == Status(
        "pending", "PENDING")


def test_callback_exception_with_the_audio_is_a_success() -> None:
    """CALLBACK_EXCEPTION: the music was generated, only the callback failed."""
    event = event_of("generate-music", "generate-callback-exception-generated.json")
    assert (event.stage, event.data["code"]) == ("complete", 200)
    assert [f[0] for f in files(event)] == ["audio", "cover"]


@pytest.mark.parametrize(("audio", "stage"), [
    (["a", "b"], "complete"), (["a", ""], "first"), (["", ""], "text"), ([], "error")])
def test_callback_exception_reads_what_the_tracks_show(audio: list[str], stage: Stage) -> None:
    tracks = [{"id": f"t{n}", "audioUrl": url, "imageUrl": f"https://i/{n}.jpeg"}
              for n, url in enumerate(audio)]
    document = {"code": 200, "msg": "success", "data": {
        "status": "CALLBACK_EXCEPTION", "response": {"sunoData": tracks}}}
    event = recover("mashup", document)
    assert isinstance(event, CallbackEvent)
    assert event.stage == stage
    if stage == "error":
        assert event.data["code"] == 500


def test_a_refused_task_is_an_error_with_the_providers_code_and_message() -> None:
    event = event_of("generate-music", "generate-sensitive-word-error.json")
    assert (event.stage, event.data["code"], event.data["message"], event.data["error"]) == (
        "error", 400, "SENSITIVE_WORD_ERROR", "The prompt contains prohibited words.")
    assert (event.data["tracks"], event.data["files"]) == ([], [])


def test_a_failure_without_a_code_gets_one_from_its_status() -> None:
    event = event_of("sounds", "generate-audio-failed-no-code.json")
    assert (event.stage, event.data["code"], event.data["error"]) == (
        "error", 501, "the provider reports GENERATE_AUDIO_FAILED")
    no_word = {"code": 200, "data": {"status": "CREATE_TASK_FAILED", "errorCode": "0"}}
    refused = recover("generate-music", no_word)
    assert isinstance(refused, CallbackEvent)
    assert refused.data["code"] == 400


def test_wav_answer_in_snake_case_becomes_the_wav_file() -> None:
    event = event_of("wav", "wav-success.json")
    assert (event.stage, files(event)) == (
        "complete", [("wav", "https://example.com/s/04e6****e727.wav", None)])
    camel = {"code": 200, "data": {"status": "SUCCESS",
                                   "response": {"audioWavUrl": "https://w/x.wav"}}}
    camel_event = recover("wav", camel)
    assert isinstance(camel_event, CallbackEvent)
    assert files(camel_event) == [("wav", "https://w/x.wav", None)]


def test_vocal_removal_answer_becomes_one_file_per_stem_we_know() -> None:
    event = event_of("vocal-separation", "vocal-removal-success.json")
    assert event.stage == "complete"
    assert files(event) == [
        ("vocal", "https://file.aiquickdraw.com/s/3d7021c9_Vocals.mp3", None),
        ("instrumental", "https://file.aiquickdraw.com/s/d92a13bf_Instrumental.mp3", None)]
    assert "pianoUrl" in event.data["raw"]["data"]["vocal_removal_info"]  # kept in raw only


def test_mp4_answer_becomes_the_video() -> None:
    event = event_of("music-video", "mp4-success.json")
    assert files(event) == [("video", "https://example.com/videos/video_847715e66259.mp4",
                             None)]


def test_lyrics_answer_becomes_the_lyrics() -> None:
    event = event_of("lyrics", "lyrics-success.json")
    assert event.stage == "complete"
    assert event.data["lyrics"] == [
        {"text": "[Verse]\nI walk the city's darkest night", "title": "Iron Man",
         "status": "complete", "error": None},
        {"text": "[Verse]\nNeon rivers, quiet streets", "title": "Night Walk",
         "status": "complete", "error": None}]
    mirror = {"code": 200, "data": {"status": "SUCCESS", "response": {"data": [
        {"text": "la", "title": "t", "status": "complete"}]}}}
    mirror_event = recover("lyrics", mirror)
    assert isinstance(mirror_event, CallbackEvent)
    assert [entry["text"] for entry in mirror_event.data["lyrics"]] == ["la"]


def test_midi_answer_with_a_numeric_flag_becomes_the_notes() -> None:
    event = event_of("midi", "midi-success.json")
    assert event.stage == "complete"
    assert [(i["name"], len(i["notes"])) for i in event.data["midi"]["instruments"]] == [
        ("Drums", 2), ("Electric Bass (finger)", 1)]
    assert event.data["raw"]["task_id"] == TASK  # midi's documented place: top level
    failed = event_of("midi", "midi-generate-failed.json")
    assert (failed.stage, failed.data["code"], failed.data["message"], failed.data["error"]) == (
        "error", 500, "3", "MIDI generation failed")
    assert failed.data["midi"] == {"instruments": []}


def test_cover_answer_becomes_the_images() -> None:
    event = event_of("cover-image", "cover-success.json")
    assert [f[0] for f in files(event)] == ["image", "image"]


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind.name in (
    "cover-image", "lyrics", "wav", "vocal-separation", "midi", "music-video")],
    ids=lambda kind: kind.name)
def test_one_shot_kinds_ignore_intermediate_statuses_and_fail_on_callback_exception_without_result(
    kind: CallbackKind,
) -> None:
    for status in (Status("text", "TEXT_SUCCESS"), Status("first", "FIRST_SUCCESS")):
        document = {"code": 200, "data": {"status": status.word}}
        assert recovered_callback(kind, document, TASK) == status  # not an event
    exception = recover(kind.name, {"code": 200, "data": {"successFlag": "CALLBACK_EXCEPTION",
                                                          "response": {}}})
    assert isinstance(exception, CallbackEvent)
    assert (exception.stage, exception.data["code"]) == ("error", 500)


@pytest.mark.parametrize(("data", "expected"), [
    ({"status": "PENDING"}, Status("pending", "PENDING")),
    ({"status": " success "}, Status("complete", "SUCCESS")),
    ({"status": "TEXT_SUCCESS"}, Status("text", "TEXT_SUCCESS")),
    ({"status": "FIRST_SUCCESS"}, Status("first", "FIRST_SUCCESS")),
    ({"status": "CALLBACK_EXCEPTION"}, Status("callback_exception", "CALLBACK_EXCEPTION")),
    ({"status": "CREATE_TASK_FAILED"}, Status("failed", "CREATE_TASK_FAILED")),
    ({"status": "GENERATE_AUDIO_FAILED"}, Status("failed", "GENERATE_AUDIO_FAILED")),
    ({"status": "SENSITIVE_WORD_ERROR"}, Status("failed", "SENSITIVE_WORD_ERROR")),
    ({"successFlag": "GENERATE_MP4_FAILED"}, Status("failed", "GENERATE_MP4_FAILED")),
    ({"successFlag": 0}, Status("pending", "0")),
    ({"successFlag": 1}, Status("complete", "1")),
    ({"successFlag": "2"}, Status("failed", "2")),
    ({"successFlag": 3}, Status("failed", "3")),
    ({"successFlag": 9}, Status("pending", "9")),
    ({"successFlag": True}, Status("pending", "")),
    ({"status": "QUEUED_SOMEWHERE"}, Status("pending", "QUEUED_SOMEWHERE")),
    ({"status": None, "successFlag": "SUCCESS"}, Status("complete", "SUCCESS")),
    ({}, Status("pending", "")),
])
def test_status_reading(data: dict[str, Any], expected: Status) -> None:
    assert read_status(data) == expected


def test_an_answer_without_data_is_pending() -> None:
    assert recovered_callback(kind_named("wav"), {"code": 200, "data": None}, TASK) == Status(
        "pending", "")


def test_success_without_the_result_is_an_error_as_for_a_callback() -> None:
    """A one-shot callback with code 200 and no result is an error; so is the answer."""
    event = recover("music-video", {"code": 200, "data": {"successFlag": "SUCCESS",
                                                          "response": {"videoUrl": ""}}})
    assert isinstance(event, CallbackEvent)
    assert event.stage == "error"


# ---- the recovered event --------------------------------------------------------------

def test_recovered_events_are_marked_and_have_their_own_source() -> None:
    event = event_of("extend-music", "generate-success.json")
    assert event.data["recovered_by"] == "polling"
    headers = dict(cloudevent_headers(event, dataschema=CODEC.schema_id(EVENT_V1)))
    assert headers["ce_source"] == b"/reconciler/extend-music"
    assert headers["ce_type"] == b"music.callback.extend-music.complete"
    assert headers["ce_id"] == event.event_id.encode()


def test_recovered_event_id_depends_on_task_stage_and_way_only() -> None:
    """A restarted reconciler recovering the same stage writes the same id, even when the
    provider signs its URLs afresh for every answer."""
    one = event_of("extend-music", "generate-success.json")
    document = answer("generate-success.json")
    document["data"]["response"]["sunoData"][0]["audioUrl"] = "https://example.cn/fresh.mp3"
    again = recover("extend-music", document)
    assert isinstance(again, CallbackEvent)
    assert again.event_id == one.event_id
    assert again.data["tracks"][0]["audio_url"] == "https://example.cn/fresh.mp3"
    assert event_of("generate-music", "generate-first-success.json").event_id != one.event_id
    assert one.event_id == event_id_for(TASK, "complete", b"recovered:polling")


def test_a_recovered_event_never_has_the_id_of_a_callback() -> None:
    """The same callback body posted to the gateway gets a content id, not the recovered one."""
    kind = kind_named("extend-music")
    result = recovered_callback(kind, answer("generate-success.json"), TASK)
    assert isinstance(result, Recovered)
    body = orjson.dumps(result.document)
    decoded = decode(body, kind)
    assert not isinstance(decoded, Rejection)
    received = normalize(decoded, body, kind=kind, received_at=RECEIVED, schemas=CODEC,
                         provider_tz=UTC)
    recovered = event_of("extend-music", "generate-success.json")
    assert isinstance(received, CallbackEvent)
    assert received.event_id != recovered.event_id
    assert received.data["tracks"] == recovered.data["tracks"]
    assert "recovered_by" not in received.data


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_the_horizon_error_is_valid_for_every_kind(kind: CallbackKind) -> None:
    document = horizon_callback(kind, TASK, horizon_seconds=86400, last_status="PENDING")
    event = normalize_recovered(document, kind=kind, recovered_by="horizon",
                                received_at=RECEIVED, schemas=CODEC, provider_tz=UTC,
                                task_ref="order-1")
    assert isinstance(event, CallbackEvent), event
    assert CODEC.errors(EVENT_V1, event.data) == []
    assert (event.stage, event.data["code"], event.data["recovered_by"],
            event.data["task_ref"]) == ("error", HORIZON_CODE, "horizon", "order-1")
    assert event.data["error"] == ("no outcome within 86400 s of submission (the provider "
                                   "last said PENDING); the reconciler gave up")
    assert event.task_id == TASK


def test_a_kind_without_record_info_cannot_be_recovered() -> None:
    import dataclasses

    kind = dataclasses.replace(kind_named("wav"), record_info=None)
    with pytest.raises(ValueError, match="no record-info"):
        recovered_callback(kind, answer("wav-success.json"), TASK)


def test_the_recovered_event_example_is_what_the_reconciler_writes() -> None:
    """tests/examples/music.callbacks.v1/wav-recovered-by-polling.json, from the wav answer."""
    kind = kind_named("wav")
    result = recovered_callback(kind, answer("wav-success.json"), "988e****c8d3")
    assert isinstance(result, Recovered)
    event = normalize_recovered(result.document, kind=kind, recovered_by="polling",
                                received_at=RECEIVED, schemas=CODEC, provider_tz=UTC)
    assert isinstance(event, CallbackEvent)
    expected = orjson.loads((EXAMPLES / EVENT_V1 / "wav-recovered-by-polling.json").read_bytes())
    assert event.data == expected
