"""The contract's closed sets in Python (file roles, registry kinds) equal the schemas' enums."""

from __future__ import annotations

from typing import Any

import orjson

from service.contracts.registry import SCHEMAS_DIR
from service.contracts.vocabulary import FILE_ROLES, STEM_ROLES
from service.core.kinds import KIND_NAMES, ONE_SHOT_KIND_NAMES, TRACK_FAMILY_KIND_NAMES


def event_schema() -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(
        (SCHEMAS_DIR / "music.callbacks.v1.schema.json").read_bytes())
    return document


def test_kinds_are_the_event_schemas_kinds_in_order() -> None:
    assert list(KIND_NAMES) == event_schema()["properties"]["kind"]["enum"]


def test_the_track_family_and_the_one_shot_kinds_split_the_kinds() -> None:
    description = event_schema()["properties"]["tracks"]["description"]
    assert all(kind in description for kind in TRACK_FAMILY_KIND_NAMES)
    assert not any(f" {kind}," in description for kind in ONE_SHOT_KIND_NAMES)
    assert set(TRACK_FAMILY_KIND_NAMES) | set(ONE_SHOT_KIND_NAMES) == set(KIND_NAMES)
    assert not set(TRACK_FAMILY_KIND_NAMES) & set(ONE_SHOT_KIND_NAMES)


def test_file_roles_are_the_event_schemas_roles_in_order() -> None:
    file_schema = event_schema()["$defs"]["file"]["properties"]["role"]
    assert list(FILE_ROLES) == file_schema["enum"]
    assert STEM_ROLES[0] == "vocal"
    assert STEM_ROLES[-1] == "origin"
    assert len(STEM_ROLES) == 14


def test_the_archive_topics_name_the_same_roles_and_kinds() -> None:
    for name in ("music.audio.archived.v1", "music.audio.archive-failed.v1"):
        schema = orjson.loads((SCHEMAS_DIR / f"{name}.schema.json").read_bytes())
        assert list(FILE_ROLES) == schema["properties"]["object"]["enum"], name
        assert list(KIND_NAMES) == schema["properties"]["kind"]["enum"], name
        assert "kind" not in schema["required"], name  # added within v1: optional
