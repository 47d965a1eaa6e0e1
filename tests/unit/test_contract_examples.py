"""Every example payload kept with the tests validates against its schema."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.contracts.registry import SchemaRegistry
from tests.harness.paths import EXAMPLES

SCHEMAS = SchemaRegistry.load()
EXAMPLE_FILES = sorted(EXAMPLES.glob("*/*.json"))


def test_every_schema_has_examples() -> None:
    """A schema without examples is a contract nobody has checked."""
    with_examples = {path.parent.name for path in EXAMPLE_FILES}
    assert set(SCHEMAS.names()) <= with_examples, set(SCHEMAS.names()) - with_examples


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_validates_against_its_schema(path: Path) -> None:
    document = orjson.loads(path.read_bytes())
    assert SCHEMAS.errors(path.parent.name, document) == []


def test_schema_ids_are_unique_urns() -> None:
    ids = [SCHEMAS.schema_id(name) for name in SCHEMAS.names()]
    assert len(set(ids)) == len(ids)
    assert all(schema_id.startswith("urn:music-callback-gateway:schema:") for schema_id in ids)
