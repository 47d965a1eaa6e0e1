"""Settings composed from shared parts: each process reads the shared variables alike, the
producer variables reach every process that publishes, ``MAX_BODY_BYTES`` is read in one
place, and ``service/config`` depends on nothing else of the service."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

import pytest

from service.config.archiver import ArchiverConfig
from service.config.env import ConfigError, Env
from service.config.gateway import GatewayConfig
from service.config.kafka import max_record_bytes
from service.config.metrics_consumer import MetricsConsumerConfig
from service.contracts.vocabulary import FILE_ROLES
from service.kafka.topics import project_topics
from tests.harness.deployment import variables_read_by_the_code
from tests.harness.paths import REPO

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "AUTH_MODE": "none"}

Reader = Callable[[Env], Any]
PROCESSES: dict[str, tuple[Reader, int]] = {
    "gateway": (GatewayConfig.from_env, 8081),
    "archiver": (lambda env: ArchiverConfig.from_env(env, file_roles=FILE_ROLES), 8082),
    "metrics": (MetricsConsumerConfig.from_env, 8083),
}
PUBLISHERS = ("gateway", "archiver")


def read(process: str, **variables: str) -> Any:
    reader, _ = PROCESSES[process]
    return reader(Env(BASE | variables))


def test_settings_import_nothing_else_of_the_service() -> None:
    outside: list[str] = []
    for path in sorted((REPO / "service" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            outside += [f"{path.name}: {module}" for module in modules
                        if module.split(".")[0] == "service"
                        and not module.startswith("service.config")]
    assert outside == []


@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_reads_the_shared_process_settings(process: str) -> None:
    _, admin_port = PROCESSES[process]
    defaults = read(process).process
    assert (defaults.admin_host, defaults.admin_port) == ("0.0.0.0", admin_port)
    assert (defaults.log_level, defaults.shutdown_timeout_seconds) == ("INFO", 10.0)
    given = read(process, ADMIN_HOST="127.0.0.1", ADMIN_PORT="9100", LOG_LEVEL="DEBUG",
                 SHUTDOWN_TIMEOUT_SECONDS="3", EVENTS_TOPIC="events.x").process
    assert (given.admin_host, given.admin_port, given.log_level,
            given.shutdown_timeout_seconds) == ("127.0.0.1", 9100, "DEBUG", 3.0)
    assert read(process, EVENTS_TOPIC="events.x").topics.events == "events.x"
    with pytest.raises(ConfigError, match=r"^LOG_LEVEL: "):
        read(process, LOG_LEVEL="LOUD")
    assert defaults.event_loop == "uvloop"
    assert read(process, EVENT_LOOP="asyncio").process.event_loop == "asyncio"
    with pytest.raises(ConfigError, match=r"^EVENT_LOOP: "):
        read(process, EVENT_LOOP="trio")


@pytest.mark.parametrize("process", PUBLISHERS)
def test_every_publishing_process_honours_the_producer_variables(process: str) -> None:
    defaults = read(process).producer
    assert (defaults.enable_idempotence, defaults.compression_type,
            defaults.linger_ms) == (True, "zstd", 0)
    given = read(process, KAFKA_ENABLE_IDEMPOTENCE="false", KAFKA_COMPRESSION_TYPE="gzip",
                 KAFKA_LINGER_MS="5")
    assert (given.producer.enable_idempotence, given.producer.compression_type,
            given.producer.linger_ms) == (False, "gzip", 5)
    with pytest.raises(ConfigError, match=r"^KAFKA_LINGER_MS: "):
        read(process, KAFKA_LINGER_MS="-1")
    with pytest.raises(ConfigError, match=r"^KAFKA_COMPRESSION_TYPE: "):
        read(process, KAFKA_COMPRESSION_TYPE="brotli")


def test_max_body_bytes_sizes_the_gateway_producer_and_the_callback_topics_alike() -> None:
    env = BASE | {"MAX_BODY_BYTES": str(2 * 1024 * 1024)}
    gateway = GatewayConfig.from_env(Env(env))
    assert gateway.max_body_bytes == 2 * 1024 * 1024
    largest = max_record_bytes(gateway.max_body_bytes)
    assert gateway.producer.max_request_size == largest
    sizes = {spec.name: spec.config.get("max.message.bytes") for spec in project_topics(Env(env))}
    assert sizes[gateway.topics.events] == sizes[gateway.topics.rejected] == str(largest)
    with pytest.raises(ConfigError, match=r"^MAX_BODY_BYTES: "):
        project_topics(Env({"MAX_BODY_BYTES": "12"}))


def test_the_archiver_settings_open_nothing() -> None:
    config = read("archiver", ARCHIVE_STORAGE_URL="s3://music-archive/prefix",
                  AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="s3cr3t-value")
    assert not hasattr(config, "store")
    assert (config.storage.bucket, config.storage.prefix) == ("music-archive", "prefix")
    assert "s3cr3t-value" not in repr(config.storage)  # the secret stays out of logs


def _readme_variables() -> set[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Configuration"):readme.index("## Contracts")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    names = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`",
                                                          row.split("|")[1])}
    return {name.replace("<ROLE>", "") for name in names}


def test_every_variable_the_readme_lists_is_read_by_the_code() -> None:
    listed = _readme_variables()
    assert len(listed) > 60  # the tables were found
    read_by_the_code = variables_read_by_the_code()
    assert sorted(listed - read_by_the_code) == []
