"""Every callback kind through the real gateway and the real broker: one route per kind,
``ce_type``/``ce_source`` from the kind, ``files[]`` in every event; an unknown kind is a
404 that publishes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from service.config.env import Env
from service.contracts.registry import EVENT_V1, REJECTED_V1, SchemaRegistry
from service.core.kinds import KINDS, CallbackKind
from service.core.model import CallbackEvent, Decoded
from service.core.normalize import decode, normalize
from service.gateway.app import PUBLISHER_KEY, create_app
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import headers_of, read_records
from tests.harness.paths import EXAMPLES

pytestmark = pytest.mark.kafka
SCHEMAS = SchemaRegistry.load()
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

# One example per kind, with files wherever the kind has any.
EXAMPLE_OF = {
    "generate-music": "generate-music-complete.json",
    "extend-music": "documented-complete.json",
    "upload-cover": "upload-cover-complete.json",
    "upload-extend": "upload-extend-first.json",
    "add-vocals": "add-vocals-complete.json",
    "add-instrumental": "add-instrumental-complete.json",
    "mashup": "mashup-complete.json",
    "replace-section": "replace-section-complete.json",
    "sounds": "sounds-complete.json",
    "cover-image": "documented-complete.json",
    "lyrics": "documented-complete.json",
    "wav": "documented-complete.json",
    "vocal-separation": "mirror-split-stem-complete.json",
    "midi": "documented-complete.json",
    "music-video": "documented-complete.json",
}


def body_of(kind: CallbackKind) -> bytes:
    return (EXAMPLES / kind.schema / EXAMPLE_OF[kind.name]).read_bytes()


def expected_event(kind: CallbackKind, body: bytes) -> CallbackEvent:
    """What the core makes of the body (files, lyrics, midi do not depend on the clock)."""
    decoded = decode(body, kind)
    assert isinstance(decoded, Decoded)
    event = normalize(decoded, body, kind=kind, received_at=datetime.now(UTC), schemas=SCHEMAS,
                      provider_tz=UTC)
    assert isinstance(event, CallbackEvent)
    return event


async def start(aiohttp_client: ClientFactory, kafka_broker: KafkaBroker,
                ) -> tuple[TestClient[Any, Any], dict[str, str], CollectorRegistry]:
    env = gateway_env(kafka_broker.bootstrap_servers)
    await ensure_topics(gateway_config(env).kafka, project_topics(Env(env)))
    registry = CollectorRegistry()
    app = create_app(gateway_config(env), registry=registry)
    client = await aiohttp_client(app)
    assert await app[PUBLISHER_KEY].wait_connected(20), "producer did not connect"
    return client, env, registry


async def test_every_kind_becomes_one_event_with_its_type_source_and_files(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker,
) -> None:
    client, env, registry = await start(aiohttp_client, kafka_broker)
    expected: dict[str, tuple[CallbackKind, CallbackEvent]] = {}
    for kind in KINDS:
        body = body_of(kind)
        response = await client.post(kind.route, data=body,
                                     headers={"Content-Type": "application/json"})
        assert response.status == 200, (kind.name, await response.text())
        event_id = (await response.json())["event_id"]
        expected[event_id] = (kind, expected_event(kind, body))

    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"],
                                 expect=len(KINDS))
    assert len(records) == len(KINDS) == 15
    for record in records:
        headers = headers_of(record)
        kind, event = expected[headers["ce_id"]]
        assert record.key == event.task_id.encode()
        assert headers["ce_type"] == f"music.callback.{kind.name}.{event.stage}"
        assert headers["ce_source"] == f"/callbacks/{kind.name}"
        assert headers["ce_subject"] == event.task_id
        assert record.value is not None
        value = orjson.loads(record.value)
        assert SCHEMAS.errors(EVENT_V1, value) == []
        assert (value["kind"], value["stage"]) == (kind.name, event.stage)
        assert value["files"] == event.data["files"]
        assert value.get("lyrics") == event.data.get("lyrics")
        assert value.get("midi") == event.data.get("midi")
        assert value["raw"] == orjson.loads(body_of(kind))
        if kind.name not in {"lyrics", "midi"}:
            assert value["files"], kind.name  # every example with a file carries it

    for kind in KINDS:
        requests = registry.get_sample_value(
            "gateway_requests_total", {"route": kind.route, "status": "200"})
        assert requests == 1.0, kind.name
    published = sum(registry.get_sample_value(
        "gateway_events_published_total", {"kind": kind.name, "stage": stage}) or 0
        for kind in KINDS for stage in ("text", "first", "complete", "error"))
    assert published == 15


@pytest.mark.parametrize("path", [
    "/callbacks/extend", "/callbacks/EXTEND-MUSIC", "/callbacks/", "/callbacks/extend-music/x",
    "/callbacks/provider.track-callback.v1",
])
async def test_an_unknown_kind_answers_404_and_publishes_nothing(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker, path: str,
) -> None:
    client, env, registry = await start(aiohttp_client, kafka_broker)
    response = await client.post(path, data=body_of(KINDS[1]))
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    for topic in (env["EVENTS_TOPIC"], env["REJECTED_TOPIC"]):
        assert await read_records(kafka_broker.bootstrap_servers, topic, expect=0) == []
    assert registry.get_sample_value(
        "gateway_requests_total", {"route": "unmatched", "status": "404"}) == 1.0


async def test_a_rejected_body_is_kept_with_its_kind_and_route(
    aiohttp_client: ClientFactory, kafka_broker: KafkaBroker,
) -> None:
    client, env, _ = await start(aiohttp_client, kafka_broker)
    body = b'{"task_id": "t-midi", "code": "500", "data": null}'
    response = await client.post("/callbacks/midi", data=body)
    assert response.status == 400
    assert (await response.json())["error"] == "schema_violation"
    records = await read_records(kafka_broker.bootstrap_servers, env["REJECTED_TOPIC"], expect=1)
    assert len(records) == 1
    assert records[0].key == b"t-midi"  # midi's task id sits beside code
    assert records[0].value is not None
    value = orjson.loads(records[0].value)
    assert SCHEMAS.errors(REJECTED_V1, value) == []
    assert (value["source"], value["kind"]) == ("/callbacks/midi", "midi")
