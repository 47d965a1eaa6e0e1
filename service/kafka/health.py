"""One readiness probe for every Kafka client: does the cluster answer a metadata request?"""

from __future__ import annotations

import asyncio

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError


async def cluster_unreachable(client: AIOKafkaClient, deadline: float = 2.0) -> str | None:
    """None when the cluster answers within ``deadline`` seconds, else a reason."""
    try:
        async with asyncio.timeout(deadline):
            metadata = await client.fetch_all_metadata()
    except (TimeoutError, KafkaError, OSError):
        return "broker_unreachable"
    return None if metadata is not None else "broker_unreachable"
