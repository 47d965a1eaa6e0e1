"""``python -m service topics ensure``: create missing topics, never fail on existing ones."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from service.config.env import Env
from service.config.kafka import KafkaSettings, max_record_bytes
from service.config.shared import TopicNames
from service.config.topics import TopicSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def project_topics(env: Env) -> list[TopicSpec]:
    """Every topic the project writes, with sizes that fit the largest accepted body."""
    topics = TopicNames.from_env(env)
    settings = TopicSettings.from_env(env)
    partitions, replication = settings.partitions, settings.replication_factor
    small = {} if settings.min_insync_replicas is None else {
        "min.insync.replicas": str(settings.min_insync_replicas)}
    big = {"max.message.bytes": str(max_record_bytes(settings.max_body_bytes)), **small}
    return [
        TopicSpec(topics.events, partitions, replication, dict(big)),
        TopicSpec(topics.rejected, partitions, replication, dict(big)),
        TopicSpec(topics.archived, partitions, replication, dict(small)),
        TopicSpec(topics.archive_failed, partitions, replication, dict(small)),
        TopicSpec(topics.tasks, partitions, replication, dict(small)),
    ]


async def ensure_topics(settings: KafkaSettings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []
        for spec in missing:
            response = await admin.create_topics([
                NewTopic(spec.name, spec.partitions, spec.replication_factor,
                         topic_configs=spec.config),
            ])
            # The response carries per-topic error codes instead of raising.
            code = next((entry[1] for entry in response.topic_errors if entry[0] == spec.name), 0)
            if code == TopicAlreadyExistsError.errno:
                continue  # created concurrently by another process: that is fine
            if code != 0:
                error = for_code(code)
                raise error(f"cannot create topic {spec.name!r}")
            created.append(spec.name)
        log.info("topics_ensured", created=created,
                 existing=sorted(existing & {s.name for s in specs}))
        return created
    finally:
        await admin.close()
