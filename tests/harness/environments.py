"""The environment of each process, pointed at the test broker with unique names."""

from __future__ import annotations

from service.config.env import Env
from service.config.gateway import GatewayConfig
from tests.harness.kafka_fixtures import KafkaTopicFactory
from tests.harness.kafka_records import unique
from tests.harness.loopback import free_port


def gateway_env(bootstrap: str, **overrides: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EVENTS_TOPIC": unique("test.events"),
        "REJECTED_TOPIC": unique("test.rejected"),
        "ARCHIVED_TOPIC": unique("test.archived"),
        "ARCHIVE_DLQ_TOPIC": unique("test.archive-failed"),
        "TASKS_TOPIC": unique("test.tasks"),
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


def archiver_topics(factory: KafkaTopicFactory) -> tuple[str, str, str]:
    """Fresh events (2 partitions), archived and archive-failed topics on the test broker."""
    return factory(partitions=2), factory(partitions=1), factory(partitions=1)


def archiver_env(bootstrap: str, topics: tuple[str, str, str], storage_url: str,
                 **overrides: str) -> dict[str, str]:
    """Short timeouts and retries, loopback downloads allowed (test-only), a free admin port."""
    events, archived, dead = topics
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EVENTS_TOPIC": events,
        "ARCHIVED_TOPIC": archived,
        "ARCHIVE_DLQ_TOPIC": dead,
        "ARCHIVE_STORAGE_URL": storage_url,
        "ARCHIVER_GROUP_ID": unique("archiver"),
        "ARCHIVE_ALLOW_LOOPBACK": "true",
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(free_port()),
        "ARCHIVE_CONNECT_TIMEOUT_SECONDS": "1",
        "ARCHIVE_TOTAL_TIMEOUT_SECONDS": "5",
        "ARCHIVE_READ_TIMEOUT_SECONDS": "2",
        "ARCHIVE_RETRY_ATTEMPTS": "3",
        "ARCHIVE_RETRY_BASE_DELAY_SECONDS": "0.05",
        "ARCHIVE_RETRY_MAX_DELAY_SECONDS": "0.2",
        "SHUTDOWN_TIMEOUT_SECONDS": "2",
    }
    env.update(overrides)
    return env


def metrics_env(bootstrap: str, admin_port: int, **topics: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "METRICS_GROUP_ID": unique("metrics"),
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(admin_port),
        "SHUTDOWN_TIMEOUT_SECONDS": "5",
        **topics,
    }
