"""Spool settings (``SPOOL_*``), read with the gateway's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from service.config.env import ConfigError, Env
from service.config.kafka import max_record_bytes

DEFAULT_MAX_BYTES: Final = 1024 * 1024 * 1024
# What framing adds to a record at most (frame header, timestamp, topic, header names).
_FRAME_SLACK: Final = 64 * 1024


@dataclass(frozen=True)
class SpoolConfig:
    """``directory`` None: no spool; the gateway answers 503 whenever the broker fails."""

    directory: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    # How long a request waits for the broker's acknowledgement before its record is
    # spooled instead; the rest of PUBLISH_TIMEOUT_SECONDS is left for the fsync.
    after_seconds: float = 2.5
    # Room the readiness check wants free: the largest record the gateway can produce.
    largest_record_bytes: int = 1024 * 1024 + _FRAME_SLACK

    @classmethod
    def from_env(cls, env: Env, *, publish_timeout: float, max_body_bytes: int) -> SpoolConfig:
        directory = env.optional_text("SPOOL_DIR")
        largest = max_record_bytes(max_body_bytes) + _FRAME_SLACK
        max_bytes = env.integer("SPOOL_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=1)
        if max_bytes < 4 * largest:
            raise ConfigError("SPOOL_MAX_BYTES", f"must be at least {4 * largest} (four records "
                              f"of the largest body MAX_BODY_BYTES allows), got {max_bytes}")
        after = env.number("SPOOL_AFTER_SECONDS", publish_timeout / 2, minimum=0.01)
        if after >= publish_timeout:
            raise ConfigError("SPOOL_AFTER_SECONDS", f"must be below PUBLISH_TIMEOUT_SECONDS "
                              f"({publish_timeout}) to leave time for the fsync, got {after}")
        return cls(
            directory=Path(directory).resolve() if directory is not None else None,
            max_bytes=max_bytes,
            after_seconds=after,
            largest_record_bytes=largest,
        )
