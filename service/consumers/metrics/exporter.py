"""The metrics consumer's Prometheus metrics (``music_*``; one registry per process).

Label cardinality is bounded by construction: no task, track or event ids and
no URLs. Every label value comes from a closed set:

* ``kind``: the callback kind, one of the event contract's 15 kinds; a kind
  from a future producer (or none) is reported as ``other``;
* ``stage``: text, first, complete, error;
* ``code``: the provider status codes known from its documentation and from
  real callbacks (``KNOWN_CODES``); any other value, including a missing or
  non-integer code, is reported as ``other``;
* ``role``: the archived file's role (audio, cover, wav, video, image, a stem),
  else ``other``; ``reason``: the archive-failed contract's reasons, else ``other``;
* ``phase``, ``topic`` (a topic *role*, not the topic name), ``table``, ``cause``.

Series are created at 0 up front where a kind can produce them (stages, phases,
tracks), so rates and alerts start at 0 rather than absent. The archive series
(``kind`` x ``role``, ``kind`` x ``reason``) appear on first use: which roles a kind
produces is the gateway's business, and the alerts do not depend on them existing.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.contracts.vocabulary import FILE_ROLES
from service.core.kinds import KIND_NAMES, ONE_SHOT_KIND_NAMES, TRACK_FAMILY_KIND_NAMES

STAGES: Final = ("text", "first", "complete", "error")
#: One-shot kinds answer with a single callback: complete, or error.
ONE_SHOT_STAGES: Final = ("complete", "error")
# Provider status codes seen in callbacks (shared/provider-docs/variants.md).
KNOWN_CODES: Final = frozenset({200, 400, 408, 413, 451, 500, 501, 531})
OTHER: Final = "other"
KIND_LABELS: Final = (*KIND_NAMES, OTHER)
ROLE_LABELS: Final = (*FILE_ROLES, OTHER)
DEAD_LETTER_REASONS: Final = (
    "forbidden_address", "forbidden_scheme", "too_large", "bad_content_type", "http_status",
    "timeout", "network", "storage",
)
TOPIC_ROLES: Final = ("events", "archived", "archive_failed")
PHASES: Final = ("text_to_first", "first_to_complete")
TABLES: Final = ("events", "archive")
EVICTION_CAUSES: Final = ("ttl", "capacity", "revoked")

# Seconds of music: the provider's tracks run from a few seconds to 8 minutes.
TRACK_DURATION_BUCKETS: Final = (15.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 240.0, 300.0,
                                 360.0, 480.0, 600.0)
# Generation phases take tens of seconds to a few minutes.
PHASE_BUCKETS: Final = (1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0,
                        600.0, 1800.0)
# createTime → received_at: generation time plus delivery (and provider retries).
DELAY_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                        4 * 3600.0, 24 * 3600.0)


def code_label(code: object) -> str:
    """The provider code as a bounded label value: a known code, else ``other``."""
    if isinstance(code, int) and not isinstance(code, bool) and code in KNOWN_CODES:
        return str(code)
    return OTHER


def closed_label(value: object, allowed: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


def stages_of(kind: str) -> tuple[str, ...]:
    """The stages a kind's callbacks can have (``other``: any)."""
    return ONE_SHOT_STAGES if kind in ONE_SHOT_KIND_NAMES else STAGES


class MusicMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.callbacks = Counter(
            "music_callbacks", "Distinct callback events (duplicates excluded), by kind, stage "
            "and provider code.", ["kind", "stage", "code"], registry=registry,
        )
        self.duplicates = Counter(
            "music_duplicate_callbacks", "Deliveries of an event id already seen for its task.",
            ["kind", "stage"], registry=registry,
        )
        self.repeated = Counter(
            "music_repeated_stages", "Events for a stage the task already reached, under a "
            "different event id (not counted again for the task).", ["kind", "stage"],
            registry=registry,
        )
        self.out_of_order = Counter(
            "music_out_of_order_stages", "Stages arriving after a later or terminal stage of "
            "their task (e.g. first after complete).", ["kind", "stage"], registry=registry,
        )
        self.tasks_completed = Counter(
            "music_tasks_completed", "Tasks that reached complete, by kind and provider code.",
            ["kind", "code"], registry=registry,
        )
        self.tasks_failed = Counter(
            "music_tasks_failed", "Tasks that reached error, by kind and provider code.",
            ["kind", "code"], registry=registry,
        )
        self.tracks = Counter(
            "music_tracks", "Tracks of completed tasks, by kind.", ["kind"], registry=registry,
        )
        self.track_duration = Histogram(
            "music_track_duration_seconds", "Length of the music of each completed track, by "
            "kind.", ["kind"], buckets=TRACK_DURATION_BUCKETS, registry=registry,
        )
        self.phase = Histogram(
            "music_task_phase_seconds", "Per task of the track family: received_at of text to "
            "first, and of first to complete, by kind.", ["kind", "phase"],
            buckets=PHASE_BUCKETS, registry=registry,
        )
        self.delay = Histogram(
            "music_callback_delay_seconds", "received_at minus the earliest track createTime "
            "of each distinct event (negative skew counts as 0), by kind.", ["kind"],
            buckets=DELAY_BUCKETS, registry=registry,
        )
        self.archived = Counter(
            "music_archived_objects", "Objects archived, by callback kind and file role "
            "(re-reports counted once).", ["kind", "role"], registry=registry,
        )
        self.archived_bytes = Counter(
            "music_archived_bytes", "Bytes of the objects archived, by callback kind and file "
            "role (re-reports counted once).", ["kind", "role"], registry=registry,
        )
        self.dead_letters = Counter(
            "music_archive_dead_letters", "Objects the archiver dead-lettered, by callback kind "
            "and reason.", ["kind", "reason"], registry=registry,
        )
        self.archive_duplicates = Counter(
            "music_duplicate_archive_reports", "Archive reports whose id was already seen.",
            ["topic"], registry=registry,
        )
        self.invalid = Counter(
            "music_invalid_records", "Records that could not be read, skipped and committed.",
            ["topic"], registry=registry,
        )
        self.state_entries = Gauge(
            "music_task_state_entries", "Entries in the bounded per-task state tables.",
            ["table"], registry=registry,
        )
        self.state_evictions = Counter(
            "music_task_state_evictions", "Per-task state entries dropped, by cause.",
            ["table", "cause"], registry=registry,
        )
        self._initialize()

    def _initialize(self) -> None:
        """Create the bounded label sets up front so rates start at 0, not at absent."""
        for kind in KIND_LABELS:
            for stage in stages_of(kind):
                self.duplicates.labels(kind, stage)
                self.repeated.labels(kind, stage)
                self.out_of_order.labels(kind, stage)
        for kind in (*TRACK_FAMILY_KIND_NAMES, OTHER):  # the kinds with tracks (and createTime)
            self.delay.labels(kind)
            self.tracks.labels(kind)
            self.track_duration.labels(kind)
            for phase in PHASES:
                self.phase.labels(kind, phase)
        for role in TOPIC_ROLES:
            self.invalid.labels(role)
        for role in ("archived", "archive_failed"):
            self.archive_duplicates.labels(role)
        for table in TABLES:
            self.state_entries.labels(table)
            for cause in EVICTION_CAUSES:
                self.state_evictions.labels(table, cause)
