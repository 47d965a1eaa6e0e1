"""Planning ``files[]``: one job per file, whatever the kind, with its key known up front.

(Planning a record written before ``files[]`` existed, from its tracks, is pinned in
tests/unit/test_archiver_processor.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from service.consumers.archiver.plan import Plan, files_from_tracks, plan_event
from service.contracts.registry import EVENT_V1, SchemaRegistry
from service.contracts.vocabulary import FILE_ROLES, STEM_ROLES
from tests.harness.factories import event_value, file_value, track_value

SCHEMAS = SchemaRegistry.load()
CDN = "https://cdn.test"


def planned(document: dict[str, Any]) -> Plan:
    assert SCHEMAS.errors(EVENT_V1, document) == []  # every input here is a valid event
    plan = plan_event(document)
    assert plan is not None
    return plan


@pytest.mark.parametrize("role", FILE_ROLES)
@pytest.mark.parametrize("track_id", ["tr-1", None])
def test_every_role_becomes_one_job_under_its_key(role: str, track_id: str | None) -> None:
    plan = planned(event_value("task-1", kind="vocal-separation", files=[
        file_value(role, f"{CDN}/{role}", fallback=f"{CDN}/{role}-alt", track_id=track_id)]))
    [job] = plan.jobs
    assert (job.role, job.name, job.track_id, job.kind) == (role, role, track_id,
                                                            "vocal-separation")
    assert job.key == f"task-1/{track_id or '_'}/{role}"
    assert job.urls == (f"{CDN}/{role}", f"{CDN}/{role}-alt")


def test_the_stems_of_a_vocal_separation_each_get_their_key() -> None:
    plan = planned(event_value("sep-1", kind="vocal-separation", files=[
        file_value(stem, f"{CDN}/{stem}.mp3") for stem in STEM_ROLES]))
    assert [job.key for job in plan.jobs] == [f"sep-1/_/{stem}" for stem in STEM_ROLES]
    assert all(job.title is None and job.duration_seconds is None for job in plan.jobs)


def test_several_images_of_one_task_are_numbered_by_distinct_url() -> None:
    plan = planned(event_value("img-1", kind="cover-image", files=[
        file_value("image", f"{CDN}/1.png"), file_value("image", f"{CDN}/2.png"),
        file_value("image", f"{CDN}/1.png"),  # listed twice: stored once
        file_value("image", f"{CDN}/3.png")]))
    assert [(job.name, job.key, job.urls[0]) for job in plan.jobs] == [
        ("image", "img-1/_/image", f"{CDN}/1.png"),
        ("image-2", "img-1/_/image-2", f"{CDN}/2.png"),
        ("image-3", "img-1/_/image-3", f"{CDN}/3.png"),
    ]


def test_a_track_id_underscore_and_no_track_id_are_different_objects() -> None:
    plan = planned(event_value("t", kind="wav", files=[
        file_value("wav", f"{CDN}/a.wav", track_id="_"), file_value("wav", f"{CDN}/b.wav")]))
    assert [job.key for job in plan.jobs] == ["t/%5F/wav", "t/_/wav"]


def test_track_family_files_take_title_and_duration_from_their_track() -> None:
    tracks = [track_value("t1", audio=f"{CDN}/1.mp3", title="One", duration=181.5),
              track_value("t2", audio=f"{CDN}/2.mp3", title="Two", duration=90.0)]
    plan = planned(event_value("task-f", *tracks, kind="generate-music", stage="first", files=[
        file_value("audio", f"{CDN}/1.mp3", fallback=f"{CDN}/1-stream", track_id="t1"),
        file_value("cover", f"{CDN}/1.jpg", track_id="t1"),
        file_value("audio", f"{CDN}/other.mp3", track_id="t1"),  # the same track twice
        file_value("audio", f"{CDN}/3.mp3", track_id="t3"),  # no such track: no title
    ]))
    summary = [(j.key, j.urls, j.title, j.duration_seconds) for j in plan.jobs]
    assert summary == [
        ("task-f/t1/audio", (f"{CDN}/1.mp3", f"{CDN}/1-stream"), "One", 181.5),
        ("task-f/t1/cover", (f"{CDN}/1.jpg",), "One", None),  # a cover has no duration
        ("task-f/t3/audio", (f"{CDN}/3.mp3",), None, None),
    ]


def test_an_event_with_files_is_planned_from_them_alone() -> None:
    ready = track_value("t1", audio=f"{CDN}/1.mp3", image=f"{CDN}/1.jpg")
    assert planned(event_value("t", ready, files=[])).jobs == ()
    legacy = planned(event_value("t", ready))
    assert [job.key for job in legacy.jobs] == ["t/t1/audio", "t/t1/cover"]


def test_a_legacy_record_plans_exactly_what_its_derived_files_plan() -> None:
    tracks = [track_value("t1", audio=f"{CDN}/1.mp3", source_audio=f"{CDN}/1s.mp3",
                          source_image=f"{CDN}/1.jpg"),
              track_value("t2", audio=None, source_audio=f"{CDN}/2.mp3"),
              track_value("t3"),  # not ready
              track_value(None, audio=f"{CDN}/x.mp3")]
    files, without_id = files_from_tracks(tracks)
    assert without_id == 1
    assert files == [
        file_value("audio", f"{CDN}/1.mp3", fallback=f"{CDN}/1s.mp3", track_id="t1"),
        file_value("cover", f"{CDN}/1.jpg", track_id="t1"),
        file_value("audio", f"{CDN}/2.mp3", track_id="t2"),
    ]
    legacy = planned(event_value("t", *tracks, event_id="a" * 32))
    explicit = planned(event_value("t", *tracks, files=files, event_id="a" * 32))
    assert legacy.jobs == explicit.jobs
    assert (legacy.tracks_without_id, explicit.tracks_without_id) == (1, 0)


@pytest.mark.parametrize("stage", ["text", "error"])
def test_files_of_other_stages_are_not_stored(stage: str) -> None:
    plan = plan_event(event_value("t", kind="music-video", stage=stage,
                                  files=[file_value("video", f"{CDN}/v.mp4")]))
    assert plan is not None
    assert plan.jobs == ()


def test_entries_that_cannot_be_stored_are_counted() -> None:
    plan = plan_event(event_value("t", kind="wav", files=[
        file_value("wav", f"{CDN}/ok.wav"),
        file_value("hologram", f"{CDN}/x"),  # a role from a future producer
        {"role": "wav", "url": "", "fallback_url": None, "track_id": None},
        {"role": "wav"},
        "not a file",  # type: ignore[list-item]
    ]))
    assert plan is not None
    assert [job.key for job in plan.jobs] == ["t/_/wav"]
    assert plan.unusable_files == 4


def test_an_unknown_kind_is_carried_but_files_are_still_stored() -> None:
    plan = plan_event(event_value("t", kind="karaoke", files=[file_value("audio", f"{CDN}/a")]))
    assert plan is not None
    assert [(job.kind, job.key) for job in plan.jobs] == [("karaoke", "t/_/audio")]


def test_files_that_are_not_a_list_make_it_no_event() -> None:
    assert plan_event({**event_value("t"), "files": {"role": "audio"}}) is None
