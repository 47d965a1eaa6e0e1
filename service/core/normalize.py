"""Provider callback → normalized event v1: one pipeline for every kind. Pure: no I/O,
no clock, no globals.

Tolerant reader, strict writer: each kind's inbound schema accepts what the provider
really sends (see ``shared/provider-docs/variants.md``); the output always has the one
shape of ``schemas/music.callbacks.v1.schema.json``. What differs between kinds (where
the task id lives, the stage, tracks, files, lyrics, midi) is read by the kind's own
module in ``service.core.kinds``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, Final

import orjson

from service.contracts.registry import SchemaError, SchemaRegistry
from service.core.kinds.base import CallbackKind, Document, status_code
from service.core.model import (
    CallbackEvent,
    Decoded,
    RecoveredBy,
    Rejection,
    RejectReason,
    Stage,
)
from service.core.timefmt import rfc3339

# Real callbacks nest up to 7 levels deep (midi notes); 32 leaves room for undocumented
# fields while refusing bodies built to exhaust a reader (orjson itself stops at 1024).
MAX_DEPTH: Final = 32

_UTF8_BOM: Final = b"\xef\xbb\xbf"


def event_id_for(task_id: str, stage: Stage, body: bytes) -> str:
    """Content-derived id: a re-delivery of the same bytes gets the same id."""
    digest = hashlib.sha256()
    digest.update(task_id.encode("utf-8"))
    digest.update(b"\n")
    digest.update(stage.encode("ascii"))
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()[:32]


def recovered_event_id(task_id: str, stage: Stage, recovered_by: RecoveredBy) -> str:
    """The id of an event the reconciler recovered: one per task, stage and way, whatever
    the provider's answer held (its URLs may be signed afresh for every request), so a
    restarted reconciler that recovers the same stage again writes the same id. No
    callback can have it: the basis ``recovered:<way>`` is not a JSON object."""
    return event_id_for(task_id, stage, f"recovered:{recovered_by}".encode("ascii"))


def decode(body: bytes, kind: CallbackKind) -> Decoded | Rejection:
    """Parse the body as one JSON object; read the kind's task id if it is there.

    The id is read before validation because verification (the provider HMAC) needs it.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", (SchemaError("", f"invalid UTF-8 at byte {exc.start}"),))
    try:
        document = orjson.loads(body.removeprefix(_UTF8_BOM))
    except orjson.JSONDecodeError as exc:
        reason: RejectReason = "too_deep" if "depth limit" in str(exc) else "invalid_json"
        return Rejection(reason, (SchemaError("", str(exc)[:200]),))
    if not isinstance(document, dict):
        return Rejection("not_an_object", (SchemaError("", "the body must be a JSON object"),))
    if _may_nest_deeper(body, MAX_DEPTH) and _depth_exceeds(document, MAX_DEPTH):
        return Rejection(
            "too_deep", (SchemaError("", f"nesting deeper than {MAX_DEPTH} levels"),),
        )
    return Decoded(document, kind.task_id(document))


def normalize(
    decoded: Decoded,
    body: bytes,
    *,
    kind: CallbackKind,
    received_at: datetime,
    schemas: SchemaRegistry,
    provider_tz: tzinfo,
    task_ref: str | None = None,
) -> CallbackEvent | Rejection:
    """Validate a decoded callback of ``kind`` and build its v1 event."""
    return _event(decoded.document, decoded.task_id, kind=kind, received_at=received_at,
                  schemas=schemas, provider_tz=provider_tz, task_ref=task_ref,
                  event_id=lambda task_id, stage: event_id_for(task_id, stage, body),
                  recovered_by=None)


def normalize_recovered(
    document: Document,
    *,
    kind: CallbackKind,
    recovered_by: RecoveredBy,
    received_at: datetime,
    schemas: SchemaRegistry,
    provider_tz: tzinfo,
    task_ref: str | None = None,
) -> CallbackEvent | Rejection:
    """The v1 event of a callback the reconciler built (``service.core.recovery``): the
    same validation, reader and shape as a received one, marked ``recovered_by``, with
    the id of :func:`recovered_event_id`."""
    return _event(document, kind.task_id(document), kind=kind, received_at=received_at,
                  schemas=schemas, provider_tz=provider_tz, task_ref=task_ref,
                  event_id=lambda task_id, stage: recovered_event_id(task_id, stage,
                                                                    recovered_by),
                  recovered_by=recovered_by)


def _event(
    document: Document,
    task_id: str | None,
    *,
    kind: CallbackKind,
    received_at: datetime,
    schemas: SchemaRegistry,
    provider_tz: tzinfo,
    task_ref: str | None,
    event_id: Callable[[str, Stage], str],
    recovered_by: RecoveredBy | None,
) -> CallbackEvent | Rejection:
    errors = schemas.errors(kind.schema, document)
    if errors:
        return Rejection("schema_violation", tuple(errors), task_id)
    if task_id is None:
        return kind.missing_task_id()
    reading = kind.read(document, provider_tz)
    if isinstance(reading, Rejection):
        return dataclasses.replace(reading, task_id=task_id)
    event: dict[str, Any] = {
        "event_id": event_id(task_id, reading.stage),
        "task_id": task_id,
        "kind": kind.name,
        "stage": reading.stage,
        "code": status_code(document),
        "message": document.get("msg"),
        "received_at": rfc3339(received_at),
        "error": reading.error,
        "tracks": reading.tracks,
        "files": reading.files,
        **reading.extra,
        "raw": document,
    }
    if task_ref is not None:
        event["task_ref"] = task_ref
    if recovered_by is not None:
        event["recovered_by"] = recovered_by
    return CallbackEvent(event["event_id"], task_id, kind.name, reading.stage, received_at, event,
                         recovered_by)


def _may_nest_deeper(body: bytes, limit: int) -> bool:
    """False when the body has too few brackets to nest ``limit`` levels (brackets inside
    strings only make this say True): the walk below is skipped for nearly every body."""
    return body.count(b"{") + body.count(b"[") > limit


def _depth_exceeds(document: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return False
