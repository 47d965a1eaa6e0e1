"""Only the provider gets in: verification, abuse limits and what refusals leave behind."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest

from service.config.env import ConfigError, Env
from service.config.gateway import GatewayConfig
from service.core.kinds import kind_named
from service.gateway.app import PUBLISHER_KEY, create_app
from service.gateway.security import (
    provider_signature,
    sign_callback_url,
    standard_webhooks_signature,
)
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.examples import example_bytes
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import read_records
from tests.harness.processes import assert_configuration_error

ServerFactory = Callable[..., Awaitable[TestServer]]
CALLBACK_PATH = kind_named("extend-music").route
BODY = example_bytes("documented-complete.json")
TASK_ID = "2fac****9f72"


def test_gateway_refuses_to_start_without_verification_naming_the_settings() -> None:
    env = gateway_env("127.0.0.1:9")
    del env["AUTH_MODE"]
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env(Env(env))
    assert raised.value.name == "AUTH_MODE"
    for setting in ("CALLBACK_TOKENS", "PROVIDER_HMAC_KEY", "STANDARD_WEBHOOKS_SECRETS"):
        assert setting in str(raised.value)
    assert_configuration_error(["gateway"], env, "AUTH_MODE", timeout=20)


class Gateway:
    def __init__(self, server: TestServer, env: dict[str, str], broker: KafkaBroker,
                 registry: CollectorRegistry) -> None:
        self.server = server
        self.env = env
        self.broker = broker
        self.registry = registry

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def url(self, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}{query}"

    async def post(self, body: bytes = BODY, *, query: str = "", source: str = "127.0.0.1",
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any],
                                                                   dict[str, str]]:
        connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session, session.post(
            self.url(query), data=body, headers=headers or {},
        ) as response:
            return response.status, await response.json(), dict(response.headers)

    async def published(self, expect: int = 0) -> int:
        events = await read_records(self.broker.bootstrap_servers, self.env["EVENTS_TOPIC"],
                                    expect=expect, timeout=3)
        rejected = await read_records(self.broker.bootstrap_servers,
                                      self.env["REJECTED_TOPIC"], expect=0, timeout=1)
        return len(events) + len(rejected)


@pytest.fixture
def start(aiohttp_server: ServerFactory, kafka_broker: KafkaBroker,
          ) -> Callable[..., Awaitable[Gateway]]:
    async def make(**settings: str) -> Gateway:
        env = gateway_env(kafka_broker.bootstrap_servers, AUTH_MODE="verify", **settings)
        config = gateway_config(env)
        await ensure_topics(config.kafka, project_topics(Env(env)))
        registry = CollectorRegistry()
        app = create_app(config, registry=registry)
        server = await aiohttp_server(app, host="127.0.0.1")
        assert await app[PUBLISHER_KEY].wait_connected(20)
        return Gateway(server, env, kafka_broker, registry)

    return make


pytestmark = pytest.mark.kafka


def new_token() -> str:
    return secrets.token_urlsafe(24)


async def test_url_token_missing_wrong_and_right_and_refusals_publish_nothing(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    token = new_token()
    gateway = await start(CALLBACK_TOKENS=token)
    status, answer, _ = await gateway.post()
    assert (status, answer["error"]) == (401, "missing_token")
    status, answer, _ = await gateway.post(query=f"?token={new_token()}")
    assert (status, answer["error"]) == (401, "bad_token")
    assert token not in orjson.dumps(answer).decode()
    assert await gateway.published() == 0  # an unauthenticated request never publishes
    status, answer, _ = await gateway.post(query=f"?token={token}")
    assert (status, answer["status"]) == (200, "received")
    assert await gateway.published(expect=1) == 1


async def test_rotated_token_old_and_new_during_overlap_old_refused_after(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    old, new = new_token(), new_token()
    overlap = await start(CALLBACK_TOKENS=f"{new},{old}")
    assert (await overlap.post(query=f"?token={old}"))[0] == 200
    assert (await overlap.post(query=f"?token={new}"))[0] == 200
    after = await start(CALLBACK_TOKENS=new)
    assert (await after.post(query=f"?token={new}"))[0] == 200
    status, answer, _ = await after.post(query=f"?token={old}")
    assert (status, answer["error"]) == (401, "bad_token")


async def test_signed_url_adds_task_ref_and_refuses_expired_or_tampered(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    key = secrets.token_urlsafe(32)
    gateway = await start(CALLBACK_URL_SIGNING_KEY=key)
    good = sign_callback_url(gateway.url(), "order-42", key)
    query = good[good.index("?"):]
    status, answer, _ = await gateway.post(query=query)
    assert status == 200
    events = await read_records(gateway.broker.bootstrap_servers, gateway.env["EVENTS_TOPIC"],
                                expect=1)
    assert events[0].value is not None
    assert orjson.loads(events[0].value)["task_ref"] == "order-42"
    expired = sign_callback_url(gateway.url(), "order-42", key,
                                now=datetime.now(UTC) - timedelta(hours=49))
    status, answer, _ = await gateway.post(query=expired[expired.index("?"):])
    assert (status, answer["error"]) == (401, "expired_signature")
    status, answer, _ = await gateway.post(query=query.replace("order-42", "order-43"))
    assert (status, answer["error"]) == (401, "bad_signature")


async def test_provider_hmac_wrong_missing_and_stale_and_unreadable_task_id(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    key = secrets.token_urlsafe(32)
    gateway = await start(PROVIDER_HMAC_KEY=key)
    now = str(int(time.time()))

    def signed(task_id: str, timestamp: str, signing_key: str = key) -> dict[str, str]:
        return {"X-Webhook-Timestamp": timestamp,
                "X-Webhook-Signature": provider_signature(signing_key, task_id, timestamp)}

    assert (await gateway.post(headers=signed(TASK_ID, now)))[0] == 200
    cases = [
        ({}, "missing_signature"),
        (signed(TASK_ID, now, secrets.token_urlsafe(32)), "bad_signature"),
        (signed("another-task", now), "bad_signature"),
        (signed(TASK_ID, str(int(time.time()) - 3600)), "stale_timestamp"),
    ]
    for headers, reason in cases:
        status, answer, _ = await gateway.post(headers=headers)
        assert (status, answer["error"]) == (401, reason)
    status, answer, _ = await gateway.post(b'{"code": 200', headers=signed(TASK_ID, now))
    assert (status, answer["error"]) == (401, "task_id_unreadable")
    assert await gateway.published(expect=1) == 1


async def test_unreadable_task_id_is_still_kept_when_a_url_token_vouches(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    key, token = secrets.token_urlsafe(32), new_token()
    gateway = await start(PROVIDER_HMAC_KEY=key, CALLBACK_TOKENS=token)
    status, answer, _ = await gateway.post(b'{"code": 200', query=f"?token={token}")
    assert (status, answer["error"], answer["kept"]) == (400, "invalid_json", True)
    rejected = await read_records(gateway.broker.bootstrap_servers,
                                  gateway.env["REJECTED_TOPIC"], expect=1)
    assert len(rejected) == 1


async def test_standard_webhooks_valid_wrong_and_signature_over_another_body(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    raw_secret = secrets.token_bytes(32)
    secret = "whsec_" + base64.b64encode(raw_secret).decode()
    gateway = await start(STANDARD_WEBHOOKS_SECRETS=secret)
    now = str(int(time.time()))

    def signed(body: bytes, timestamp: str = now, key: bytes = raw_secret) -> dict[str, str]:
        return {"webhook-id": "msg_1", "webhook-timestamp": timestamp,
                "webhook-signature": standard_webhooks_signature(key, "msg_1", timestamp, body)}

    assert (await gateway.post(BODY, headers=signed(BODY)))[0] == 200
    other = example_bytes("real-text.json")
    cases = [
        (signed(other), "bad_signature"),  # a valid signature, but over a different body
        (signed(BODY, key=secrets.token_bytes(32)), "bad_signature"),
        (signed(BODY, timestamp=str(int(time.time()) - 3600)), "stale_timestamp"),
        ({}, "missing_signature"),
    ]
    for headers, reason in cases:
        status, answer, _ = await gateway.post(BODY, headers=headers)
        assert (status, answer["error"]) == (401, reason)


async def test_allow_list_honours_forwarded_for_only_from_trusted_proxies(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    gateway = await start(ALLOWED_SOURCE_CIDRS="127.0.0.5/32",
                          TRUSTED_PROXY_CIDRS="127.0.0.1/32")
    via_proxy = {"X-Forwarded-For": "127.0.0.5"}
    assert (await gateway.post(source="127.0.0.1", headers=via_proxy))[0] == 200
    assert (await gateway.post(source="127.0.0.5"))[0] == 200
    # forged: an untrusted hop claims to forward for the allowed address
    status, answer, _ = await gateway.post(source="127.0.0.3", headers=via_proxy)
    assert (status, answer["error"]) == (403, "source_not_allowed")
    # a forged left-most entry behind the trusted proxy is not believed either
    forged_chain = {"X-Forwarded-For": "127.0.0.5, 127.0.0.9"}
    assert (await gateway.post(source="127.0.0.1", headers=forged_chain))[0] == 403


async def test_a_flood_failing_verification_is_limited_while_genuine_callbacks_get_through(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    token = new_token()
    gateway = await start(CALLBACK_TOKENS=token, RATE_LIMIT_PER_SECOND="2",
                          RATE_LIMIT_BURST="5")
    flood = [await gateway.post(b"{}", query="?token=wrong-wrong-wrong", source="127.0.0.2")
             for _ in range(20)]
    statuses = [status for status, _, _ in flood]
    assert statuses[:5] == [401] * 5  # the budget, then refused before the body is read
    assert statuses.count(429) >= 10
    limited = next(headers for status, _, headers in flood if status == 429)
    assert int(limited["Retry-After"]) >= 1
    # the same address with the right token: its URL proves it, no body needed
    status, _, _ = await gateway.post(query=f"?token={token}", source="127.0.0.2")
    assert status == 200
    status, _, _ = await gateway.post(query=f"?token={token}", source="127.0.0.3")
    assert status == 200
    metrics = generate_latest(gateway.registry).decode()
    assert 'gateway_rate_limited_total{scope="source"}' in metrics


async def test_verified_callbacks_from_one_address_are_never_rate_limited(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    """Far past the limits: each 429 would burn one of the provider's three tries."""
    token = new_token()
    gateway = await start(CALLBACK_TOKENS=token, RATE_LIMIT_PER_SECOND="1",
                          RATE_LIMIT_BURST="2")
    invalid = b'{"code": 200, "data": {"callbackType": "complete"}}'  # verified, then rejected
    answers = await asyncio.gather(*(
        gateway.post(BODY if n % 4 else invalid, query=f"?token={token}", source="127.0.0.4")
        for n in range(60)))
    assert sorted({status for status, _, _ in answers}) == [200, 400]
    assert await gateway.published(expect=45) == 60  # 45 events and 15 kept rejections


