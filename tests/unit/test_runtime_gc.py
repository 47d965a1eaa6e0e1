"""Once a process serves, the collector skips what start-up built and runs less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from aiohttp import web

from service.runtime import Listener, listening


@pytest.fixture
def collector() -> Iterator[None]:
    """Give the test process its collector back as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
async def test_listening_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(700, older, oldest)  # the interpreter's default
    built_at_start_up = [{"schema": n} for n in range(1000)]
    async with listening([Listener(web.Application(), "127.0.0.1", 0, "public")],
                         shutdown_timeout=1.0):
        assert gc.get_freeze_count() >= len(built_at_start_up)
        assert gc.get_threshold() == (50_000, older, oldest)
    assert built_at_start_up
