"""Archiver settings, read once from the environment at start-up (``ConfigError`` names the
variable to fix). Reading opens nothing: the archiver opens its store from ``storage``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from service.config.env import ConfigError, Env
from service.config.kafka import KafkaSettings, ProducerSettings
from service.config.shared import ProcessSettings, TopicNames
from service.config.storage import (
    STORAGE_URL_VARIABLE,
    StorageSettings,
    default_storage_url,
    read_storage_settings,
)

DEFAULT_ADMIN_PORT: Final = 8082
DEFAULT_MAX_BYTES: Final = 50 * 1024 * 1024
#: A music video is far larger than a song: video's limit is at least this.
DEFAULT_VIDEO_MAX_BYTES: Final = 1024 * 1024 * 1024  # 1 GiB
MAX_BYTES_VARIABLE: Final = "ARCHIVE_MAX_BYTES"
MAX_BYTES_CEILING: Final = 16 * 1024 * 1024 * 1024

Role = TypeVar("Role", bound=str)


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


def max_bytes_variable(role: str) -> str:
    """The environment variable that sets one file role's size limit."""
    return f"{MAX_BYTES_VARIABLE}_{role.upper()}"


def default_max_bytes(role: str, general: int) -> int:
    """A role's limit when its own variable is not set."""
    return max(general, DEFAULT_VIDEO_MAX_BYTES) if role == "video" else general


def read_max_bytes(env: Env, roles: Iterable[Role]) -> tuple[int, dict[Role, int]]:
    """``ARCHIVE_MAX_BYTES`` and the limit of each of ``roles`` (``ARCHIVE_MAX_BYTES_<ROLE>``).

    ``roles`` are the contract's file roles (``service.contracts.vocabulary.FILE_ROLES``),
    given by the caller so settings depend on nothing else. A variable with that prefix
    that names no role is refused: a misspelt limit would otherwise be ignored without a word.
    """
    general = env.integer(MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES, minimum=1,
                          maximum=MAX_BYTES_CEILING)
    known = {max_bytes_variable(role): role for role in roles}
    for name in env.names(f"{MAX_BYTES_VARIABLE}_"):
        if name not in known:
            raise ConfigError(name, "names no file role; expected one of "
                              + ", ".join(sorted(known)))
    by_role = {role: env.integer(variable, default_max_bytes(role, general), minimum=1,
                                 maximum=MAX_BYTES_CEILING)
               for variable, role in known.items()}
    return general, by_role


def _not_below(name: str, value: float, floor_name: str, floor: float) -> None:
    if value < floor:
        raise ConfigError(name, f"must be at least {floor_name} ({floor:g}), got {value:g}")


@dataclass(frozen=True)
class ArchiverConfig:
    kafka: KafkaSettings
    producer: ProducerSettings
    topics: TopicNames
    process: ProcessSettings
    storage: StorageSettings
    group_id: str = "music-archiver"
    concurrency: int = 4
    max_bytes: int = DEFAULT_MAX_BYTES
    #: Per file role; a role missing here has ``max_bytes``.
    max_bytes_by_role: Mapping[str, int] = field(default_factory=dict)
    connect_timeout_seconds: float = 10.0
    total_timeout_seconds: float = 300.0
    read_timeout_seconds: float = 30.0
    retry_attempts: int = 4
    retry_base_delay_seconds: float = 1.0
    retry_max_delay_seconds: float = 30.0
    allowed_hosts: frozenset[str] | None = None
    allow_loopback: bool = False
    publish_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Env | None = None, *, file_roles: Iterable[str]) -> ArchiverConfig:
        """``file_roles``: the contract's file roles, each with its own size limit."""
        env = env or Env()
        connect_timeout = env.number("ARCHIVE_CONNECT_TIMEOUT_SECONDS",
                                     cls.connect_timeout_seconds, minimum=0.1, maximum=300.0)
        total_timeout = env.number("ARCHIVE_TOTAL_TIMEOUT_SECONDS", cls.total_timeout_seconds,
                                   minimum=0.1, maximum=3600.0)
        _not_below("ARCHIVE_TOTAL_TIMEOUT_SECONDS", total_timeout,
                   "ARCHIVE_CONNECT_TIMEOUT_SECONDS", connect_timeout)
        base_delay = env.number("ARCHIVE_RETRY_BASE_DELAY_SECONDS", cls.retry_base_delay_seconds,
                                minimum=0.0, maximum=60.0)
        max_delay = env.number("ARCHIVE_RETRY_MAX_DELAY_SECONDS", cls.retry_max_delay_seconds,
                               minimum=0.0, maximum=600.0)
        _not_below("ARCHIVE_RETRY_MAX_DELAY_SECONDS", max_delay,
                   "ARCHIVE_RETRY_BASE_DELAY_SECONDS", base_delay)
        hosts = read_allowed_hosts(env)
        max_bytes, max_bytes_by_role = read_max_bytes(env, file_roles)
        return cls(
            kafka=KafkaSettings.from_env(env, client_id="music-archiver"),
            producer=ProducerSettings.from_env(env),
            topics=TopicNames.from_env(env),
            process=ProcessSettings.from_env(env, default_admin_port=DEFAULT_ADMIN_PORT),
            storage=read_storage_settings(
                env.text(STORAGE_URL_VARIABLE, default_storage_url()), env),
            group_id=env.text("ARCHIVER_GROUP_ID", cls.group_id),
            concurrency=env.integer("ARCHIVE_CONCURRENCY", cls.concurrency, minimum=1,
                                    maximum=256),
            max_bytes=max_bytes,
            max_bytes_by_role=max_bytes_by_role,
            connect_timeout_seconds=connect_timeout,
            total_timeout_seconds=total_timeout,
            read_timeout_seconds=env.number("ARCHIVE_READ_TIMEOUT_SECONDS",
                                            cls.read_timeout_seconds, minimum=0.1,
                                            maximum=3600.0),
            retry_attempts=env.integer("ARCHIVE_RETRY_ATTEMPTS", cls.retry_attempts, minimum=1,
                                       maximum=20),
            retry_base_delay_seconds=base_delay,
            retry_max_delay_seconds=max_delay,
            allowed_hosts=frozenset(hosts) if hosts else None,
            allow_loopback=env.flag("ARCHIVE_ALLOW_LOOPBACK", default=cls.allow_loopback),
            publish_timeout_seconds=env.number("PUBLISH_TIMEOUT_SECONDS",
                                               cls.publish_timeout_seconds, minimum=0.1,
                                               maximum=120.0),
        )
