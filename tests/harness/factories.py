"""Test data: the values and records the services exchange, each built one way.

Values have the shapes the gateway (events, also :func:`normalized` from a provider's body
by the gateway's own code) and the archiver (archived reports, dead
letters) write. Records carry the CloudEvents envelope built by the service's own
:mod:`service.core.records` (``cloudevent_headers``/``envelope_headers``) with the ids the
archiver derives (:mod:`service.consumers.archiver.keys`): never written by hand. A test
that needs a partial or broken envelope (a tolerant reader's input) passes its headers to
:func:`consumer_record` itself.

The same records feed a processor in a unit test and the real broker in an integration
test (:func:`tests.harness.kafka_records.produce` sends a record's topic, key, value and
headers). No fixtures here: see the conftest files.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, cast

import orjson
from aiokafka import ConsumerRecord

from service.consumers.archiver.keys import archive_event_id, dead_letter_event_id
from service.consumers.archiver.reports import ARCHIVE_FAILED_TYPE, ARCHIVED_TYPE, SOURCE
from service.contracts.registry import ARCHIVE_FAILED_V1, ARCHIVED_V1, EVENT_V1, SchemaRegistry
from service.core.kinds import CallbackKind
from service.core.model import CallbackEvent, Rejection, Stage
from service.core.normalize import decode, normalize
from service.core.records import Headers, cloudevent_headers, envelope_headers
from service.kafka.consumer import Record
from service.observability.tracing import kafka_header

#: When every event of these factories was received unless a test says otherwise.
RECEIVED_AT: Final = "2026-11-25T10:00:00Z"
#: When the archiver's reports were written (their ``ce_time``).
REPORTED_AT: Final = datetime(2026, 11, 25, 10, 5, tzinfo=UTC)


@functools.cache
def schemas() -> SchemaRegistry:
    """The contracts, loaded once per test run (for the ``ce_dataschema`` ids)."""
    return SchemaRegistry.load()


# ---- values ------------------------------------------------------------------------------------

def track_value(track_id: str | None = "tr1", *, audio: str | None = None,
                source_audio: str | None = None, image: str | None = None,
                source_image: str | None = None, title: str | None = "Night Drive",
                duration: object = 2.0, created_at: str | None = None) -> dict[str, Any]:
    """One ``tracks[]`` entry of a v1 event."""
    return {"id": track_id, "title": title, "prompt": "[Verse] test", "model_name": "chirp-v4",
            "tags": ["test"], "duration_seconds": duration, "created_at": created_at,
            "audio_url": audio, "source_audio_url": source_audio, "stream_audio_url": None,
            "source_stream_audio_url": None, "image_url": image, "source_image_url": source_image}


def file_value(role: str, url: str, *, fallback: str | None = None,
               track_id: str | None = None) -> dict[str, Any]:
    """One ``files[]`` entry of a v1 event."""
    return {"role": role, "url": url, "fallback_url": fallback, "track_id": track_id}


def event_value(task_id: str, *tracks: dict[str, Any], kind: str = "extend-music",
                stage: str = "complete", files: list[dict[str, Any]] | None = None,
                event_id: str | None = None, code: int = 200, message: str = "ok",
                received_at: str = RECEIVED_AT) -> dict[str, Any]:
    """A v1 event (of any kind); without ``files`` it is a record written before ``files[]``
    existed. Each call has a new random event id unless ``event_id`` is given."""
    document: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex, "task_id": task_id, "kind": kind,
        "stage": stage, "code": code, "message": message, "received_at": received_at,
        "error": None, "tracks": list(tracks), "raw": {"code": code},
    }
    if files is not None:
        document["files"] = files
    return document


def archived_value(task_id: str, role: str = "audio", *, track_id: str | None = "tr1",
                   kind: str | None = "extend-music", size: int = 1000, uri: str | None = None,
                   sha256: str = "a" * 64, content_type: str = "audio/mpeg",
                   source_url: str = "https://cdn.example/x", source_event_id: str = "e" * 32,
                   **extra: object) -> dict[str, Any]:
    """An archived report (``kind`` left out when None, as the archiver does for a kind the
    contract does not know); ``extra`` adds fields, e.g. ones a future archiver writes."""
    value: dict[str, Any] = {
        "task_id": task_id, "track_id": track_id, "object": role,
        "uri": uri or f"file:///archive/{task_id}/{track_id or '_'}/{role}", "size": size,
        "sha256": sha256, "content_type": content_type, "source_url": source_url,
        "source_event_id": source_event_id, **extra,
    }
    if kind is not None:
        value["kind"] = kind
    return value


def dead_letter_value(task_id: str, role: str = "audio", *, reason: str = "timeout",
                      track_id: str | None = "tr1", kind: str | None = "extend-music",
                      url: str | None = None, attempts: int = 3,
                      source_event_id: str = "e" * 32) -> dict[str, Any]:
    """An archive-failed report (a dead letter) for one object of an event."""
    value: dict[str, Any] = {
        "task_id": task_id, "track_id": track_id, "object": role, "url": url,
        "reason": reason, "detail": "…", "attempts": attempts,
        "source_event_id": source_event_id, "topic": "music.callbacks.v1", "partition": 0,
        "offset": 7, "failed_at": RECEIVED_AT,
    }
    if kind is not None:
        value["kind"] = kind
    return value


def object_id(value: dict[str, Any]) -> tuple[str, str, str]:
    """What names the object of an archived report: task, track and object."""
    return value["task_id"], value["track_id"], value["object"]


def normalized(body: bytes, kind: CallbackKind, *, received_at: datetime,
               provider_tz: tzinfo = UTC) -> CallbackEvent | Rejection:
    """What the gateway makes of a provider's ``body`` on ``kind``'s route: an event (its
    ``data`` is the v1 event value) or a rejection, by the gateway's own decode/normalize."""
    decoded = decode(body, kind)
    if isinstance(decoded, Rejection):
        return decoded
    return normalize(decoded, body, kind=kind, received_at=received_at, schemas=schemas(),
                     provider_tz=provider_tz)


