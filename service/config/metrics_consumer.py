"""Metrics consumer settings (``python -m service metrics``), read once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from service.config.env import Env
from service.config.kafka import KafkaSettings
from service.config.shared import ProcessSettings, TopicNames

DEFAULT_ADMIN_PORT: Final = 8083


@dataclass(frozen=True)
class MetricsConsumerConfig:
    kafka: KafkaSettings
    topics: TopicNames
    process: ProcessSettings
    group_id: str = "music-metrics"
    # Per-task state: bounded by age and by count so memory stays flat under any volume.
    task_state_ttl_seconds: float = 86_400.0
    task_state_max_entries: int = 100_000

    @classmethod
    def from_env(cls, env: Env | None = None) -> MetricsConsumerConfig:
        env = env or Env()
        return cls(
            kafka=KafkaSettings.from_env(env, client_id="music-metrics"),
            topics=TopicNames.from_env(env),
            group_id=env.text("METRICS_GROUP_ID", cls.group_id),
            process=ProcessSettings.from_env(env, default_admin_port=DEFAULT_ADMIN_PORT),
            task_state_ttl_seconds=env.number("TASK_STATE_TTL_SECONDS", cls.task_state_ttl_seconds,
                                              minimum=1.0, maximum=90 * 86_400.0),
            task_state_max_entries=env.integer("TASK_STATE_MAX_ENTRIES", cls.task_state_max_entries,
                                               minimum=1, maximum=100_000_000),
        )
