"""The reconciler's Prometheus metrics (``reconciler_*``). Every label is a closed set:
the kinds of the registry, the stages, the poll outcomes below, the provider codes of
:data:`~service.consumers.reconciler.provider.ERROR_CODE_LABELS`. Series are created at
0 up front so rates and alerts start at 0 rather than absent."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.consumers.reconciler.provider import ERROR_CODE_LABELS
from service.core.kinds import KIND_NAMES
from service.core.model import STAGES

PREFIX: Final = "reconciler"
POLL_OUTCOMES: Final = (
    "pending",  # the provider has no outcome yet
    "recovered",  # an event was published from the answer
    "already_seen",  # the answer shows a stage the events topic already has
    "throttled",  # 429, 430, 455: every request paused
    "provider_error",  # 5xx: every request paused
    "rejected",  # another code (401, 404, ...)
    "network",  # no answer (connection, timeout)
    "unreadable",  # not JSON, too large, not the answer's or the callback's shape
    "publish_failed",  # the broker did not acknowledge the recovered event: asked again
)
#: How an open task ended: its terminal event came from a callback, from polling, or the
#: reconciler gave up at the horizon.
CLOSED_BY: Final = ("callback", "polling", "horizon")
RECORD_TOPICS: Final = ("tasks", "events")


class ReconcilerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.open_tasks = Gauge(
            f"{PREFIX}_open_tasks", "Submitted tasks without a terminal event, kept in state.",
            registry=registry)
        self.silent_tasks = Gauge(
            f"{PREFIX}_silent_tasks",
            "Open tasks past RECONCILE_AFTER_SECONDS since submission: they are polled.",
            registry=registry)
        self.polls = Counter(
            f"{PREFIX}_polls", "Record-info requests, by outcome.", ["outcome"],
            registry=registry)
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds", "Time for one record-info request.",
            registry=registry, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.provider_errors = Counter(
            f"{PREFIX}_provider_errors", "Record-info requests the provider refused or did not "
            "answer, by code (timeout and network for no answer).", ["code"], registry=registry)
        self.tasks_closed = Counter(
            f"{PREFIX}_tasks_closed", "Open tasks that reached a terminal event, by kind and by "
            'what delivered it; by="polling" counts the tasks recovered by polling.',
            ["kind", "by"], registry=registry)
        self.events_published = Counter(
            f"{PREFIX}_events_published", "Events the reconciler published (recovered by "
            "polling, or the error at the horizon), by kind and stage.", ["kind", "stage"],
            registry=registry)
        self.evicted_tasks = Counter(
            f"{PREFIX}_evicted_tasks", "Open tasks forgotten because RECONCILE_MAX_OPEN_TASKS "
            "was reached (they are not polled).", registry=registry)
        self.invalid_records = Counter(
            f"{PREFIX}_invalid_records", "Records of the tasks or events topic that could not "
            "be read (skipped), by topic.", ["topic"], registry=registry)
        self.backoff_active = Gauge(
            f"{PREFIX}_backoff_active", "1 while every request to the provider is paused after "
            "429, 430, 455 or 5xx.", registry=registry)
        self.state_rebuilt = Gauge(
            f"{PREFIX}_state_rebuilt", "1 once the state has been rebuilt from the topics and "
            "polling has started.", registry=registry)
        for outcome in POLL_OUTCOMES:
            self.polls.labels(outcome)
        for code in ERROR_CODE_LABELS:
            self.provider_errors.labels(code)
        for kind in KIND_NAMES:
            for by in CLOSED_BY:
                self.tasks_closed.labels(kind, by)
            for stage in STAGES:
                self.events_published.labels(kind, stage)
        for topic in RECORD_TOPICS:
            self.invalid_records.labels(topic)
