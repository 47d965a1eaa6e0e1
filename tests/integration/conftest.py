"""Fixtures of the integration tests: the network jail, canary listeners, media servers.

The broker and S3 fixtures are registered for every folder in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.harness.loopback import Canary, Jail, confine_to_loopback, start_canary
from tests.harness.media_server import Servers


@pytest.fixture
def jail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jail]:
    """Nothing leaves loopback and no real name is resolved; a module that fetches URLs
    takes it for every test with ``pytest.mark.usefixtures("jail")``."""
    state = confine_to_loopback(monkeypatch)
    yield state
    assert state.blocked == [], "a test tried to leave loopback or resolve a real name"


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    state = Servers()
    yield state
    await state.close()


@pytest.fixture
async def canaries() -> AsyncIterator[dict[str, Canary]]:
    """Listeners on 127.0.0.1 and (if available) ::1 that must never be reached."""
    found: dict[str, Canary] = {}
    started = []
    for host in ("127.0.0.1", "::1"):
        try:
            canary, server = await start_canary(host)
        except OSError:
            continue
        found[host] = canary
        started.append(server)
    yield found
    for server in started:
        server.close()
        await server.wait_closed()
