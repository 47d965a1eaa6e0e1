"""Retry with exponential backoff and jitter (on tenacity): one policy for every retry loop.

``Backoff`` is the wait: ``first``, twice that, ... capped at ``cap``, each scaled by a
jitter in [0.5, 1) so clients restarted together do not retry in step. It is a tenacity
wait strategy, and ``delay(n)`` serves loops that keep their own failure count (the spool
forwarder). ``retry_until_stopped`` retries a connect-like call until it succeeds or the
process stops: the reconnect loops of the Kafka producer, the consumer and the metrics
consumer's topic listing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Slices in which a wait looks at the stop condition (a callable, not an event).
_STOP_POLL_SECONDS: Final = 0.1
# 2**64 times any positive first delay is far past any cap; keeps the float finite.
_MAX_DOUBLINGS: Final = 64


@dataclass(frozen=True)
class Backoff:
    """Waits of ``first``, ``2 x first``, ... at most ``cap`` seconds, each times [0.5, 1)."""

    first: float = 0.5
    cap: float = 10.0

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (1 for the first)."""
        base = min(self.first * 2.0 ** min(failures - 1, _MAX_DOUBLINGS), self.cap)
        return base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret

    def __call__(self, state: RetryCallState) -> float:
        """As a tenacity wait strategy."""
        return self.delay(state.attempt_number)


#: Reconnecting to the broker: 0.5 s doubling up to 10 s.
RECONNECT: Final = Backoff(first=0.5, cap=10.0)


class _Stopped(Exception):  # noqa: N818 - a signal inside this module, not an error
    """Raised instead of an attempt once the stop condition holds; never retried."""


def _never() -> bool:
    return False


async def retry_until_stopped(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    failure_event: str,
    stopped: Callable[[], bool] = _never,
    backoff: Backoff = RECONNECT,
) -> T | None:
    """``attempt()`` until it returns (its result) or ``stopped()`` holds (None).

    Only ``retry_on`` exceptions are retried, each logged as a warning ``failure_event``
    with the error's type and the wait; anything else propagates. ``stopped`` is looked
    at before every attempt and during the waits, so a stop is noticed within 0.1 s.
    """

    async def guarded() -> T:
        if stopped():
            raise _Stopped
        return await attempt()

    async def sleep(seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # The stop condition is a predicate (the metrics consumer combines two flags), not
        # one event to wait on: look at it every 0.1 s.
        while not stopped() and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, _STOP_POLL_SECONDS))

    def log_failure(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(failure_event, error=type(error).__name__, attempt=state.attempt_number,
                    retry_in_s=round(wait, 2))

    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, retry_on) and not isinstance(exc, _Stopped)

    retrying = AsyncRetrying(retry=retry_if_exception(retryable), wait=backoff,
                             sleep=sleep, before_sleep=log_failure, reraise=True)
    try:
        return await retrying(guarded)
    except _Stopped:
        return None
