"""One codec for every JSON contract: schemas are loaded and compiled once.

Schemas live in the repository's ``schemas/`` folder, one file per topic (or
inbound route) and version. ``SchemaCodec.load()`` reads and compiles all of
them at start-up; validation afterwards is pure and allocation-light.
jsonschema-rs was chosen by measurement (see ``tests/bench/bench_validators.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema_rs
import orjson

SCHEMAS_DIR: Final = Path(__file__).resolve().parents[2] / "schemas"

EVENT_V1: Final = "music.callbacks.v1"
REJECTED_V1: Final = "music.callbacks.rejected.v1"
ARCHIVED_V1: Final = "music.audio.archived.v1"
ARCHIVE_FAILED_V1: Final = "music.audio.archive-failed.v1"
TASKS_V1: Final = "music.tasks.submitted.v1"
RECORD_INFO_V1: Final = "provider-api.record-info.v1"

MAX_REPORTED_ERRORS: Final = 20


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


class SchemaCodec:
    """Compiled validators keyed by schema name (the file name without ``.schema.json``)."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        self._schemas = schemas
        self._validators = {
            name: jsonschema_rs.validator_for(schema) for name, schema in schemas.items()
        }

    @classmethod
    def load(cls, directory: Path = SCHEMAS_DIR) -> SchemaCodec:
        schemas = {
            path.name.removesuffix(".schema.json"): orjson.loads(path.read_bytes())
            for path in sorted(directory.glob("*.schema.json"))
        }
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
