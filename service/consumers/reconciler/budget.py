"""The global request budget towards the provider, and the back-off when it says slow down.

One token bucket for every record-info request of the process: ``rate`` per second,
a burst of one second's worth. When the provider answers 429, 430 (call frequency too
high), 455 (maintenance) or 5xx, every request pauses: 1 s, doubling with each further
refusal up to ``backoff_max`` (each pause drawn between half and all of that, so
restarted replicas do not fall into step), or the ``Retry-After`` it asked for when
that is longer. Refusals of requests that were already in flight during a pause do not
escalate it again. What the bucket gathered during a pause is dropped when it ends, so
requests resume at the budget's rate rather than as a burst. A successful answer
resets the escalation.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final

from service.gateway.security.ratelimit import RateLimiter

BACKOFF_BASE_SECONDS: Final = 1.0
_KEY: Final = "provider"
# A wait computed as a hair above zero (rounding) must still let the clock move on.
_MIN_WAIT_SECONDS: Final = 0.001


class PollBudget:
    def __init__(
        self,
        rate: float,
        *,
        backoff_max: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.rate = rate
        self.burst = max(1, math.ceil(rate))
        self._bucket = RateLimiter(rate, self.burst, max_keys=1, clock=clock)
        self._backoff_max = backoff_max
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._paused_until = 0.0
        self._strikes = 0

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    async def acquire(self) -> None:
        """Wait for the pause to end and for a token."""
        while True:
            now = self._clock()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                while self._bucket.allow(_KEY)[0]:  # drop the tokens the pause gathered
                    pass
                continue
            allowed, wait = self._bucket.allow(_KEY)
            if allowed:
                return
            await self._sleep(max(wait, _MIN_WAIT_SECONDS))

    def slow_down(self, retry_after: float | None = None) -> float:
        """The provider refused for load: pause every request; returns the pause."""
        now = self._clock()
        if now >= self._paused_until or self._strikes == 0:
            self._strikes += 1
        ceiling = min(self._backoff_max, BACKOFF_BASE_SECONDS * 2 ** min(self._strikes - 1, 30))
        delay = self._jitter(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._backoff_max))
        self._paused_until = max(self._paused_until, now + delay)
        return delay

    def answered(self) -> None:
        """The provider answered normally: the next refusal starts from 1 s again."""
        self._strikes = 0
