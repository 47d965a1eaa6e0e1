"""pytest fixtures for the real Kafka broker (registered in tests/conftest.py).

* ``kafka_broker`` (session): one :class:`KafkaBroker` for the whole run. Don't leave it
  paused, killed or reconfigured: tests that pause/kill/restart a broker should use
  ``kafka_broker_factory`` to get a dedicated one.
* ``kafka_broker_factory`` (function): ``kafka_broker_factory(extra_properties=...)`` starts a
  dedicated broker (about 3 s), stopped when the test ends.
* ``kafka_topic_factory`` (function): ``kafka_topic_factory(partitions=1, config=None)`` creates
  a uniquely named topic on the session broker (waits until every partition has a leader) and
  returns its name; the topics are deleted when the test ends. It is a plain callable that
  works from sync and from async tests alike.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from tests.harness.kafka_broker import KafkaBroker, KafkaHarnessError, run_async

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

TOPIC_READY_TIMEOUT_S = 15.0


class KafkaTopicFactory(Protocol):
    def __call__(
        self,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
    ) -> str: ...


class KafkaBrokerFactory(Protocol):
    def __call__(self, extra_properties: Mapping[str, str] | None = None) -> KafkaBroker: ...


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker()
    try:
        broker.start()
        print(f"\n[kafka harness] {broker!r} started in {broker.last_startup_seconds:.1f} s")
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_broker_factory() -> Iterator[KafkaBrokerFactory]:
    brokers: list[KafkaBroker] = []

    def make(extra_properties: Mapping[str, str] | None = None) -> KafkaBroker:
        broker = KafkaBroker(extra_properties=extra_properties)
        brokers.append(broker)
        return broker.start()

    try:
        yield make
    finally:
        for broker in brokers:
            broker.stop()


async def create_topic(
    broker: KafkaBroker,
    name: str,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create ``name`` over PLAINTEXT and wait until every partition has a leader."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    admin = AIOKafkaAdminClient(**broker.client_kwargs(), client_id="kafka-harness-admin")
    try:
        await admin.start()
        topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            topic_configs={k: str(v) for k, v in (config or {}).items()},
        )
        response = await admin.create_topics([topic])
        for topic_name, code, *rest in response.topic_errors:
            if code != 0:
                message = rest[0] if rest else None
                raise for_code(code)(f"creating topic {topic_name!r} failed: {message}")
        deadline = time.monotonic() + TOPIC_READY_TIMEOUT_S
        while True:
            described = await admin.describe_topics([name])
            if _all_partitions_led(described, partitions):
                return
            if time.monotonic() > deadline:
                raise KafkaHarnessError(f"topic {name!r} has no leaders yet: {described!r}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def delete_topics(broker: KafkaBroker, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**broker.client_kwargs(), client_id="kafka-harness-admin")
    try:
        await admin.start()
        await admin.delete_topics(names)
    finally:
        await admin.close()


def _all_partitions_led(described: list[dict[str, Any]], partitions: int) -> bool:
    if len(described) != 1 or described[0].get("error_code", 0) != 0:
        return False
    parts = described[0].get("partitions", [])
    return len(parts) == partitions and all(p.get("leader", -1) >= 0 for p in parts)


def _topic_prefix(node_name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", node_name).strip("-.")
    return f"test-{cleaned[:80]}"


@pytest.fixture
def kafka_topic_factory(
    kafka_broker: KafkaBroker, request: pytest.FixtureRequest
) -> Iterator[KafkaTopicFactory]:
    created: list[str] = []
    prefix = _topic_prefix(request.node.name)

    def make(
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
    ) -> str:
        topic = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
        run_async(lambda: create_topic(kafka_broker, topic, partitions, config))
        created.append(topic)
        return topic

    yield make
    if created and kafka_broker.is_running and not kafka_broker.is_paused:
        try:
            run_async(lambda: delete_topics(kafka_broker, created), timeout=10.0)
        except Exception as exc:  # noqa: BLE001 - clean-up is best effort; never fail a test
            print(f"[kafka harness] could not delete topics {created}: {exc!r}")
