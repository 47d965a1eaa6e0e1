"""Topic sizing for ``python -m service topics ensure`` (``TOPIC_*``, ``MAX_BODY_BYTES``)."""

from __future__ import annotations

from dataclasses import dataclass

from service.config.env import Env
from service.config.kafka import DEFAULT_MAX_BODY_BYTES, read_max_body_bytes


@dataclass(frozen=True)
class TopicSettings:
    partitions: int = 6
    replication_factor: int = 1
    #: None: the broker's default.
    min_insync_replicas: int | None = None
    #: The gateway's largest body; the callback topics' ``max.message.bytes`` follows it.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def from_env(cls, env: Env) -> TopicSettings:
        min_isr = None
        if env.raw("TOPIC_MIN_INSYNC_REPLICAS") is not None:
            min_isr = env.integer("TOPIC_MIN_INSYNC_REPLICAS", 1, minimum=1)
        return cls(
            partitions=env.integer("TOPIC_PARTITIONS", cls.partitions, minimum=1,
                                   maximum=10_000),
            replication_factor=env.integer("TOPIC_REPLICATION_FACTOR", cls.replication_factor,
                                           minimum=1, maximum=32),
            min_insync_replicas=min_isr,
            max_body_bytes=read_max_body_bytes(env),
        )
