"""Shared pytest configuration: the real-service harness fixtures are registered here."""

from __future__ import annotations

pytest_plugins: list[str] = [
    "tests.harness.s3_fixtures",
    "tests.harness.kafka_fixtures",
]
