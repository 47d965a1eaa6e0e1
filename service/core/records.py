"""Kafka record values and headers (pure).

Every record we write follows the CloudEvents 1.0 Kafka protocol binding in binary
content mode: the envelope travels in ``ce_*`` headers (:func:`envelope_headers`, the
one place they are built), the value is the event data.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Final

from service.core.kinds.base import callback_route, reconciler_source
from service.core.model import CallbackEvent, Rejection
from service.core.timefmt import rfc3339

Headers = list[tuple[str, bytes]]

CE_SPECVERSION: Final = "1.0"
JSON_CONTENT_TYPE: Final = b"application/json"


def event_type(kind: str, stage: str) -> str:
    return f"music.callback.{kind}.{stage}"


def envelope_headers(
    *, ce_id: str, source: str, ce_type: str, time: datetime, subject: str, dataschema: str,
) -> Headers:
    """The CloudEvents headers of a JSON record (binary content mode)."""
    return [
        ("ce_specversion", CE_SPECVERSION.encode()),
        ("ce_id", ce_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", ce_type.encode()),
        ("ce_time", rfc3339(time).encode()),
        ("ce_subject", subject.encode()),
        ("ce_dataschema", dataschema.encode()),
        ("content-type", JSON_CONTENT_TYPE),
    ]


def cloudevent_headers(event: CallbackEvent, *, dataschema: str) -> Headers:
    """The envelope: ``ce_source`` is the kind's route (``/reconciler/<kind>`` for an
    event the reconciler recovered), ``ce_type`` names kind and stage."""
    source = (reconciler_source(event.kind) if event.recovered_by is not None
              else callback_route(event.kind))
    return envelope_headers(ce_id=event.event_id, source=source,
                            ce_type=event_type(event.kind, event.stage), time=event.received_at,
                            subject=event.task_id, dataschema=dataschema)


def rejected_value(
    rejection: Rejection,
    body: bytes,
    *,
    received_at: datetime,
    content_type: str | None,
    kind: str,
) -> dict[str, Any]:
    """The rejected-topic value: reason, errors, the kind and its route, and the body
    kept byte for byte."""
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    return {
        "reason": rejection.reason,
        "errors": [error.as_dict() for error in rejection.errors],
        "received_at": rfc3339(received_at),
        "content_type": content_type,
        "task_id": rejection.task_id,
        "source": callback_route(kind),
        "kind": kind,
        "encoding": encoding,
        "body": text,
    }


def body_from_rejected(value: dict[str, Any]) -> bytes:
    """The exact bytes that were received, for replay after a fix."""
    body: str = value["body"]
    if value.get("encoding") == "base64":
        return base64.b64decode(body, validate=True)
    return body.encode("utf-8")
