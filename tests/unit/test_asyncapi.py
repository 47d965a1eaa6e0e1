"""The AsyncAPI document names the default topics and points at the real schema files."""

from __future__ import annotations

from typing import Any

import yaml

from service.config.shared import TopicNames
from service.contracts.codec import SCHEMAS_DIR, SchemaCodec


def load() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SCHEMAS_DIR / "music.asyncapi.yaml").read_text())
    return document


def test_every_default_topic_is_a_channel() -> None:
    addresses = {channel["address"] for channel in load()["channels"].values()}
    defaults = TopicNames()
    assert addresses == {defaults.events, defaults.rejected, defaults.archived,
                         defaults.archive_failed}


def test_every_payload_reference_is_a_schema_of_the_codec() -> None:
    codec = SchemaCodec.load()
    refs = [message["payload"]["schema"]["$ref"]
            for message in load()["components"]["messages"].values()]
    names = {ref.removeprefix("./").removesuffix(".schema.json") for ref in refs}
    assert names <= set(codec.names())
    assert len(names) == 4


def test_event_dataschema_header_matches_the_schema_id() -> None:
    headers = load()["components"]["messages"]["callbackEvent"]["headers"]["properties"]
    assert headers["ce_dataschema"]["const"] == SchemaCodec.load().schema_id("music.callbacks.v1")
