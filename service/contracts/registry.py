"""The registry of every JSON contract: schemas are loaded and compiled once, then validate.

Not a Confluent Schema Registry: nothing is fetched at run time.

Schemas live in the repository's ``schemas/`` folder, one file per topic (or
inbound route) and version. ``SchemaRegistry.load()`` reads and compiles all of
them at start-up; validation afterwards is pure and allocation-light.
jsonschema-rs was chosen by measurement (see ``tests/bench/bench_validators.py``).

They are read as package data (``importlib.resources``): ``service/contracts/schemas``
is a symlink to the top-level ``schemas/``, which setuptools follows when it builds
the wheel, so the checkout (editable install, tests) and an installed wheel read the
same files. A missing or empty folder stops start-up instead of serving without contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Final

import jsonschema_rs
import orjson

SCHEMAS_DIR: Final[Traversable] = files("service.contracts") / "schemas"
SCHEMA_SUFFIX: Final = ".schema.json"

EVENT_V1: Final = "music.callbacks.v1"
REJECTED_V1: Final = "music.callbacks.rejected.v1"
ARCHIVED_V1: Final = "music.audio.archived.v1"
ARCHIVE_FAILED_V1: Final = "music.audio.archive-failed.v1"
TASKS_V1: Final = "music.tasks.submitted.v1"
RECORD_INFO_V1: Final = "provider-api.record-info.v1"

MAX_REPORTED_ERRORS: Final = 20


class SchemasMissingError(RuntimeError):
    """The schema files are not where the package expects them (a broken build or install)."""


@dataclass(frozen=True, slots=True)
class SchemaError:
    """One validation failure: a JSON Pointer into the document and what is wrong there."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def _pointer(parts: list[str | int]) -> str:
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "/" + "/".join(escaped) if parts else ""


class SchemaRegistry:
    """Compiled validators keyed by schema name (the file name without ``.schema.json``)."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        self._schemas = schemas
        self._validators = {
            name: jsonschema_rs.validator_for(schema) for name, schema in schemas.items()
        }

    @classmethod
    def load(cls, directory: Traversable = SCHEMAS_DIR) -> SchemaRegistry:
        """Every ``*.schema.json`` of ``directory``; raises ``SchemasMissingError`` if none."""
        if not directory.is_dir():
            raise SchemasMissingError(
                f"schema folder {directory} is missing: the package was built without its "
                "schemas (build the wheel from the repository, where service/contracts/schemas "
                "links to schemas/)")
        files_found = sorted((entry for entry in directory.iterdir()
                              if entry.name.endswith(SCHEMA_SUFFIX)), key=lambda e: e.name)
        if not files_found:
            raise SchemasMissingError(f"schema folder {directory} has no *{SCHEMA_SUFFIX} file")
        schemas: dict[str, dict[str, Any]] = {}
        for entry in files_found:
            content = entry.read_bytes()
            if not content.strip():
                raise SchemasMissingError(f"schema file {entry} is empty")
            schemas[entry.name.removesuffix(SCHEMA_SUFFIX)] = orjson.loads(content)
        return cls(schemas)

    def names(self) -> list[str]:
        return sorted(self._schemas)

    def schema_id(self, name: str) -> str:
        return str(self._schemas[name]["$id"])

    def is_valid(self, name: str, document: object) -> bool:
        return bool(self._validators[name].is_valid(document))

    def errors(self, name: str, document: object) -> list[SchemaError]:
        """At most ``MAX_REPORTED_ERRORS`` errors, so a hostile body cannot inflate the answer."""
        found: list[SchemaError] = []
        for error in self._validators[name].iter_errors(document):
            found.append(SchemaError(_pointer(list(error.instance_path)), error.message[:300]))
            if len(found) >= MAX_REPORTED_ERRORS:
                break
        return found
