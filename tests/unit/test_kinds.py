"""Every callback kind on the one registry: each example becomes the event the contract
describes (files, lyrics, midi, stages), and the registry, the schemas and the examples
agree on which kinds exist. Pure, no I/O beyond reading the committed files."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pytest

from service.config.env import ConfigError, Env
from service.config.gateway import GatewayConfig
from service.contracts.registry import EVENT_V1, REJECTED_V1, SCHEMAS_DIR, SchemaRegistry
from service.core.kinds import KINDS, CallbackKind, kind_named
from service.core.kinds.midi import note_number
from service.core.kinds.tracks import track_files
from service.core.model import CallbackEvent, Rejection, Stage
from service.core.normalize import event_id_for
from service.core.records import cloudevent_headers, rejected_value
from tests.harness.factories import normalized
from tests.harness.paths import EXAMPLES

SCHEMAS = SchemaRegistry.load()
RECEIVED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TRACK_FAMILY = ("generate-music", "extend-music", "upload-cover", "upload-extend", "add-vocals",
                "add-instrumental", "mashup", "replace-section", "sounds")
ONE_SHOT = ("cover-image", "lyrics", "wav", "vocal-separation", "midi", "music-video")

File = tuple[str, str, str | None, str | None]  # role, url, fallback_url, track_id


def run(kind: CallbackKind, body: bytes) -> CallbackEvent | Rejection:
    return normalized(body, kind, received_at=RECEIVED)


def accepted(kind: CallbackKind, body: bytes) -> CallbackEvent:
    event = run(kind, body)
    assert isinstance(event, CallbackEvent), event
    assert SCHEMAS.errors(EVENT_V1, event.data) == []
    return event


def document_event(kind_name: str, document: dict[str, Any]) -> CallbackEvent:
    return accepted(kind_named(kind_name), orjson.dumps(document))


def files_of(event: CallbackEvent) -> list[File]:
    return [(f["role"], f["url"], f["fallback_url"], f["track_id"]) for f in event.data["files"]]


# --- every example, kind by kind -------------------------------------------------------

CN = "https://example.cn/****"
T = "e231****-****-****-****-****8cadc7d"


def track_pair(n: int, *, cover_fallback: str | None = None) -> list[File]:
    return [("audio", f"{CN}{n}.mp3", f"{CN}{n}", f"{T}{n}"),
            ("cover", f"{CN}{n}.jpeg", cover_fallback, f"{T}{n}")]


STEM_URL = "https://example.com/s/e649****4b10_{}.mp3"
SPLIT_STEMS = ("vocal", "backing_vocals", "drums", "bass", "guitar", "keyboard", "percussion",
               "strings", "synth", "fx", "brass", "woodwinds")


class Case(NamedTuple):
    shape: str  # the inbound schema is provider.<shape>-callback.v1
    name: str
    kind_name: str
    task_id: str
    stage: Stage
    code: int
    error: str | None
    files: list[File]


EXPECTED = [
    Case("track", "documented-complete.json", "extend-music", "2fac****9f72", "complete", 200, None,
         [("audio", f"{CN}.mp3", CN, "8551****662c"),
          ("cover", f"{CN}.jpeg", None, "8551****662c")]),
    Case("track", "real-first-partial.json", "extend-music", "b7e1c0a4d2f94c1f", "first", 200, None,
         [("audio", "https://cdn.provider.example/t-001.mp3",
           "https://cdn.provider.example/stream/t-001", "t-001"),
          ("cover", "https://cdn.provider.example/t-001.jpeg",
           "https://cdn.provider.example/src/t-001.jpeg", "t-001"),
          ("cover", "https://cdn.provider.example/t-002.jpeg", None, "t-002")]),
    Case("track", "real-text.json", "extend-music", "b7e1c0a4d2f94c1f", "text", 200, None, []),
    Case("track", "variant-failed-taskId-null-data.json", "extend-music", "c0ffee00beef", "error",
         531, "audio generation failed", []),
    Case("track", "variant-top-level-task-id.json", "extend-music", "top-level-7781", "error", 400,
         None, []),
    Case("track", "generate-music-complete.json", "generate-music", "5c79****be8e", "complete", 200,
         None, track_pair(0) + track_pair(1)),
    Case("track", "upload-cover-complete.json", "upload-cover", "9a1c****77d2", "complete", 200,
         None,
         track_pair(0, cover_fallback="https://example.cn/src/****0.jpeg")),
    Case("track", "upload-extend-first.json", "upload-extend", "3b0e****a1f4", "first", 200, None,
         [*track_pair(0), ("cover", f"{CN}1.jpeg", None, f"{T}1")]),
    Case("track", "add-vocals-complete.json", "add-vocals", "c4d2****0e9b", "complete", 200, None,
         track_pair(0)),
    Case("track", "add-instrumental-complete.json", "add-instrumental", "d81f****4c20", "complete",
         200, None, track_pair(0)),
    Case("track", "mashup-complete.json", "mashup", "e7a9****b311", "complete", 200, None,
         track_pair(0) + track_pair(1)),
    Case("track", "replace-section-complete.json", "replace-section", "2fac****9f72", "complete",
         200, None, track_pair(0)),
    Case("track", "replace-section-error-no-data.json", "replace-section", "2fac****9f72", "error",
         501, "Generation failed due to technical issues", []),
    Case("track", "sounds-complete.json", "sounds", "f00d****5e6a", "complete", 200, None,
         track_pair(0)[:1]),
    Case("cover-image", "documented-complete.json", "cover-image",
         "21aee3c3c2a01fa5e030b3799fa4dd56",
         "complete", 200, None,
         [("image", "https://example.com/s/1753958521_6c1b****9347.png", None, None),
          ("image", "https://example.com/s/1753958524_c153****ce9e.png", None, None)]),
    Case("cover-image", "documented-error-null-images.json", "cover-image",
         "21aee3c3c2a01fa5e030b3799fa4dd56", "error", 501, None, []),
    Case("lyrics", "documented-complete.json", "lyrics", "11dc****8b0f", "complete", 200, None, []),
    Case("lyrics", "mirror-task_id-error_message.json", "lyrics",
         "3b66882fde0a5d398bd269cab6d9542b",
         "complete", 200, None, []),
    Case("lyrics", "documented-error-null-data.json", "lyrics", "11dc****8b0f", "error", 400, None,
         []),
    Case("wav", "documented-complete.json", "wav", "988e****c8d3", "complete", 200, None,
         [("wav", "https://example.com/s/04e6****e727.wav", None, None)]),
    Case("wav", "mirror-audio_wav_url.json", "wav", "41f0****93ab", "complete", 200, None,
         [("wav", "https://example.com/s/7a1b****0c2d.wav", None, None)]),
    Case("wav", "error-null-url.json", "wav", "988e****c8d3", "error", 500, None, []),
    Case("vocal-separation", "separate-vocal-complete.json", "vocal-separation",
         "5e72d367bdfbe44785e28d72cb1697c7", "complete", 200, None,
         [("vocal", "https://example.com/v/9432****a8d2_vocal.mp3", None, None),
          ("instrumental", "https://example.com/v/9432****a8d2_instrumental.mp3", None, None),
          ("origin", "https://example.cn/549f****7ab9.mp3", None, None)]),
    Case("vocal-separation", "mirror-split-stem-complete.json", "vocal-separation",
         "e649edb7abfd759285bd41a47a634b10", "complete", 200, None,
         [(stem, STEM_URL.format("".join(p.capitalize() for p in stem.split("_"))), None, None)
          for stem in SPLIT_STEMS]),
    Case("vocal-separation", "mirror-separate-vocal-empty-origin.json", "vocal-separation",
         "3e63b4cc88d52611159371f6af5571e7", "complete", 200, None,
         [("vocal", "https://example.com/s/3d70****b172_Vocals.mp3", None, None),
          ("instrumental", "https://example.com/s/d92a****5528_Instrumental.mp3", None, None)]),
    Case("vocal-separation", "error-null-info.json", "vocal-separation",
         "5e72d367bdfbe44785e28d72cb1697c7", "error", 500, None, []),
    Case("midi", "documented-complete.json", "midi", "5c79****be8e", "complete", 200, None, []),
    Case("midi", "mirror-data-taskId.json", "midi", "7d2e****11c0", "complete", 200, None, []),
    Case("midi", "documented-error-null-data.json", "midi", "5c79****be8e", "error", 500, None, []),
    Case("music-video", "documented-complete.json", "music-video", "taskId_774b****8e3f",
         "complete",
         200, None, [("video", "https://example.com/v/774b****8e3f.mp4", None, None)]),
    Case("music-video", "error-null-url.json", "music-video", "taskId_774b****8e3f", "error", 500,
         None, []),
]


def example_path(shape: str, name: str) -> Any:
    return EXAMPLES / f"provider.{shape}-callback.v1" / name


@pytest.mark.parametrize("case", EXPECTED, ids=lambda case: f"{case.kind_name}/{case.name}")
def test_every_example_becomes_the_event_of_its_kind(case: Case) -> None:
    shape, name, kind_name, task_id, stage, code, error, files = case
    kind = kind_named(kind_name)
    assert kind.schema == f"provider.{shape}-callback.v1"
    body = example_path(shape, name).read_bytes()
    event = accepted(kind, body)
    data = dict(event.data)
    tracks, lyrics, midi = data.pop("tracks"), data.pop("lyrics", None), data.pop("midi", None)
    assert data == {
        "event_id": event_id_for(task_id, stage, body),
        "task_id": task_id, "kind": kind_name, "stage": stage, "code": code,
        "message": orjson.loads(body).get("msg"), "received_at": "2026-11-25T10:00:00Z",
        "error": error, "files": [dict(zip(("role", "url", "fallback_url", "track_id"), f,
                                           strict=True)) for f in files],
        "raw": orjson.loads(body),
    }
    assert (event.kind, event.stage) == (kind_name, stage)
    if kind_name in TRACK_FAMILY:
        items = orjson.loads(body)["data"].get("data") or []
        assert [track["id"] for track in tracks] == [item["id"] for item in items]
    else:
        assert tracks == []
    assert (lyrics is not None) == (kind_name == "lyrics")
    assert (midi is not None) == (kind_name == "midi")


def test_every_inbound_example_is_pinned_above() -> None:
    on_disk = {(path.parent.name, path.name)
               for kind in KINDS for path in (EXAMPLES / kind.schema).glob("*.json")}
    pinned = {(f"provider.{case.shape}-callback.v1", case.name) for case in EXPECTED}
    assert on_disk == pinned


def test_every_kind_has_an_example() -> None:
    assert {case.kind_name for case in EXPECTED} == {kind.name for kind in KINDS}


# --- the registry agrees with the contracts -------------------------------------------

def test_registry_lists_the_fifteen_kinds_with_one_route_each() -> None:
    assert tuple(kind.name for kind in KINDS) == TRACK_FAMILY + ONE_SHOT
    assert len({kind.route for kind in KINDS}) == 15
    assert all(kind.route == f"/callbacks/{kind.name}" for kind in KINDS)
    with pytest.raises(KeyError):
        kind_named("extend")


def test_event_and_rejected_schemas_name_exactly_the_registered_kinds() -> None:
    for schema in ("music.callbacks.v1", "music.callbacks.rejected.v1"):
        document = orjson.loads((SCHEMAS_DIR / f"{schema}.schema.json").read_bytes())
        assert document["properties"]["kind"]["enum"] == [kind.name for kind in KINDS]


def test_every_kind_names_a_loaded_inbound_schema_with_examples() -> None:
    inbound = {name for name in SCHEMAS.names() if name.startswith("provider.")}
    assert {kind.schema for kind in KINDS} == inbound  # no schema without a kind
    for kind in KINDS:
        assert any((EXAMPLES / kind.schema).glob("*.json")), kind.name


def test_headers_take_source_and_type_from_the_kind() -> None:
    for kind in KINDS:
        event = document_event(kind.name, {"code": 500, "task_id": "t", "data": {
            "callbackType": "error", "task_id": "t"}})
        headers = dict(cloudevent_headers(event, dataschema=SCHEMAS.schema_id(EVENT_V1)))
        assert headers["ce_source"] == kind.route.encode()
        assert headers["ce_type"] == f"music.callback.{kind.name}.error".encode()


def test_rejected_records_carry_the_kind_and_its_route() -> None:
    value = rejected_value(Rejection("invalid_json"), b"{", received_at=RECEIVED,
                           content_type=None, kind="midi")
    assert (value["source"], value["kind"]) == ("/callbacks/midi", "midi")
    assert SCHEMAS.errors(REJECTED_V1, value) == []


def test_event_source_setting_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env(Env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
                                    "AUTH_MODE": "none", "EVENT_SOURCE": "/callbacks/x"}))
    assert raised.value.name == "EVENT_SOURCE"
    assert "kind" in str(raised.value)


# --- task ids: where each kind finds its id ---------------------------------------------

@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
@pytest.mark.parametrize("place", ["data.task_id", "data.taskId", "task_id"])
def test_every_kind_tolerates_every_task_id_spelling(kind: CallbackKind, place: str) -> None:
    document: dict[str, Any] = {"code": 500, "msg": "failed", "data": {"callbackType": "error"}}
    if place == "task_id":
        document["task_id"] = "t-1"
    else:
        document["data"][place.removeprefix("data.")] = "t-1"
    event = document_event(kind.name, document)
    assert (event.task_id, event.stage) == ("t-1", "error")


def test_midi_prefers_its_documented_top_level_id_and_others_data_task_id() -> None:
    both = {"code": 500, "task_id": "top", "data": {"callbackType": "error", "task_id": "inner"}}
    assert document_event("midi", both).task_id == "top"
    assert document_event("wav", both).task_id == "inner"


@pytest.mark.parametrize(("kind_name", "pointer"), [
    ("midi", "/task_id"), ("lyrics", "/data/task_id"), ("sounds", "/data/task_id")])
def test_a_missing_task_id_is_rejected_pointing_at_the_kinds_place(
    kind_name: str, pointer: str,
) -> None:
    body = orjson.dumps({"code": 200, "data": {"callbackType": "complete"}})
    result = run(kind_named(kind_name), body)
    assert isinstance(result, Rejection)
    assert (result.reason, result.errors[0].path) == ("missing_task_id", pointer)


# --- track family files[] ------------------------------------------------------------------

def track(**fields: object) -> dict[str, object]:
    return {"id": "tr-1", **fields}


@pytest.mark.parametrize(("fields", "expected"), [
    ({"audio_url": "https://a/1.mp3", "stream_audio_url": "https://a/s1",
      "source_audio_url": "https://a/src1.mp3"}, ("https://a/1.mp3", "https://a/s1")),
    ({"stream_audio_url": "https://a/s1", "source_audio_url": "https://a/src1.mp3"},
     ("https://a/s1", "https://a/src1.mp3")),
    ({"audio_url": "", "source_audio_url": "https://a/src1.mp3"}, ("https://a/src1.mp3", None)),
    ({"audio_url": "https://a/1.mp3", "stream_audio_url": "https://a/1.mp3"},
     ("https://a/1.mp3", None)),
    ({"audio_url": "https://a/1.mp3", "stream_audio_url": "  ",
      "source_audio_url": "https://a/src1.mp3"}, ("https://a/1.mp3", "https://a/src1.mp3")),
])
def test_audio_prefers_audio_then_stream_then_the_deprecated_source(
    fields: dict[str, object], expected: tuple[str, str | None],
) -> None:
    audio = track_files(track(**fields), "complete")
    assert [(f["role"], f["url"], f["fallback_url"]) for f in audio] == [("audio", *expected)]


def test_cover_is_image_url_falling_back_to_source_image_url() -> None:
    files = track_files(track(image_url="", source_image_url="https://a/src.jpeg"), "complete")
    assert [(f["role"], f["url"], f["fallback_url"]) for f in files] == [
        ("cover", "https://a/src.jpeg", None)]


@pytest.mark.parametrize("stage", ["text", "first"])
def test_a_track_without_audio_url_is_not_ready_before_complete(stage: Stage) -> None:
    pending = track(audio_url="", stream_audio_url="https://a/s1", image_url="https://a/1.jpeg")
    assert [f["role"] for f in track_files(pending, stage)] == ["cover"]
    assert [f["role"] for f in track_files(pending, "complete")] == ["audio", "cover"]


def test_a_track_without_id_yields_no_file() -> None:
    for missing in ({"id": None}, {"id": ""}, {"id": "  "}):
        assert track_files({**track(audio_url="https://a/1.mp3"), **missing}, "complete") == []


# --- one-shot stages --------------------------------------------------------------------

@pytest.mark.parametrize(("document", "stage"), [
    ({"code": 200, "data": {"task_id": "t", "audioWavUrl": "https://a/x.wav"}}, "complete"),
    ({"code": 200, "data": {"task_id": "t", "audioWavUrl": None}}, "error"),
    ({"code": 200, "data": {"task_id": "t", "audioWavUrl": ""}}, "error"),
    ({"code": 500, "data": {"task_id": "t", "audioWavUrl": "https://a/x.wav"}}, "error"),
    ({"code": 200, "data": {"task_id": "t", "callbackType": "failed",
                            "audioWavUrl": "https://a/x.wav"}}, "error"),
    ({"code": 200, "data": {"task_id": "t", "callbackType": "complete",
                            "audioWavUrl": "https://a/x.wav"}}, "complete"),
    ({"code": 200, "data": {"task_id": "t", "callbackType": "first",
                            "audioWavUrl": "https://a/x.wav"}}, "first"),
])
def test_one_shot_stage_is_complete_only_for_200_with_a_result(
    document: dict[str, Any], stage: str,
) -> None:
    assert document_event("wav", document).stage == stage


def test_one_shot_unknown_callback_type_is_rejected_with_the_task_id() -> None:
    body = orjson.dumps({"code": 200, "data": {"callbackType": "second", "taskId": "t9",
                                               "data": [{"text": "la"}]}})
    result = run(kind_named("lyrics"), body)
    assert isinstance(result, Rejection)
    assert (result.reason, result.task_id) == ("unknown_callback_type", "t9")


def test_vocal_separation_with_only_the_origin_is_not_a_result() -> None:
    event = document_event("vocal-separation", {"code": 200, "data": {
        "task_id": "t", "vocal_removal_info": {"origin_url": "https://a/o.mp3", "vocal_url": ""}}})
    assert (event.stage, files_of(event)) == ("error", [("origin", "https://a/o.mp3", None, None)])


def test_camel_case_spellings_are_tolerated_for_urls() -> None:
    event = document_event("vocal-separation", {"code": 200, "data": {
        "task_id": "t", "vocal_removal_info": {"backingVocalsUrl": "https://a/bv.mp3"}}})
    assert files_of(event) == [("backing_vocals", "https://a/bv.mp3", None, None)]
    video = document_event("music-video", {"code": 200, "data": {
        "taskId": "t", "videoUrl": "https://a/v.mp4"}})
    assert files_of(video) == [("video", "https://a/v.mp4", None, None)]


def test_cover_images_leave_out_empty_and_repeated_urls() -> None:
    event = document_event("cover-image", {"code": 200, "data": {
        "taskId": "t", "images": ["", "https://a/1.png", None, "https://a/1.png", "https://a/2.png"]}})
    assert [f[1] for f in files_of(event)] == ["https://a/1.png", "https://a/2.png"]


# --- lyrics and midi ---------------------------------------------------------------------

def test_lyrics_entries_carry_text_title_status_and_error_in_either_spelling() -> None:
    body = example_path("lyrics", "mirror-task_id-error_message.json").read_bytes()
    lyrics = accepted(kind_named("lyrics"), body).data["lyrics"]
    assert lyrics[0]["error"] is None  # "" means no error
    assert lyrics[0]["title"] == "Starry Night Dreams"
    assert lyrics[1] == {"text": "", "title": "", "status": "failed",
                         "error": "Lyrics contain copyrighted content"}
    failed = accepted(kind_named("lyrics"), example_path(
        "lyrics", "documented-error-null-data.json").read_bytes())
    assert failed.data["lyrics"] == []


def test_midi_note_values_sent_as_strings_become_numbers() -> None:
    body = example_path("midi", "documented-complete.json").read_bytes()
    drums = accepted(kind_named("midi"), body).data["midi"]["instruments"][0]
    assert drums["name"] == "Drums"
    assert drums["notes"][0] == {"pitch": 73, "start": 0.036458333333333336,
                                 "end": 0.18229166666666666, "velocity": 1}
    assert all(isinstance(value, int | float) for note in drums["notes"]
               for value in note.values())


def test_a_note_with_an_unreadable_value_is_left_out_and_kept_in_raw() -> None:
    notes = [{"pitch": 60, "start": "0.5", "end": "1", "velocity": 1},
             {"pitch": 61, "start": "soon", "end": 2, "velocity": 1},
             {"pitch": 62, "start": 1, "velocity": 1},
             {"pitch": True, "start": 1, "end": 2, "velocity": 1},
             {"pitch": "nan", "start": 1, "end": 2, "velocity": 1}]
    event = document_event("midi", {"code": 200, "task_id": "t", "data": {
        "instruments": [{"name": None, "notes": notes}]}})
    assert event.data["midi"] == {"instruments": [
        {"name": None, "notes": [{"pitch": 60, "start": 0.5, "end": 1, "velocity": 1}]}]}
    assert event.data["raw"]["data"]["instruments"][0]["notes"] == notes


@pytest.mark.parametrize(("value", "expected"), [
    (73, 73), (0.5, 0.5), ("0.25", 0.25), (" 7 ", 7), ("7.0", 7), ("-3", -3), ("1e3", 1000),
    ("1e400", None), ("inf", None), ("nan", None), ("", None), ("soon", None), (None, None),
    (True, None), ([1], None), ("123456789012345678901234567890", 1.2345678901234568e29),
])
def test_note_number_reading(value: object, expected: float | None) -> None:
    assert note_number(value) == expected


def test_midi_with_no_instruments_detected_is_still_complete() -> None:
    event = document_event("midi", {"code": 200, "task_id": "t", "data": {
        "state": "complete", "instruments": []}})
    assert (event.stage, event.data["midi"]) == ("complete", {"instruments": []})
    failed = document_event("midi", {"code": 500, "task_id": "t", "data": None})
    assert (failed.stage, failed.data["midi"]) == ("error", {"instruments": []})


# --- event examples are what the gateway writes ---------------------------------------------

GENERATED_EVENT_EXAMPLES = [
    ("cover-image-complete.json", "cover-image", "documented-complete.json"),
    ("lyrics-complete.json", "lyrics", "documented-complete.json"),
    ("wav-complete.json", "wav", "documented-complete.json"),
    ("vocal-separation-split-stem.json", "vocal-separation", "mirror-split-stem-complete.json"),
    ("midi-complete.json", "midi", "documented-complete.json"),
    ("music-video-error.json", "music-video", "error-null-url.json"),
    ("upload-extend-first.json", "upload-extend", "upload-extend-first.json"),
]


@pytest.mark.parametrize(("event_name", "kind_name", "inbound"), GENERATED_EVENT_EXAMPLES)
def test_event_examples_are_exactly_what_the_gateway_writes_for_an_inbound_example(
    event_name: str, kind_name: str, inbound: str,
) -> None:
    kind = kind_named(kind_name)
    expected = orjson.loads((EXAMPLES / EVENT_V1 / event_name).read_bytes())
    event = accepted(kind, (EXAMPLES / kind.schema / inbound).read_bytes())
    assert event.data == expected


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_a_code_beyond_any_integer_type_is_a_schema_violation_not_a_crash(
    kind: CallbackKind,
) -> None:
    """orjson reads an integer past 64 bits as a float; written back as an integer it
    cannot be serialized: such a code is refused by the schema (and kept as rejected)."""
    body = b'{"code": -857518448914389008384, "task_id": "t", "data": {"task_id": "t"}}'
    result = run(kind, body)
    assert isinstance(result, Rejection)
    assert (result.reason, result.errors[0].path) == ("schema_violation", "/code")
