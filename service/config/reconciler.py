"""Reconciler settings (``python -m service reconciler``), read once at start-up.

The provider's API key is a secret (``PROVIDER_API_KEY`` or ``PROVIDER_API_KEY_FILE``):
it is kept out of ``repr`` and never logged.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Final

from service.config.env import ConfigError, Env
from service.config.gateway import read_timezone
from service.config.kafka import (
    KafkaSettings,
    ProducerSettings,
    max_record_bytes,
    read_max_body_bytes,
)
from service.config.shared import ProcessSettings, TopicNames

DEFAULT_ADMIN_PORT: Final = 8084
BASE_URL_VARIABLE: Final = "PROVIDER_API_BASE_URL"
API_KEY_VARIABLE: Final = "PROVIDER_API_KEY"
DAY: Final = 86_400.0


def read_base_url(env: Env) -> str:
    """``PROVIDER_API_BASE_URL``: ``http(s)://host[:port][/prefix]``, no query, no credentials.

    Required: the provider is resold by several mirrors under different hosts, and a
    default pointing at one of them would send the key where it was not meant to go.
    """
    value = env.optional_text(BASE_URL_VARIABLE)
    if value is None:
        raise ConfigError(BASE_URL_VARIABLE, "is required (the provider API's base URL, "
                          "e.g. https://api.sunoapi.org)")
    if not _is_base_url(value):
        raise ConfigError(BASE_URL_VARIABLE, "expected http(s)://host[:port][/path] without "
                          f"query or credentials, got {value!r}")
    return value.rstrip("/")


def _is_base_url(value: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(value)
        if parts.port == 0:  # reading .port raises for a malformed one
            return False
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname)
            and not (parts.query or parts.fragment or parts.username or parts.password))


@dataclass(frozen=True)
class ReconcilerConfig:
    kafka: KafkaSettings
    topics: TopicNames
    provider_base_url: str
    provider_api_key: str = field(repr=False)
    #: A task with no terminal event this long after its submission is polled.
    after_seconds: float = 600.0
    #: Each silent task is asked again this often (with jitter, ±20%).
    poll_interval_seconds: float = 30.0
    #: After this long since submission the reconciler gives up with an error event.
    horizon_seconds: float = DAY
    #: Global budget of record-info requests per second (burst: one second's worth).
    max_requests_per_second: float = 5.0
    #: Open tasks kept; past it the oldest is forgotten (counted, logged).
    max_open_tasks: int = 100_000
    max_concurrency: int = 16
    request_timeout_seconds: float = 10.0
    #: Back-off after 429, 430, 455 or 5xx: 1 s doubling up to this (or Retry-After).
    backoff_max_seconds: float = 300.0
    #: Largest record-info answer read (and the record size the topics are made for).
    max_answer_bytes: int = 256 * 1024
    provider_timezone: tzinfo = UTC
    publish_timeout_seconds: float = 10.0
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    process: ProcessSettings = field(
        default_factory=lambda: ProcessSettings(admin_port=DEFAULT_ADMIN_PORT))

    @classmethod
    def from_env(cls, env: Env | None = None) -> ReconcilerConfig:
        env = env or Env()
        kafka = KafkaSettings.from_env(env, client_id="music-reconciler")
        base_url = read_base_url(env)
        api_key = env.secret(API_KEY_VARIABLE)
        if api_key is None:
            raise ConfigError(API_KEY_VARIABLE, f"is required (or {API_KEY_VARIABLE}_FILE): "
                              "the provider API key the record-info requests carry")
        horizon = env.number("RECONCILE_HORIZON_SECONDS", DAY, minimum=1.0, maximum=30 * DAY)
        after = env.number("RECONCILE_AFTER_SECONDS", 600.0, minimum=0.0, maximum=30 * DAY)
        if after >= horizon:
            raise ConfigError("RECONCILE_AFTER_SECONDS", f"must be less than "
                              f"RECONCILE_HORIZON_SECONDS ({horizon:g}), got {after:g}")
        # The record-info answer is bounded like a callback body: the same topics carry it.
        max_answer = read_max_body_bytes(env)
        return cls(
            kafka=kafka,
            topics=TopicNames.from_env(env),
            provider_base_url=base_url,
            provider_api_key=api_key,
            after_seconds=after,
            poll_interval_seconds=env.number("RECONCILE_POLL_INTERVAL_SECONDS", 30.0,
                                            minimum=0.1, maximum=DAY),
            horizon_seconds=horizon,
            max_requests_per_second=env.number("RECONCILE_MAX_REQUESTS_PER_SECOND", 5.0,
                                              minimum=0.01, maximum=10_000.0),
            max_open_tasks=env.integer("RECONCILE_MAX_OPEN_TASKS", 100_000, minimum=1,
                                   maximum=10_000_000),
            max_concurrency=env.integer("RECONCILE_MAX_CONCURRENCY", 16, minimum=1, maximum=1024),
            request_timeout_seconds=env.number("RECONCILE_REQUEST_TIMEOUT_SECONDS", 10.0,
                                              minimum=0.1, maximum=300.0),
            backoff_max_seconds=env.number("RECONCILE_BACKOFF_MAX_SECONDS", 300.0,
                                          minimum=1.0, maximum=DAY),
            max_answer_bytes=max_answer,
            provider_timezone=read_timezone(env, "PROVIDER_TIMEZONE"),
            publish_timeout_seconds=env.number("PUBLISH_TIMEOUT_SECONDS", 10.0,
                                              minimum=0.1, maximum=120.0),
            producer=ProducerSettings.from_env(env, max_request_size=max_record_bytes(max_answer)),
            process=ProcessSettings.from_env(env, default_admin_port=DEFAULT_ADMIN_PORT),
        )
