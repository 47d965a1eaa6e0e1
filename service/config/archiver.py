"""Archiver settings, read once from the environment at start-up (``ConfigError`` names the
variable to fix). The object store is opened here, so a bad ``ARCHIVE_STORAGE_URL`` or AWS
variable stops start-up too; opening it makes no request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from service.config.env import ConfigError, Env
from service.config.kafka import KafkaSettings
from service.config.shared import ProcessSettings, TopicNames
from service.consumers.archiver.download import DEFAULT_MAX_BYTES
from service.consumers.archiver.media import default_max_bytes, max_bytes_variable
from service.contracts.vocabulary import FILE_ROLES, FileRole
from service.storage.base import ObjectStore
from service.storage.factory import STORAGE_URL_VARIABLE, open_store

DEFAULT_STORAGE_DIR: Final = Path(".dev-data") / "archive"
DEFAULT_GROUP_ID: Final = "music-archiver"
DEFAULT_ADMIN_PORT: Final = 8082
MAX_BYTES_VARIABLE: Final = "ARCHIVE_MAX_BYTES"
MAX_BYTES_CEILING: Final = 16 * 1024 * 1024 * 1024


def default_storage_url() -> str:
    """``file://`` URL of ``./.dev-data/archive`` (absolute, from the working directory)."""
    return DEFAULT_STORAGE_DIR.resolve().as_uri()


def read_allowed_hosts(env: Env) -> tuple[str, ...]:
    """``ARCHIVE_ALLOWED_HOSTS``: host names or IP addresses, without scheme, port or path."""
    hosts: list[str] = []
    for entry in env.text_list("ARCHIVE_ALLOWED_HOSTS"):
        host = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                host = ""
        if not host or any(c in host for c in "/@?#[] ") or not host.isascii():
            raise ConfigError("ARCHIVE_ALLOWED_HOSTS", "expected ASCII host names or IP "
                              f"addresses (no scheme, port or path), got {entry!r}")
        hosts.append(host)
    return tuple(hosts)


def read_max_bytes(env: Env) -> tuple[int, dict[FileRole, int]]:
    """``ARCHIVE_MAX_BYTES`` and every role's limit (``ARCHIVE_MAX_BYTES_<ROLE>``).

    A variable with that prefix that names no role is refused: a misspelt limit would
    otherwise be ignored without a word.
    """
    general = env.integer(MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES, minimum=1,
                      maximum=MAX_BYTES_CEILING)
    known = {max_bytes_variable(role): role for role in FILE_ROLES}
    for name in env.names(f"{MAX_BYTES_VARIABLE}_"):
        if name not in known:
            raise ConfigError(name, "names no file role; expected one of "
                              + ", ".join(sorted(known)))
    by_role = {role: env.integer(variable, default_max_bytes(role, general), minimum=1,
                             maximum=MAX_BYTES_CEILING)
               for variable, role in known.items()}
    return general, by_role


@dataclass(frozen=True)
class ArchiverConfig:
    kafka: KafkaSettings
    topics: TopicNames
    store: ObjectStore = field(repr=False, compare=False)
    process: ProcessSettings
    storage_url: str = ""
    group_id: str = DEFAULT_GROUP_ID
    concurrency: int = 4
    max_bytes: int = DEFAULT_MAX_BYTES
    #: Per file role; a role missing here has ``max_bytes``.
    max_bytes_by_role: Mapping[FileRole, int] = field(default_factory=dict)
    connect_timeout_seconds: float = 10.0
    total_timeout_seconds: float = 300.0
    read_timeout_seconds: float = 30.0
    retry_attempts: int = 4
    retry_base_delay_seconds: float = 1.0
    retry_max_delay_seconds: float = 30.0
    allowed_hosts: frozenset[str] | None = None
    allow_loopback: bool = False
    enable_idempotence: bool = True
    publish_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Env | None = None) -> ArchiverConfig:
        env = env or Env()
        kafka = KafkaSettings.from_env(env, client_id="music-archiver")
        storage_url = env.text(STORAGE_URL_VARIABLE, default_storage_url())
        connect_timeout = env.number("ARCHIVE_CONNECT_TIMEOUT_SECONDS", 10.0,
                                    minimum=0.1, maximum=300.0)
        total_timeout = env.number("ARCHIVE_TOTAL_TIMEOUT_SECONDS", 300.0,
                                  minimum=0.1, maximum=3600.0)
        if total_timeout < connect_timeout:
            raise ConfigError("ARCHIVE_TOTAL_TIMEOUT_SECONDS",
                              f"must be at least ARCHIVE_CONNECT_TIMEOUT_SECONDS "
                              f"({connect_timeout:g}), got {total_timeout:g}")
        base_delay = env.number("ARCHIVE_RETRY_BASE_DELAY_SECONDS", 1.0,
                               minimum=0.0, maximum=60.0)
        max_delay = env.number("ARCHIVE_RETRY_MAX_DELAY_SECONDS", 30.0,
                              minimum=0.0, maximum=600.0)
        if max_delay < base_delay:
            raise ConfigError("ARCHIVE_RETRY_MAX_DELAY_SECONDS",
                              f"must be at least ARCHIVE_RETRY_BASE_DELAY_SECONDS "
                              f"({base_delay:g}), got {max_delay:g}")
        hosts = read_allowed_hosts(env)
        max_bytes, max_bytes_by_role = read_max_bytes(env)
        return cls(
            kafka=kafka,
            topics=TopicNames.from_env(env),
            store=open_store(storage_url, env),
            process=ProcessSettings.from_env(env, default_admin_port=DEFAULT_ADMIN_PORT),
            storage_url=storage_url,
            group_id=env.text("ARCHIVER_GROUP_ID", DEFAULT_GROUP_ID),
            concurrency=env.integer("ARCHIVE_CONCURRENCY", 4, minimum=1, maximum=256),
            max_bytes=max_bytes,
            max_bytes_by_role=max_bytes_by_role,
            connect_timeout_seconds=connect_timeout,
            total_timeout_seconds=total_timeout,
            read_timeout_seconds=env.number("ARCHIVE_READ_TIMEOUT_SECONDS", 30.0,
                                           minimum=0.1, maximum=3600.0),
            retry_attempts=env.integer("ARCHIVE_RETRY_ATTEMPTS", 4, minimum=1, maximum=20),
            retry_base_delay_seconds=base_delay,
            retry_max_delay_seconds=max_delay,
            allowed_hosts=frozenset(hosts) if hosts else None,
            allow_loopback=env.flag("ARCHIVE_ALLOW_LOOPBACK", default=False),
            enable_idempotence=env.flag("KAFKA_ENABLE_IDEMPOTENCE", default=True),
            publish_timeout_seconds=env.number("PUBLISH_TIMEOUT_SECONDS", 10.0,
                                              minimum=0.1, maximum=120.0),
        )
