"""Provider callback → normalized event v1. Pure: no I/O, no clock, no globals.

Tolerant reader, strict writer: the inbound schema accepts what the provider
really sends (see ``shared/provider-docs/variants.md``); the output always has
the one shape of ``schemas/music.callbacks.v1.schema.json``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, tzinfo
from typing import Any, Final

import orjson

from service.contracts.codec import INBOUND_EXTEND_MUSIC, SchemaCodec, SchemaError
from service.core.model import (
    KIND_EXTEND_MUSIC,
    CallbackEvent,
    Decoded,
    Rejection,
    RejectReason,
    Stage,
)
from service.core.timefmt import parse_create_time, rfc3339

# Real callbacks nest 4 levels deep; 32 leaves room for undocumented fields while
# refusing bodies built to exhaust a reader (orjson itself stops at 1024).
MAX_DEPTH: Final = 32

_CALLBACK_TYPES: Final[dict[str, Stage]] = {
    "text": "text",
    "first": "first",
    "complete": "complete",
    "error": "error",
    "failed": "error",  # one mirror documents "failed"
}
_URL_FIELDS: Final = (
    "audio_url",
    "source_audio_url",
    "stream_audio_url",
    "source_stream_audio_url",
    "image_url",
    "source_image_url",
)
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


def decode(body: bytes) -> Decoded | Rejection:
    """Parse the body as one JSON object; read the task id if it is there."""
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
    if _depth_exceeds(document, MAX_DEPTH):
        return Rejection(
            "too_deep", (SchemaError("", f"nesting deeper than {MAX_DEPTH} levels"),),
        )
    return Decoded(document, read_task_id(document))


def read_task_id(document: dict[str, Any]) -> str | None:
    """``data.task_id``, its ``data.taskId`` alias, or a top-level ``task_id``."""
    data = document.get("data")
    candidates: list[object] = []
    if isinstance(data, dict):
        candidates += [data.get("task_id"), data.get("taskId")]
    candidates.append(document.get("task_id"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip() and len(candidate) <= 256:
            return candidate.strip()
    return None


def normalize(
    decoded: Decoded,
    body: bytes,
    *,
    received_at: datetime,
    codec: SchemaCodec,
    provider_tz: tzinfo,
    task_ref: str | None = None,
) -> CallbackEvent | Rejection:
    """Validate a decoded extend-music callback and build its v1 event."""
    document, task_id = decoded.document, decoded.task_id
    errors = codec.errors(INBOUND_EXTEND_MUSIC, document)
    if errors:
        return Rejection("schema_violation", tuple(errors), task_id)
    if task_id is None:
        return Rejection(
            "missing_task_id",
            (SchemaError("/data/task_id", "no task id in data.task_id, data.taskId or task_id"),),
        )
    data: dict[str, Any] = document["data"]
    callback_type = data["callbackType"]
    mapped = _CALLBACK_TYPES.get(callback_type.strip().lower())
    if mapped is None:
        return Rejection(
            "unknown_callback_type",
            (SchemaError("/data/callbackType", f"unknown callback type {callback_type[:40]!r}"),),
            task_id,
        )
    code = int(document["code"])  # an integral float (200.0) is written as an integer
    stage: Stage = "error" if mapped == "error" or code != 200 else mapped
    event_id = event_id_for(task_id, stage, body)
    tracks = [_track(item, provider_tz) for item in (data.get("data") or [])]
    event: dict[str, Any] = {
        "event_id": event_id,
        "task_id": task_id,
        "kind": KIND_EXTEND_MUSIC,
        "stage": stage,
        "code": code,
        "message": document.get("msg"),
        "received_at": rfc3339(received_at),
        "error": data.get("error"),
        "tracks": tracks,
        "raw": document,
    }
    if task_ref is not None:
        event["task_ref"] = task_ref
    return CallbackEvent(event_id, task_id, stage, received_at, event)


def _track(item: dict[str, Any], provider_tz: tzinfo) -> dict[str, Any]:
    track: dict[str, Any] = {
        "id": item.get("id"),
        "title": item.get("title"),
        "prompt": item.get("prompt"),
        "model_name": item.get("model_name"),
        "tags": split_tags(item.get("tags")),
        "duration_seconds": _duration(item.get("duration")),
        "created_at": parse_create_time(item.get("createTime"), provider_tz),
    }
    for name in _URL_FIELDS:
        value = item.get(name)
        track[name] = value if isinstance(value, str) and value.strip() else None
    return track


def split_tags(tags: object) -> list[str]:
    """``"electrifying, rock"`` → ``["electrifying", "rock"]``; ``""`` → ``[]``."""
    if not isinstance(tags, str):
        return []
    return [tag.strip() for tag in tags.split(",") if tag.strip()]


def _duration(value: object) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value < 0 or value != value or value in (float("inf"), float("-inf")):  # noqa: PLR0124 - NaN check
        return None
    return value


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
