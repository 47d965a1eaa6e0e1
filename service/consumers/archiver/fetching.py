"""Downloading one object: each candidate URL in turn, measured, fed to the circuit.

Refused or failed downloads after the retry budget (``download_with_retries``:
exponential backoff with jitter for network errors, timeouts, 5xx, 408 and 429) are the
data's fault: the caller dead-letters them, unless the circuit (:mod:`.circuit`) is open
and the failure was transient, in which case the object is held and tried again.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from service.consumers.archiver.circuit import DownloadCircuit, counts_as_answered
from service.consumers.archiver.download import (
    DownloadLimits,
    DownloadResult,
    download_with_retries,
)
from service.consumers.archiver.metrics import DOWNLOAD_OK, ArchiverMetrics
from service.consumers.archiver.netguard import AddressPolicy, DownloadRefused
from service.consumers.archiver.plan import Job
from service.consumers.archiver.reports import Failure
from service.contracts.vocabulary import FileRole

log = structlog.get_logger(__name__)

#: Downloads ``url`` to ``dest`` under the limits of the file's role.
Fetch = Callable[[str, Path, FileRole], Awaitable[DownloadResult]]

MAX_DETAIL_CHARS: Final = 4000
MAX_URL_CHARS: Final = 16 * 1024


def downloader(session: Any, limits: Mapping[FileRole, DownloadLimits],
               policy: AddressPolicy, *, attempts: int, base_delay: float,
               max_delay: float) -> Fetch:
    """The production :data:`Fetch`: guarded, bounded downloads with retries."""

    async def fetch(url: str, dest: Path, role: FileRole) -> DownloadResult:
        return await download_with_retries(session, url, dest, limits[role], policy,
                                           attempts=attempts, base_delay=base_delay,
                                           max_delay=max_delay)

    return fetch


def host(url: str) -> str:
    try:
        return (urllib.parse.urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Fetcher:
    def __init__(self, fetch: Fetch, circuit: DownloadCircuit, metrics: ArchiverMetrics) -> None:
        self._fetch = fetch
        self._circuit = circuit
        self._metrics = metrics

    async def first_that_works(self, job: Job, dest: Path,
                               ) -> tuple[str, DownloadResult] | Failure:
        """Try each candidate URL in turn; the failure reported is the first URL's."""
        refusals: list[DownloadRefused] = []
        for url in job.urls:
            started = time.perf_counter()
            try:
                result = await self._fetch(url, dest, job.role)
            except DownloadRefused as exc:
                self._observe(exc.reason, exc.attempts, started)
                answered = counts_as_answered(exc)
                if answered is not None:
                    self._circuit.record(host(url), ok=answered)
                refusals.append(exc)
                log.debug("download_failed", object=job.role, url=url, reason=exc.reason,
                          detail=exc.detail, attempts=exc.attempts)
                continue
            self._observe(DOWNLOAD_OK, result.attempts, started)
            self._metrics.download_bytes.labels(DOWNLOAD_OK).inc(result.size)
            self._circuit.record(host(url), ok=True)
            return url, result
        first = refusals[0]
        detail = first.detail
        if len(refusals) > 1:
            detail += "; fallback " + "; ".join(str(exc) for exc in refusals[1:])
        return Failure(
            url=cut(job.urls[0], MAX_URL_CHARS), reason=first.reason,
            detail=cut(detail, MAX_DETAIL_CHARS), attempts=sum(e.attempts for e in refusals),
            status=first.status, transient=any(e.retryable for e in refusals),
        )

    def _observe(self, outcome: str, attempts: int, started: float) -> None:
        self._metrics.downloads.labels(outcome).inc()
        self._metrics.download_seconds.observe(time.perf_counter() - started)
        if attempts > 1:
            self._metrics.retries.inc(attempts - 1)
