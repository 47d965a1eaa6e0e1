"""Helpers shared by the tests (no fixtures here: see conftest and harness)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Final

import orjson

EXAMPLES: Final = Path(__file__).resolve().parent / "examples"


def example_bytes(name: str, schema: str = "provider.track-callback.v1") -> bytes:
    """An inbound example: by default of the track family (extend-music and its kin)."""
    return (EXAMPLES / schema / name).read_bytes()


def example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(example_bytes(name))
    return document


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
