"""The archiver's Prometheus metrics (``archiver_*``; the dashboard relies on these names).

The consumer framework adds its own ``archiver_*`` metrics (messages, processing time,
consumer lag, in-flight messages, paused, commits) to the same registry. Label values come
from closed sets only: no ids, hosts or URLs.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.consumers.archiver.netguard import REFUSAL_REASONS
from service.contracts.vocabulary import FILE_ROLES

PREFIX: Final = "archiver"
DOWNLOAD_OK: Final = "ok"
STORED: Final = "stored"
ALREADY_STORED: Final = "already_stored"
STORAGE: Final = "storage"
DEAD_LETTER_REASONS: Final = (*sorted(REFUSAL_REASONS), STORAGE)
SKIP_REASONS: Final = ("malformed_event", "track_without_id", "unusable_file")


class ArchiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.downloads = Counter(
            f"{PREFIX}_downloads", "Downloads (after retries), by outcome: ok or the refusal "
            "reason.", ["outcome"], registry=registry,
        )
        self.download_bytes = Counter(
            f"{PREFIX}_download_bytes", "Bytes downloaded, by outcome.", ["outcome"],
            registry=registry,
        )
        self.download_seconds = Histogram(
            f"{PREFIX}_download_seconds", "Time to download one object, retries included.",
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
        )
        self.retries = Counter(
            f"{PREFIX}_retries", "Download attempts beyond the first.", registry=registry,
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_dead_lettered", "Objects sent to the dead-letter topic, by reason.",
            ["reason"], registry=registry,
        )
        self.in_flight_downloads = Gauge(
            f"{PREFIX}_in_flight_downloads", "Downloads running now.", registry=registry,
        )
        self.objects_stored = Counter(
            f"{PREFIX}_objects_stored", "Objects reported as archived, by object (the file "
            "role) and result (stored now, or already_stored and not downloaded again).",
            ["object", "result"], registry=registry,
        )
        self.skipped = Counter(
            f"{PREFIX}_skipped", "Events, tracks or files that cannot be archived at all, "
            "by reason.",
            ["reason"], registry=registry,
        )
        self.storage_failures = Counter(
            f"{PREFIX}_storage_failures", "Failed storage operations (each retry counts), by "
            "operation.", ["operation"], registry=registry,
        )
        self.circuit_open = Gauge(
            f"{PREFIX}_download_circuit_open", "1 while downloads fail nearly everywhere and "
            "dead-lettering is suspended.", registry=registry,
        )
        self._initialize()

    def _initialize(self) -> None:
        """Every label value appears at 0 from the start, so rates and alerts work."""
        for outcome in (DOWNLOAD_OK, *sorted(REFUSAL_REASONS)):
            self.downloads.labels(outcome)
        self.download_bytes.labels(DOWNLOAD_OK)
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(reason)
        for role in FILE_ROLES:
            for result in (STORED, ALREADY_STORED):
                self.objects_stored.labels(role, result)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for operation in ("stat", "put"):
            self.storage_failures.labels(operation)
