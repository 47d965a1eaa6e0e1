"""The OpenAPI document's callback routes, derived from the kind registry.

``schemas/gateway.openapi.json`` is committed, so readers need no Python. Its shared
parts are written by hand: the parameters (``components.parameters``), the answers
(``components.responses``), ``POST /tasks`` and the admin paths. One
``POST /callbacks/<kind>`` per registered kind and the request schemas (the inbound
``components.schemas.provider.*`` and ``music.tasks.submitted.v1``, copied from
``schemas/``) are derived here. A test fails when the committed document
differs from ``with_kinds(committed)``; to refresh it after adding a kind, run

    python -m service.gateway.openapi
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import orjson

from service.contracts.registry import SCHEMAS_DIR, TASKS_V1
from service.core.kinds import KINDS, CallbackKind
from service.core.kinds.base import ROUTE_PREFIX

# The generator rewrites the committed document in the checkout (a development tool).
DOCUMENT: Final = Path(__file__).resolve().parents[2] / "schemas" / "gateway.openapi.json"
INBOUND_PREFIX: Final = "provider."
#: Request bodies that are not callbacks, copied from ``schemas/`` like the inbound ones.
OTHER_REQUEST_SCHEMAS: Final = (TASKS_V1,)
# Every callback route answers the same way: status → components.responses entry.
RESPONSES: Final = {
    "200": "Received", "400": "Rejected", "401": "Unauthorized", "403": "SourceNotAllowed",
    "408": "BodyTimeout", "413": "BodyTooLarge", "429": "RateLimited", "503": "Unavailable",
}
_DESCRIPTION: Final = (
    "Verified (every configured scheme), validated against the kind's inbound schema, "
    "normalized to a CloudEvent and published to the events topic keyed by task id; a "
    "verified body that cannot be accepted is kept on the rejected topic and answered 400. "
)

JsonObject = dict[str, Any]


def operation_id(kind: CallbackKind) -> str:
    """``extend-music`` → ``receiveExtendMusicCallback``."""
    return "receive" + "".join(part.capitalize() for part in kind.name.split("-")) + "Callback"


def with_kinds(document: JsonObject, kinds: Iterable[CallbackKind],
               inbound_schemas: Mapping[str, JsonObject]) -> JsonObject:
    """``document`` with exactly one callback path per kind and their request schemas."""
    result = copy.deepcopy(document)
    kinds = list(kinds)
    other_paths = {path: item for path, item in result["paths"].items()
                   if not path.startswith(ROUTE_PREFIX)}
    result["paths"] = {**{kind.route: _path_item(kind, result) for kind in kinds},
                       **other_paths}
    derived = (INBOUND_PREFIX, *OTHER_REQUEST_SCHEMAS)
    schemas: JsonObject = {name: schema for name, schema in result["components"]["schemas"].items()
                           if not name.startswith(derived)}
    for name in sorted({kind.schema for kind in kinds}):
        schemas.update(_components_of(name, inbound_schemas[name]))
    for name in OTHER_REQUEST_SCHEMAS:
        if name in inbound_schemas:
            schemas.update(_components_of(name, inbound_schemas[name]))
    result["components"]["schemas"] = schemas
    return result


def _path_item(kind: CallbackKind, document: JsonObject) -> JsonObject:
    return {"post": {
        "operationId": operation_id(kind),
        "summary": f"Receive a {kind.summary} callback",
        "description": _DESCRIPTION + (
            f"Events have kind `{kind.name}`, ce_type `music.callback.{kind.name}.<stage>` "
            f"and ce_source `{kind.route}`."),
        "parameters": [{"$ref": f"#/components/parameters/{name}"}
                       for name in document["components"]["parameters"]],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{kind.schema}"}}}},
        "responses": {status: {"$ref": f"#/components/responses/{name}"}
                      for status, name in RESPONSES.items()},
    }}


def _components_of(name: str, schema: JsonObject) -> JsonObject:
    """A JSON Schema file as OpenAPI components: ``$defs`` become ``<name>.<def>``."""
    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: (value.replace("#/$defs/", f"#/components/schemas/{name}.")
                          if key == "$ref" and isinstance(value, str) else rewrite(value))
                    for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    body = {key: value for key, value in schema.items()
            if key not in {"$schema", "$id", "$defs"}}
    components = {name: rewrite(body)}
    for def_name, definition in schema.get("$defs", {}).items():
        components[f"{name}.{def_name}"] = rewrite(definition)
    return components


def load_inbound_schemas(directory: Traversable = SCHEMAS_DIR) -> dict[str, JsonObject]:
    """The inbound callback schemas and the other request schemas, by name."""
    entries = [*sorted((entry for entry in directory.iterdir()
                        if entry.name.startswith(INBOUND_PREFIX)
                        and entry.name.endswith(".schema.json")), key=lambda e: e.name),
               *(directory / f"{name}.schema.json" for name in OTHER_REQUEST_SCHEMAS)]
    return {entry.name.removesuffix(".schema.json"): orjson.loads(entry.read_bytes())
            for entry in entries}


def render(document: JsonObject) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def main() -> None:
    committed = orjson.loads(DOCUMENT.read_bytes())
    DOCUMENT.write_bytes(render(with_kinds(committed, KINDS, load_inbound_schemas())))


if __name__ == "__main__":
    main()
