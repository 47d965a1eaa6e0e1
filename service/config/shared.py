"""Settings every process reads the same way: topic names, admin listener, log level, shutdown."""

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


@dataclass(frozen=True)
class ProcessSettings:
    """The admin listener (``/healthz``, ``/readyz``, ``/metrics``), log level and the grace
    in-flight work gets at shutdown: read alike by every long-running process."""

    admin_port: int
    admin_host: str = "0.0.0.0"
    log_level: str = "INFO"
    shutdown_timeout_seconds: float = 10.0
    # uvloop runs the same asyncio code with a faster event loop and transports: 7-12 %
    # less CPU per answer for the gateway in make bench A/B runs.
    event_loop: str = "uvloop"

    @classmethod
    def from_env(cls, env: Env, *, default_admin_port: int) -> ProcessSettings:
        return cls(
            admin_port=env.port("ADMIN_PORT", default_admin_port),
            admin_host=env.text("ADMIN_HOST", cls.admin_host),
            log_level=read_log_level(env),
            shutdown_timeout_seconds=env.number("SHUTDOWN_TIMEOUT_SECONDS",
                                                cls.shutdown_timeout_seconds, minimum=0.0),
            event_loop=env.choice("EVENT_LOOP", cls.event_loop, EVENT_LOOPS),
        )


EVENT_LOOPS: Final = ("uvloop", "asyncio")


def read_log_level(env: Env) -> str:
    return env.choice("LOG_LEVEL", ProcessSettings.log_level, LOG_LEVELS)
