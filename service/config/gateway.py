"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.config.env import ConfigError, Env
from service.config.kafka import (
    DEFAULT_MAX_BODY_BYTES,
    KafkaSettings,
    ProducerSettings,
    max_record_bytes,
    read_max_body_bytes,
)
from service.config.security import SecurityConfig
from service.config.shared import ProcessSettings, TopicNames
from service.config.spool import SpoolConfig

DEFAULT_ADMIN_PORT: Final = 8081


def read_timezone(env: Env, name: str) -> tzinfo:
    zone = env.text(name, "UTC")
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(name, f"unknown IANA time zone {zone!r}") from None


@dataclass(frozen=True)
class GatewayConfig:
    kafka: KafkaSettings
    producer: ProducerSettings
    topics: TopicNames
    security: SecurityConfig
    process: ProcessSettings
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    publish_timeout_seconds: float = 5.0
    provider_timezone: tzinfo = UTC
    spool: SpoolConfig = field(default_factory=SpoolConfig)

    @classmethod
    def from_env(cls, env: Env | None = None) -> GatewayConfig:
        env = env or Env()
        if env.raw("EVENT_SOURCE") is not None:
            raise ConfigError("EVENT_SOURCE", "no longer read: the source of each event now "
                              "comes from its callback kind (/callbacks/<kind>); remove it")
        publish_timeout = env.number("PUBLISH_TIMEOUT_SECONDS", cls.publish_timeout_seconds,
                                     minimum=0.1, maximum=14.0)
        max_body = read_max_body_bytes(env)
        return cls(
            kafka=KafkaSettings.from_env(env, client_id="music-gateway"),
            producer=ProducerSettings.from_env(env, max_request_size=max_record_bytes(max_body)),
            topics=TopicNames.from_env(env),
            security=SecurityConfig.from_env(env),
            process=ProcessSettings.from_env(env, default_admin_port=DEFAULT_ADMIN_PORT),
            http_host=env.text("HTTP_HOST", cls.http_host),
            http_port=env.port("HTTP_PORT", cls.http_port),
            max_body_bytes=max_body,
            publish_timeout_seconds=publish_timeout,
            provider_timezone=read_timezone(env, "PROVIDER_TIMEZONE"),
            spool=SpoolConfig.from_env(env, publish_timeout=publish_timeout,
                                       max_body_bytes=max_body),
        )
