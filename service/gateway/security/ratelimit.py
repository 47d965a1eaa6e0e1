"""Token-bucket rate limiting keyed by a string, with bounded memory.

Each key has a bucket of up to ``burst`` tokens refilled at ``rate`` tokens per
second; a request takes one token. Buckets live in an ``OrderedDict`` used as
an LRU: every call is O(1) and beyond ``max_keys`` the least recently seen key
is forgotten (it comes back with a full bucket, which is the price of bounded
memory: size ``max_keys`` above the number of distinct legitimate sources).

Not thread-safe; meant for one asyncio event loop.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

_IPV6_PREFIX = 64


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be a positive number of requests per second")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._rate = float(rate)
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        # key -> (tokens available, time of last update)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str) -> tuple[bool, float]:
        """Take one token for ``key``: ``(allowed, retry_after_seconds)``.

        ``retry_after_seconds`` is 0 when allowed, otherwise the time until one
        token is available; round it up (``math.ceil``) for a ``Retry-After`` header.
        """
        now = self._clock()
        tokens = self._refilled(key, now)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return True, 0.0
        self._store(key, tokens, now)
        return False, (1.0 - tokens) / self._rate

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` has a token again, 0 when it has one now; takes nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        stored, last = bucket
        tokens = min(self._burst, stored + max(0.0, self._clock() - last) * self._rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def charge(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens (never below zero): the price of work already done."""
        now = self._clock()
        self._store(key, max(0.0, self._refilled(key, now) - cost), now)

    def _refilled(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._burst
        stored, last = bucket
        self._buckets.move_to_end(key)
        elapsed = max(0.0, now - last)  # a clock stepping back never adds tokens
        return min(self._burst, stored + elapsed * self._rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


@functools.lru_cache(maxsize=4096)  # the same few sources on every request
def address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Rate-limit key for a client address: IPv4 as is, IPv6 by its /64.

    One IPv6 host usually controls a whole /64, so keying by full address would
    let it mint fresh buckets (and flush the LRU) at will.
    """
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address), _IPV6_PREFIX), strict=False))
    return str(address)
