"""The test factories build what the contracts accept, with the envelope the services write."""

from __future__ import annotations

import pytest

from service.consumers.archiver.keys import archive_event_id, dead_letter_event_id
from service.contracts.registry import ARCHIVE_FAILED_V1, ARCHIVED_V1, EVENT_V1
from service.core.kinds import KIND_NAMES
from tests.harness.factories import (
    archived_record,
    archived_value,
    dead_letter_record,
    dead_letter_value,
    event_record,
    event_value,
    file_value,
    schemas,
    track_value,
)
from tests.harness.kafka_records import headers_of


@pytest.mark.parametrize("kind", sorted(KIND_NAMES))
def test_an_event_of_every_kind_is_a_valid_v1_event_with_the_gateways_envelope(
    kind: str,
) -> None:
    document = event_value("task-1", track_value(audio="https://cdn.example/a.mp3"), kind=kind,
                           stage="first", files=[file_value("audio", "https://cdn.example/a.mp3",
                                                            track_id="tr1")])
    assert schemas().errors(EVENT_V1, document) == []
    record = event_record(document, traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    headers = headers_of(record)
    assert record.key == b"task-1"
    assert headers["ce_id"] == document["event_id"]
    assert headers["ce_type"] == f"music.callback.{kind}.first"
    assert headers["ce_source"] == f"/callbacks/{kind}"
    assert headers["ce_subject"] == "task-1"
    assert headers["ce_time"] == document["received_at"]
    assert headers["ce_dataschema"] == schemas().schema_id(EVENT_V1)
    assert headers["traceparent"].split("-")[1] == "a" * 32


def test_reports_are_valid_and_carry_the_ids_the_archiver_derives() -> None:
    stored = archived_value("task-1", "cover", track_id="tr1")
    dead = dead_letter_value("task-1", "video", track_id=None, kind="music-video",
                             reason="too_large", url="https://cdn.example/v.mp4")
    assert schemas().errors(ARCHIVED_V1, stored) == []
    assert schemas().errors(ARCHIVE_FAILED_V1, dead) == []
    stored_headers = headers_of(archived_record(stored))
    dead_headers = headers_of(dead_letter_record(dead))
    assert stored_headers["ce_id"] == archive_event_id("task-1", "tr1", "cover", "a" * 64)
    assert stored_headers["ce_type"] == "music.archive.stored"
    assert dead_headers["ce_id"] == dead_letter_event_id("task-1", None, "video", "e" * 32)
    assert dead_headers["ce_type"] == "music.archive.failed"
    assert dead_headers["reason"] == "too_large"
    assert {stored_headers["ce_source"], dead_headers["ce_source"]} == {"/archiver"}
