"""The download circuit breaker: dead letters are suspended while downloads fail nearly
everywhere (egress, DNS or a proxy down: not the data's fault).

:class:`DownloadCircuit` records each download's final outcome by host: *answered* for a
success and for permanent answers (4xx, too large, wrong type: the network works),
*failed* for the retryable kinds after the retry budget (network, timeout, 5xx/408/429);
policy refusals are not recorded (:func:`counts_as_answered`). It opens when, within the
last ``window_seconds`` (60), at least ``min_samples`` (6) outcomes were recorded, at least
``threshold`` (90 %) of them failed, and the failures span at least ``min_hosts`` (2)
distinct hosts. While it is open, an object whose download failed that way is not
dead-lettered but held: it waits for the cool-down (5 s, doubling on each failed probe, at
most 60 s) and is downloaded again as a probe; one answered probe closes the circuit.
Failures on a single host never open it: a dead host is that host's (data) problem.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from service.consumers.archiver.netguard import DownloadRefused

log = structlog.get_logger(__name__)


def counts_as_answered(exc: DownloadRefused) -> bool | None:
    """For the circuit: True if the host answered, False for a transient failure, None if
    no request was made (refused by policy: says nothing about the network)."""
    if exc.reason in ("forbidden_address", "forbidden_scheme"):
        return None
    return not exc.retryable


@dataclass
class DownloadCircuit:
    """Suspends dead-lettering while downloads fail nearly everywhere (see module doc)."""

    window_seconds: float = 60.0
    min_samples: int = 6
    min_hosts: int = 2
    threshold: float = 0.9
    cooldown_seconds: float = 5.0
    max_cooldown_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[bool], None] | None = None
    _samples: deque[tuple[float, str, bool]] = field(
        default_factory=lambda: deque(maxlen=10_000), init=False)
    _opened_at: float | None = field(default=None, init=False)
    _cooldown: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._cooldown = self.cooldown_seconds

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def record(self, host: str, *, ok: bool) -> None:
        """Note one download outcome: ``ok`` means the host answered usefully."""
        now = self.clock()
        self._samples.append((now, host, ok))
        while self._samples and self._samples[0][0] < now - self.window_seconds:
            self._samples.popleft()
        if self._opened_at is not None:
            if ok:  # the network works again
                self._opened_at = None
                self._cooldown = self.cooldown_seconds
                self._samples.clear()
                self._changed(opened=False)
            elif now >= self._opened_at + self._cooldown:  # a probe failed: open again, longer
                self._opened_at = now
                self._cooldown = min(self._cooldown * 2, self.max_cooldown_seconds)
            return
        if not ok and self._should_open():
            self._opened_at = now
            self._changed(opened=True)

    def _should_open(self) -> bool:
        total = len(self._samples)
        if total < self.min_samples:
            return False
        failures = [host for _, host, ok in self._samples if not ok]
        return (len(failures) / total >= self.threshold
                and len(set(failures)) >= self.min_hosts)

    def _changed(self, *, opened: bool) -> None:
        log.warning("download_circuit_opened" if opened else "download_circuit_closed",
                    cooldown_s=self._cooldown)
        if self.on_change is not None:
            self.on_change(opened)

    def remaining_cooldown(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self.clock())

    async def wait_until_allowed(self) -> None:
        """Return at once when closed; when open, after the cool-down (then probe)."""
        # A loop, not an Event: a failed probe may extend the cool-down meanwhile.
        while (remaining := self.remaining_cooldown()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
