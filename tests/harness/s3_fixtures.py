"""pytest fixtures for the real S3-compatible server (S3Proxy, in-memory backend).

``s3_server`` starts one S3Proxy per test session (fetching the jar with Maven on first
use); ``s3_bucket`` creates a fresh, uniquely named bucket for one test and deletes it
(with its objects, so the in-memory server's heap stays small) afterwards.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest

from tests.harness.s3proxy import S3ProxyServer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3ProxyServer]:
    server = S3ProxyServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3ProxyServer) -> Iterator[str]:
    name = f"test-{secrets.token_hex(6)}"
    s3_server.create_bucket(name)
    yield name
    s3_server.delete_bucket(name)
