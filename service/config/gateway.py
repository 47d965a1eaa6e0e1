"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.config.env import ConfigError, Env
from service.config.kafka import KafkaSettings, read_compression_type
from service.config.shared import ProcessSettings, TopicNames
from service.config.spool import SpoolConfig
from service.gateway.security.config import SecurityConfig

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
    topics: TopicNames
    security: SecurityConfig
    process: ProcessSettings
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    enable_idempotence: bool = True
    compression_type: str = "gzip"
    max_body_bytes: int = 256 * 1024
    publish_timeout_seconds: float = 5.0
    provider_timezone: tzinfo = UTC
    spool: SpoolConfig = field(default_factory=SpoolConfig)

    @classmethod
    def from_env(cls, env: Env | None = None) -> GatewayConfig:
        env = env or Env()
        if env.raw("EVENT_SOURCE") is not None:
            raise ConfigError("EVENT_SOURCE", "no longer read: the source of each event now "
                              "comes from its callback kind (/callbacks/<kind>); remove it")
        publish_timeout = env.number("PUBLISH_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=14.0)
        max_body = env.integer("MAX_BODY_BYTES", 256 * 1024, minimum=1024, maximum=16 * 1024 * 1024)
        return cls(
            kafka=KafkaSettings.from_env(env, client_id="music-gateway"),
            topics=TopicNames.from_env(env),
            security=SecurityConfig.from_env(env),
            http_host=env.text("HTTP_HOST", "0.0.0.0"),
            http_port=env.port("HTTP_PORT", 8080),
            process=ProcessSettings.from_env(env, default_admin_port=DEFAULT_ADMIN_PORT),
            enable_idempotence=env.flag("KAFKA_ENABLE_IDEMPOTENCE", default=True),
            compression_type=read_compression_type(env),
            max_body_bytes=max_body,
            publish_timeout_seconds=publish_timeout,
            provider_timezone=read_timezone(env, "PROVIDER_TIMEZONE"),
            spool=SpoolConfig.from_env(env, publish_timeout=publish_timeout,
                                       max_body_bytes=max_body),
        )