def _dribble(port: int, stop_after: float) -> bytes:
    """A client that sends its headers and then its body one byte a second."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     f"\r\nContent-Length: 1000\r\n\r\n".encode())
        deadline = time.monotonic() + stop_after
        sock.settimeout(1.0)
        received = b""
        while time.monotonic() < deadline:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received:
                break
        return received


async def test_a_client_dribbling_its_body_is_cut_while_others_flow(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    gateway = await start(CALLBACK_TOKENS=(token := new_token()), BODY_READ_TIMEOUT_SECONDS="1")
    started = time.monotonic()
    dribbler = asyncio.create_task(asyncio.to_thread(_dribble, gateway.port, 8))
    await asyncio.sleep(0.2)
    status, _, _ = await gateway.post(query=f"?token={token}")
    assert status == 200  # a genuine request is not held up
    answer = await dribbler
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"body_timeout"' in answer
    assert time.monotonic() - started < 5


async def test_in_flight_cap_answers_503_instead_of_queueing(
    start: Callable[..., Awaitable[Gateway]],
) -> None:
    gateway = await start(CALLBACK_TOKENS=(token := new_token()), MAX_IN_FLIGHT="1",
                          BODY_READ_TIMEOUT_SECONDS="2")
    dribbler = asyncio.create_task(asyncio.to_thread(_dribble, gateway.port, 5))
    await asyncio.sleep(0.3)
    status, answer, headers = await gateway.post(query=f"?token={token}")
    assert (status, answer["error"], headers["Retry-After"]) == (503, "overloaded", "1")
    await dribbler
    assert (await gateway.post(query=f"?token={token}"))[0] == 200


def test_app_keys_are_typed() -> None:
    assert isinstance(PUBLISHER_KEY, web.AppKey)
