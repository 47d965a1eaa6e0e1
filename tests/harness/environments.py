"""The environment of each process, pointed at the test broker with unique topic names."""

from __future__ import annotations

from service.config.env import Env
from service.config.gateway import GatewayConfig
from tests.harness.kafka_records import unique


def gateway_env(bootstrap: str, **overrides: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EVENTS_TOPIC": unique("test.events"),
        "REJECTED_TOPIC": unique("test.rejected"),
        "ARCHIVED_TOPIC": unique("test.archived"),
        "ARCHIVE_DLQ_TOPIC": unique("test.archive-failed"),
        "PUBLISH_TIMEOUT_SECONDS": "2",
        "TOPIC_PARTITIONS": "3",
        "AUTH_MODE": "none",
        "RATE_LIMIT_PER_SECOND": "100000",
        "RATE_LIMIT_BURST": "100000",
    }
    env.update(overrides)
    return env


def gateway_config(env: dict[str, str]) -> GatewayConfig:
    return GatewayConfig.from_env(Env(env))
