"""The AsyncAPI document names the default topics, points at the real schema files and
describes the headers of every kind's events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema_rs
import yaml

from service.config.shared import TopicNames
from service.contracts.registry import EVENT_V1, SCHEMAS_DIR, SchemaRegistry
from service.core.kinds import KINDS
from service.core.kinds.base import reconciler_source
from service.core.model import RECOVERED_BY, STAGES, CallbackEvent
from service.core.records import cloudevent_headers


def load() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SCHEMAS_DIR / "music.asyncapi.yaml").read_text())
    return document


def test_every_default_topic_is_a_channel() -> None:
    addresses = {channel["address"] for channel in load()["channels"].values()}
    defaults = TopicNames()
    assert addresses == {defaults.events, defaults.rejected, defaults.archived,
                         defaults.archive_failed, defaults.tasks}


def test_every_payload_reference_is_a_schema_of_the_registry() -> None:
    schemas = SchemaRegistry.load()
    refs = [message["payload"]["schema"]["$ref"]
            for message in load()["components"]["messages"].values()]
    names = {ref.removeprefix("./").removesuffix(".schema.json") for ref in refs}
    assert names <= set(schemas.names())
    assert len(names) == 5


def test_task_dataschema_header_matches_the_schema_id() -> None:
    headers = load()["components"]["messages"]["submittedTask"]["headers"]["properties"]
    assert headers["ce_dataschema"]["const"] == SchemaRegistry.load().schema_id(
        "music.tasks.submitted.v1")


def test_event_dataschema_header_matches_the_schema_id() -> None:
    headers = load()["components"]["messages"]["callbackEvent"]["headers"]["properties"]
    expected = SchemaRegistry.load().schema_id("music.callbacks.v1")
    assert headers["ce_dataschema"]["const"] == expected


def test_event_headers_name_exactly_the_registered_kinds() -> None:
    headers = load()["components"]["messages"]["callbackEvent"]["headers"]["properties"]
    assert headers["ce_source"]["enum"] == [kind.route for kind in KINDS] + [
        reconciler_source(kind.name) for kind in KINDS]
    assert headers["ce_type"]["pattern"].count("|") == len(KINDS) - 1 + len(STAGES) - 1


def test_the_headers_of_every_kind_and_stage_match_the_document() -> None:
    schema = load()["components"]["messages"]["callbackEvent"]["headers"]
    validator = jsonschema_rs.validator_for(schema)
    dataschema = SchemaRegistry.load().schema_id(EVENT_V1)
    for kind in KINDS:
        for stage in STAGES:
            for recovered_by in (None, *RECOVERED_BY):
                event = CallbackEvent("0" * 32, "t", kind.name, stage, datetime.now(UTC), {},
                                      recovered_by)
                headers = {name: value.decode() for name, value
                           in cloudevent_headers(event, dataschema=dataschema)}
                assert validator.is_valid(headers), headers
    unknown = CallbackEvent("0" * 32, "t", "extend", "complete", datetime.now(UTC), {})
    headers = {name: value.decode() for name, value
               in cloudevent_headers(unknown, dataschema=dataschema)}
    assert not validator.is_valid(headers)  # the document does not accept just any kind
