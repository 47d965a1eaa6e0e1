"""The schemas' examples (tests/examples/<schema>/<name>) as bytes and as documents."""

from __future__ import annotations

from typing import Any

import orjson

from tests.harness.paths import EXAMPLES


def example_bytes(name: str, schema: str = "provider.track-callback.v1") -> bytes:
    """An inbound example: by default of the track family (extend-music and its kin)."""
    return (EXAMPLES / schema / name).read_bytes()


def example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(example_bytes(name))
    return document
