"""Reading the two topics the reconciler follows (tolerant readers, pure).

* tasks topic (``music.tasks.submitted.v1``): ``task_id`` (else the key), ``kind`` (a
  registered kind with a record-info endpoint), ``submitted_at`` (RFC 3339, or epoch
  seconds or milliseconds; else the record's timestamp), ``task_ref``.
* events topic (``music.callbacks.v1``): the task id, the stage and how the event came
  (a callback, or ``recovered_by``). The CloudEvents headers say most of it
  (``ce_subject``, ``ce_type``, ``ce_source``), so the value is parsed only for what they
  do not say: an event from ``/reconciler/...`` (``recovered_by``), or one without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final

import orjson

from service.core.kinds import kind_named
from service.core.kinds.base import MAX_TASK_ID_CHARS, RECONCILER_SOURCE_PREFIX
from service.core.model import RECOVERED_BY, STAGES, RecoveredBy, Stage
from service.core.timefmt import epoch_seconds, parse_create_time

_EVENT_TYPE_PREFIX: Final = "music.callback."
_MAX_REF_CHARS: Final = 128
_STAGES: Final[dict[str, Stage]] = {stage: stage for stage in STAGES}
_WAYS: Final[dict[str, RecoveredBy]] = {way: way for way in RECOVERED_BY}

RawHeaders = Sequence[tuple[str, bytes | None]] | None


class UnreadableRecordError(ValueError):
    """The record cannot be used; the message is a short machine-readable reason."""


@dataclass(frozen=True, slots=True)
class Submission:
    task_id: str
    kind: str
    submitted_at: float  # epoch seconds
    task_ref: str | None


@dataclass(frozen=True, slots=True)
class Progress:
    task_id: str
    stage: Stage
    recovered_by: RecoveredBy | None


def read_submission(key: bytes | None, value: bytes | None, timestamp_ms: int) -> Submission:
    document = _object(value)
    task_id = _task_id(document.get("task_id")) or _task_id(_text_of(key))
    if task_id is None:
        raise UnreadableRecordError("missing_task_id")
    kind_name = document.get("kind")
    try:
        kind = kind_named(kind_name) if isinstance(kind_name, str) else None
    except KeyError:
        kind = None
    if kind is None or kind.record_info is None:
        raise UnreadableRecordError("unknown_kind")
    submitted_at = _moment(document.get("submitted_at"))
    if submitted_at is None:
        submitted_at = timestamp_ms / 1000
    task_ref = document.get("task_ref")
    if not (isinstance(task_ref, str) and 0 < len(task_ref) <= _MAX_REF_CHARS):
        task_ref = None
    return Submission(task_id, kind.name, submitted_at, task_ref)


def read_progress(key: bytes | None, value: bytes | None, raw_headers: RawHeaders) -> Progress:
    headers = {name: _text_of(raw) for name, raw in raw_headers or ()}
    task_id = _task_id(headers.get("ce_subject")) or _task_id(_text_of(key))
    ce_type = headers.get("ce_type") or ""
    stage: object = ce_type.rpartition(".")[2] if ce_type.startswith(_EVENT_TYPE_PREFIX) else None
    source = headers.get("ce_source")
    document: dict[str, Any] = {}
    if task_id is None or stage not in STAGES or source is None or source.startswith(
            RECONCILER_SOURCE_PREFIX):
        document = _object(value)
        task_id = _task_id(document.get("task_id")) or task_id
        stage = document.get("stage", stage)
    if task_id is None:
        raise UnreadableRecordError("missing_task_id")
    known = _STAGES.get(stage) if isinstance(stage, str) else None
    if known is None:
        raise UnreadableRecordError("unknown_stage")
    recovered_by = document.get("recovered_by")
    return Progress(task_id, known,
                    _WAYS.get(recovered_by) if isinstance(recovered_by, str) else None)


def _object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise UnreadableRecordError("no_value")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise UnreadableRecordError("invalid_json") from None
    if not isinstance(document, dict):
        raise UnreadableRecordError("not_an_object")
    return document


def _text_of(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _task_id(value: object) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= MAX_TASK_ID_CHARS:
        return value.strip()
    return None


def _moment(value: object) -> float | None:
    """RFC 3339 (or any form the provider's ``createTime`` takes: epoch seconds or
    milliseconds, ``YYYY-MM-DD HH:MM:SS`` read as UTC) as epoch seconds."""
    return epoch_seconds(parse_create_time(value, UTC))
