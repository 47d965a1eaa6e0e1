"""The admin listener's ``/metrics``: the whole registry, or only the samples asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.observability.admin import create_admin_app

Client: TypeAlias = TestClient[Any, Any]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    registry = CollectorRegistry()
    Counter("demo_messages", "Messages.", ["topic"], registry=registry).labels("a").inc(3)
    Gauge("demo_lag", "Lag.", registry=registry).set(7)
    async with TestClient(TestServer(create_admin_app(registry, {}))) as test_client:
        yield test_client


async def test_metrics_renders_the_whole_registry(client: Client) -> None:
    answer = await client.get("/metrics")
    text = await answer.text()
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    assert 'demo_messages_total{topic="a"} 3.0' in text
    assert "demo_lag 7.0" in text


async def test_metrics_renders_only_the_samples_named(
        client: Client) -> None:
    answer = await client.get("/metrics", params=[("name[]", "demo_messages_total")])
    text = await answer.text()
    assert 'demo_messages_total{topic="a"} 3.0' in text
    assert "demo_lag" not in text
    both = await (await client.get("/metrics", params=[("name[]", "demo_messages_total"),
                                                        ("name[]", "demo_lag")])).text()
    assert "demo_lag 7.0" in both
    assert "demo_messages_total" in both
