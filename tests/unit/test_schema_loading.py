"""Schemas are package data: the checkout and an installed wheel read the same files."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.contracts.registry import EVENT_V1, SCHEMAS_DIR, SchemaRegistry, SchemasMissingError
from tests.harness.paths import REPO


def test_the_package_schema_folder_is_the_top_level_schemas_folder() -> None:
    packaged = {entry.name for entry in SCHEMAS_DIR.iterdir()}
    assert packaged == {path.name for path in (REPO / "schemas").iterdir()}
    link = REPO / "service" / "contracts" / "schemas"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "schemas").resolve()


def test_every_schema_file_is_loaded_by_its_name() -> None:
    schemas = SchemaRegistry.load()
    expected = sorted(path.name.removesuffix(".schema.json")
                      for path in (REPO / "schemas").glob("*.schema.json"))
    assert schemas.names() == expected
    assert EVENT_V1 in schemas.names()


def test_a_missing_schema_folder_stops_loading_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SchemasMissingError, match="missing: the package was built without"):
        SchemaRegistry.load(tmp_path / "nowhere")


def test_a_folder_without_schema_files_stops_loading(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a schema")
    with pytest.raises(SchemasMissingError, match=r"no \*\.schema\.json file"):
        SchemaRegistry.load(tmp_path)


def test_an_empty_schema_file_stops_loading(tmp_path: Path) -> None:
    (tmp_path / "music.callbacks.v1.schema.json").write_bytes(b"\n")
    with pytest.raises(SchemasMissingError, match="is empty"):
        SchemaRegistry.load(tmp_path)
