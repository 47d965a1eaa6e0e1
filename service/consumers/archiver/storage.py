"""Object storage as the archiver uses it: a failure is an outage, retried briefly.

``StorageError`` on stat or put is retried :data:`STORAGE_ATTEMPTS` times with
exponential backoff and jitter, then :class:`StorageUnavailableError` is raised: the
consumer stops without committing, the process exits non-zero and is restarted, and the
event is processed again. It is never dead-lettered: the data is not at fault.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from service.consumers.archiver.metrics import ArchiverMetrics
from service.retry import Backoff
from service.storage.base import ObjectMetadata, ObjectStore, StorageError

log = structlog.get_logger(__name__)

T = TypeVar("T")

STORAGE_ATTEMPTS: Final = 3
STORAGE_BASE_DELAY: Final = 0.5


class StorageUnavailableError(RuntimeError):
    """The object store keeps failing: an outage, so the event must not be committed."""


class ArchiveStorage:
    """``stat`` and ``put`` on the store, each with the outage policy above."""

    def __init__(self, store: ObjectStore, metrics: ArchiverMetrics, *,
                 base_delay: float = STORAGE_BASE_DELAY) -> None:
        self.store = store
        self._metrics = metrics
        # base, 2 x base, 4 x base (uncapped: only STORAGE_ATTEMPTS tries)
        self._backoff = Backoff(first=base_delay, cap=math.inf)

    def uri(self, key: str) -> str:
        return self.store.uri(key)

    async def stat(self, key: str) -> ObjectMetadata | None:
        return await self._retried("stat", lambda: self.store.stat(key))

    async def put(self, key: str, path: Path, metadata: ObjectMetadata) -> None:
        """Store ``path`` under ``key``; ``ValueError`` when the store cannot represent it."""
        await self._retried("put", lambda: self.store.put_file(key, path, metadata))

    async def _retried(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(stop=stop_after_attempt(STORAGE_ATTEMPTS), wait=self._backoff,
                                 retry=retry_if_exception_type(StorageError), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await call()
                    except StorageError as exc:
                        self._metrics.storage_failures.labels(operation).inc()
                        log.warning("storage_failed", operation=operation,
                                    attempt=attempt.retry_state.attempt_number,
                                    error=str(exc)[:300])
                        raise
        except StorageError as exc:
            raise StorageUnavailableError(
                f"storage {operation} failed {STORAGE_ATTEMPTS} times") from exc
        raise AssertionError("unreachable")  # pragma: no cover
