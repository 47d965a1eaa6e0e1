"""Settings every process reads the same way: topic names and the log level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from service.config.env import Env

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class TopicNames:
    events: str = "music.callbacks.v1"
    rejected: str = "music.callbacks.rejected.v1"
    archived: str = "music.audio.archived.v1"
    archive_failed: str = "music.audio.archive-failed.v1"
    tasks: str = "music.tasks.submitted.v1"  # submitted tasks, read by the reconciler

    @classmethod
    def from_env(cls, env: Env) -> TopicNames:
        defaults = cls()
        return cls(
            events=env.text("EVENTS_TOPIC", defaults.events),
            rejected=env.text("REJECTED_TOPIC", defaults.rejected),
            archived=env.text("ARCHIVED_TOPIC", defaults.archived),
            archive_failed=env.text("ARCHIVE_DLQ_TOPIC", defaults.archive_failed),
            tasks=env.text("TASKS_TOPIC", defaults.tasks),
        )


def read_log_level(env: Env) -> str:
    return env.choice("LOG_LEVEL", "INFO", LOG_LEVELS)
