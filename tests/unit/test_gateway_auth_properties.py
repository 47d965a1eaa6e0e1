"""Property: whatever headers, query and body arrive, an unauthenticated request never publishes.

The publisher is a recording stand-in (this pins the gateway's decision, not Kafka);
the same refusals against the real broker are in tests/integration/test_gateway_security.py.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config.env import Env
from service.config.gateway import GatewayConfig
from service.config.kafka import KafkaSettings, ProducerSettings
from service.core.kinds import KINDS, CallbackKind, kind_named
from service.gateway.app import create_app
from service.kafka.producer import KafkaPublisher
from tests.harness.examples import example_bytes

EXTEND_MUSIC = kind_named("extend-music")
TOKEN = secrets.token_urlsafe(24)
HMAC_KEY = secrets.token_urlsafe(32)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class RecordingPublisher(KafkaPublisher):
    def __init__(self) -> None:
        super().__init__(KafkaSettings(bootstrap_servers="127.0.0.1:9"), ProducerSettings())
        self.published: list[str] = []

    async def start(self) -> None:
        return None

    async def stop(self, flush_timeout: float | None = None) -> None:  # noqa: ARG002 - nothing to flush
        return None

    async def publish(self, topic: str, **_: Any) -> None:
        self.published.append(topic)


CONFIG = GatewayConfig.from_env(Env({
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "AUTH_MODE": "verify",
    "CALLBACK_TOKENS": TOKEN, "PROVIDER_HMAC_KEY": HMAC_KEY,
    "STANDARD_WEBHOOKS_SECRETS": WEBHOOK_SECRET,
    "RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000",
}))
header_names = st.sampled_from([
    "X-Webhook-Timestamp", "X-Webhook-Signature", "webhook-id", "webhook-timestamp",
    "webhook-signature", "X-Forwarded-For", "traceparent", "Content-Type", "X-Anything",
])
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
queries = st.dictionaries(st.sampled_from(["token", "sig", "exp", "ref", "other"]),
                          header_values, max_size=4)
bodies = st.one_of(st.binary(max_size=200), st.just(example_bytes("documented-complete.json")))


async def post(query: dict[str, str], headers: dict[str, str], body: bytes,
               kind: CallbackKind = EXTEND_MUSIC) -> tuple[int, int]:
    publisher = RecordingPublisher()
    async with TestClient(TestServer(create_app(CONFIG, publisher=publisher))) as client:
        response = await client.post(kind.route, params=query, headers=headers, data=body)
        return response.status, len(publisher.published)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries, st.dictionaries(header_names, header_values, max_size=6), bodies,
       st.sampled_from(KINDS))
def test_an_unauthenticated_request_never_publishes(
    query: dict[str, str], headers: dict[str, str], body: bytes, kind: CallbackKind,
) -> None:
    status, published = asyncio.run(post(query, headers, body, kind))
    assert status in {401, 403, 408, 413, 429}
    assert published == 0


@pytest.mark.parametrize(("kind_name", "schema", "example", "task_id"), [
    ("extend-music", "provider.track-callback.v1", "documented-complete.json", "2fac****9f72"),
    # midi's task id sits beside code: the provider HMAC must be checked against it
    ("midi", "provider.midi-callback.v1", "documented-complete.json", "5c79****be8e"),
])
def test_the_same_request_with_credentials_does_publish(
    kind_name: str, schema: str, example: str, task_id: str,
) -> None:
    """Guards the property above against a gateway that publishes nothing at all."""
    import time

    from service.gateway.security import provider_signature, standard_webhooks_signature

    body = example_bytes(example, schema)
    timestamp = str(int(time.time()))
    secret = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    headers = {
        "X-Webhook-Timestamp": timestamp,
        "X-Webhook-Signature": provider_signature(HMAC_KEY, task_id, timestamp),
        "webhook-id": "msg_1", "webhook-timestamp": timestamp,
        "webhook-signature": standard_webhooks_signature(secret, "msg_1", timestamp, body),
    }
    assert asyncio.run(post({"token": TOKEN}, headers, body, kind_named(kind_name))) == (200, 1)