# ---- records -----------------------------------------------------------------------------------

def consumer_record(topic: str, value: dict[str, Any] | bytes | None, *, key: bytes | None = b"k",
                    headers: Sequence[tuple[str, bytes]] = (), partition: int = 0,
                    offset: int = 0) -> Record:
    """A record as a consumer receives it; a dict value is JSON-encoded."""
    body = orjson.dumps(value) if isinstance(value, dict) else value
    record: Record = ConsumerRecord(topic, partition, offset, 0, 0, key, body, None,
                                    len(key or b""), len(body or b""), list(headers))
    return record


def event_headers(document: dict[str, Any], *, traceparent: str | None = None) -> Headers:
    """The envelope the gateway writes for the v1 event ``document``."""
    event = CallbackEvent(
        event_id=document["event_id"], task_id=document["task_id"], kind=document["kind"],
        stage=cast("Stage", document["stage"]),
        received_at=datetime.fromisoformat(document["received_at"]), data=document)
    headers = cloudevent_headers(event, dataschema=schemas().schema_id(EVENT_V1))
    return _traced(headers, traceparent)


def event_record(document: dict[str, Any], *, topic: str = "events", partition: int = 0,
                 offset: int = 0, traceparent: str | None = None) -> Record:
    """A v1 event as the gateway publishes it: key = task id, envelope, trace context."""
    return consumer_record(topic, document, key=document["task_id"].encode(),
                           headers=event_headers(document, traceparent=traceparent),
                           partition=partition, offset=offset)


def archived_record(value: dict[str, Any], *, topic: str = "archived", partition: int = 0,
                    offset: int = 0, traceparent: str | None = None) -> Record:
    """An archived report as the archiver publishes it (a re-report has the same ``ce_id``)."""
    ce_id = archive_event_id(value["task_id"], value["track_id"], value["object"],
                             value["sha256"])
    headers = envelope_headers(ce_id=ce_id, source=SOURCE, ce_type=ARCHIVED_TYPE,
                               time=REPORTED_AT, subject=value["task_id"],
                               dataschema=schemas().schema_id(ARCHIVED_V1))
    return consumer_record(topic, value, key=value["task_id"].encode(),
                           headers=_traced(headers, traceparent), partition=partition,
                           offset=offset)


def dead_letter_record(value: dict[str, Any], *, topic: str = "archive-failed",
                       partition: int = 0, offset: int = 0,
                       traceparent: str | None = None) -> Record:
    """A dead letter as the archiver publishes it (its id names the object and the event)."""
    ce_id = dead_letter_event_id(value["task_id"], value["track_id"], value["object"],
                                 value["source_event_id"])
    headers = envelope_headers(ce_id=ce_id, source=SOURCE, ce_type=ARCHIVE_FAILED_TYPE,
                               time=REPORTED_AT, subject=value["task_id"],
                               dataschema=schemas().schema_id(ARCHIVE_FAILED_V1))
    headers = [*_traced(headers, traceparent), ("reason", value["reason"].encode())]
    return consumer_record(topic, value, key=value["task_id"].encode(), headers=headers,
                           partition=partition, offset=offset)


def _traced(headers: Headers, traceparent: str | None) -> Headers:
    return headers if traceparent is None else [*headers, kafka_header(traceparent)]
