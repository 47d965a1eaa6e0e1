"""Shared pytest configuration: the real-service harness fixtures are registered here.

Every helper lives in tests/harness/; fixtures that one folder shares sit in that folder's
conftest.py (tests/integration/conftest.py: the network jail, canaries, media servers;
tests/fault/conftest.py: the fault table). No test module imports another.
"""

from __future__ import annotations

pytest_plugins: list[str] = [
    "tests.harness.s3_fixtures",
    "tests.harness.kafka_fixtures",
]
