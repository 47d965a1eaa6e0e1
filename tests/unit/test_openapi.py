"""The committed OpenAPI document lists exactly the registered kinds, as the registry
generates them; every reference in it resolves."""

from __future__ import annotations

from typing import Any

import orjson

from service.core.kinds import KINDS
from service.gateway.openapi import (
    DOCUMENT,
    RESPONSES,
    load_inbound_schemas,
    operation_id,
    render,
    with_kinds,
)


def committed() -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(DOCUMENT.read_bytes())
    return document


def test_committed_document_is_what_the_registry_generates() -> None:
    """Fails after a kind or an inbound schema changes: run python -m service.gateway.openapi."""
    assert render(with_kinds(committed(), KINDS, load_inbound_schemas())).decode() \
        == DOCUMENT.read_text()


def test_document_lists_exactly_one_post_route_per_kind() -> None:
    paths = committed()["paths"]
    callback_paths = {path for path in paths if path.startswith("/callbacks/")}
    assert callback_paths == {kind.route for kind in KINDS}
    for kind in KINDS:
        operation = paths[kind.route]["post"]
        assert operation["operationId"] == operation_id(kind)
        assert operation["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{kind.schema}"}
        assert set(operation["responses"]) == set(RESPONSES)
    assert operation_id(KINDS[1]) == "receiveExtendMusicCallback"  # unchanged for extend-music


def test_every_reference_resolves() -> None:
    document = committed()
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(value for key, value in node.items() if key == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(document)
    assert refs
    for ref in refs:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_generation_replaces_a_removed_kind_and_keeps_the_hand_written_parts() -> None:
    document = with_kinds(committed(), KINDS[:2], load_inbound_schemas())
    assert [path for path in document["paths"] if path.startswith("/callbacks/")] == [
        "/callbacks/generate-music", "/callbacks/extend-music"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(document["paths"])
    assert [name for name in document["components"]["schemas"]
            if name.startswith("provider.")] == [
        "provider.track-callback.v1", "provider.track-callback.v1.nullableString",
        "provider.track-callback.v1.track"]
    assert document["components"]["responses"] == committed()["components"]["responses"]


def test_post_tasks_is_documented_with_the_tasks_schema() -> None:
    document = committed()
    operation = document["paths"]["/tasks"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/music.tasks.submitted.v1"}
    assert set(operation["responses"]) == {"200", "400", "401", "403", "408", "413", "429",
                                           "503"}
    schema = load_inbound_schemas()["music.tasks.submitted.v1"]
    component = document["components"]["schemas"]["music.tasks.submitted.v1"]
    assert component["properties"] == schema["properties"]
