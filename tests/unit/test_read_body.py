"""``read_body``: the size limit holds whether the body comes at once or in chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.gateway.http import BodyTooLargeError, read_body

LIMIT = 10


async def echo_length(request: web.Request) -> web.Response:
    try:
        body = await read_body(request, LIMIT, deadline=5)
    except BodyTooLargeError:
        return web.Response(status=413)
    return web.Response(text=str(len(body)))


async def chunks(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(pause)
        yield part


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    app.router.add_post("/", echo_length)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.mark.parametrize("pause", [0.0, 0.05])  # all buffered before the handler, or not
async def test_a_chunked_body_over_the_limit_is_refused(client: TestClient[Any, Any],
                                                        pause: float) -> None:
    response = await client.post("/", data=chunks(b"x" * 6, b"y" * 6, pause=pause))
    assert response.status == 413


@pytest.mark.parametrize("pause", [0.0, 0.05])
async def test_a_body_within_the_limit_is_read_whole(client: TestClient[Any, Any],
                                                     pause: float) -> None:
    chunked = await client.post("/", data=chunks(b"x" * 4, b"y" * 6, pause=pause))
    plain = await client.post("/", data=b"z" * LIMIT)
    assert [(chunked.status, await chunked.text()), (plain.status, await plain.text())] == [
        (200, "10"), (200, "10")]
    assert (await client.post("/", data=b"z" * (LIMIT + 1))).status == 413
