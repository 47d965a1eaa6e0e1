"""Types shared by the normalization core and its callers (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from service.contracts.registry import SchemaError

Stage = Literal["text", "first", "complete", "error"]
STAGES: Final[tuple[Stage, ...]] = ("text", "first", "complete", "error")

#: How an event the provider never called back with was obtained: ``polling`` (the
#: reconciler read it from the provider's record-info answer) or ``horizon`` (the
#: reconciler gave up on a task that had no outcome within its horizon).
RecoveredBy = Literal["polling", "horizon"]
RECOVERED_BY: Final[tuple[RecoveredBy, ...]] = ("polling", "horizon")

RejectReason = Literal[
    "invalid_utf8",
    "invalid_json",
    "too_deep",
    "not_an_object",
    "schema_violation",
    "missing_task_id",
    "unknown_callback_type",
]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a verified body cannot become an event; it is still kept on the rejected topic."""

    reason: RejectReason
    errors: tuple[SchemaError, ...] = ()
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A body that parsed as a JSON object, with the task id when one can be read."""

    document: dict[str, Any]
    task_id: str | None


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """A normalized event ready for publishing: ``data`` is the v1 event value.

    ``recovered_by`` is set for events the reconciler built instead of a callback.
    """

    event_id: str
    task_id: str
    kind: str
    stage: Stage
    received_at: datetime
    data: dict[str, Any] = field(repr=False)
    recovered_by: RecoveredBy | None = None
