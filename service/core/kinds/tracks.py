"""The track family: nine kinds, one provider shape (``provider.track-callback.v1``).

``{code, msg, data: {callbackType, task_id, data: [track, ...]}}``, called back at
``text``, ``first``, ``complete`` and ``error``. Each track becomes an entry of
``tracks[]`` and yields up to two files: ``audio`` and ``cover``.

Record-info (``/api/v1/generate/record-info`` for all nine kinds): ``data.status`` and
the tracks in ``data.response.sunoData[]`` in camelCase (``audioUrl``, ``modelName``,
...), written back in the callback's snake_case so the one reader reads both.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any, Final

from service.core.kinds.base import (
    CallbackKind,
    Document,
    FileEntry,
    Reading,
    RecordInfo,
    callback_type_stage,
    camel_case,
    distinct_present,
    file_entry,
    present,
    record_result,
    status_code,
)
from service.core.model import STAGES, Rejection, Stage
from service.core.timefmt import parse_create_time

SCHEMA: Final = "provider.track-callback.v1"

_URL_FIELDS: Final = (
    "audio_url",
    "source_audio_url",
    "stream_audio_url",
    "source_stream_audio_url",
    "image_url",
    "source_image_url",
)
# Preference order: the final file, then the stream, then the deprecated source URL.
_AUDIO_FIELDS: Final = ("audio_url", "stream_audio_url", "source_audio_url")
_COVER_FIELDS: Final = ("image_url", "source_image_url")
# At these stages a track without audio_url is still being generated: its stream is
# partial, and archiving it would block the real audio (each key is stored once).
_NOT_READY_STAGES: Final[frozenset[Stage]] = frozenset({"text", "first"})


def read_tracks(document: Document, provider_tz: tzinfo) -> Reading | Rejection:
    data: Document = document["data"]  # the schema requires an object with callbackType
    named = callback_type_stage(data["callbackType"])
    if isinstance(named, Rejection):
        return named
    stage: Stage = "error" if named == "error" or status_code(document) != 200 else named
    items: list[Document] = data.get("data") or []
    return Reading(
        stage,
        error=data.get("error"),
        tracks=[_track(item, provider_tz) for item in items],
        files=[entry for item in items for entry in track_files(item, stage)],
    )


def track_files(item: Document, stage: Stage) -> list[FileEntry]:
    """``audio`` and ``cover`` of one track; none without a track id (no archive key)."""
    track_id = present(item.get("id"))
    if track_id is None:
        return []
    files: list[FileEntry] = []
    audio = distinct_present(item.get(name) for name in _AUDIO_FIELDS)
    ready = present(item.get("audio_url")) is not None or stage not in _NOT_READY_STAGES
    if audio and ready:
        files.append(file_entry("audio", audio, track_id))
    cover = distinct_present(item.get(name) for name in _COVER_FIELDS)
    if cover:
        files.append(file_entry("cover", cover, track_id))
    return files


def _track(item: Document, provider_tz: tzinfo) -> dict[str, Any]:
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
        track[name] = present(item.get(name))
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


# ---- record-info: the same tracks, in camelCase ------------------------------------------

# audioUrl → audio_url, ..., modelName → model_name; createTime is camelCase in both.
_SNAKE_OF: Final = {camel_case(name): name for name in (*_URL_FIELDS, "model_name")}


def snake_track(item: Document) -> Document:
    """A record-info track as a callback spells it; fields it does not know are kept.
    When both spellings come, the first non-blank one wins."""
    track: Document = {}
    for key, value in item.items():
        name = _SNAKE_OF.get(key, key)
        if name not in track or present(track[name]) is None:
            track[name] = value
    return track


def record_tracks(data: Document) -> list[Document]:
    """The tracks of a record-info answer's ``data``: ``response.sunoData`` (a mirror:
    ``suno_data`` or ``data``), in snake_case."""
    result = record_result(data)
    for name in ("sunoData", "suno_data", "data"):
        items = result.get(name)
        if isinstance(items, list):
            return [snake_track(item) for item in items if isinstance(item, dict)]
    return []


def record_success_data(data: Document, stage: Stage) -> Document:
    return {"callbackType": stage, "data": record_tracks(data)}


def record_result_stage(data: Document) -> Stage | None:
    """``complete`` when every track has its audio, ``first`` when some have, ``text``
    when tracks are listed without audio; None without tracks."""
    tracks = [track for track in record_tracks(data) if present(track.get("id"))]
    if not tracks:
        return None
    ready = sum(1 for track in tracks if present(track.get("audio_url")))
    if ready == len(tracks):
        return "complete"
    return "first" if ready else "text"


RECORD_INFO: Final = RecordInfo("/api/v1/generate/record-info", record_success_data,
                                record_result_stage, stages=STAGES)


def _kind(name: str, summary: str) -> CallbackKind:
    return CallbackKind(name=name, schema=SCHEMA, read=read_tracks, summary=summary,
                        record_info=RECORD_INFO)


KINDS: Final = (
    _kind("generate-music", "music generation"),
    _kind("extend-music", "music extension"),
    _kind("upload-cover", "upload-and-cover"),
    _kind("upload-extend", "upload-and-extend"),
    _kind("add-vocals", "add-vocals"),
    _kind("add-instrumental", "add-instrumental"),
    _kind("mashup", "mashup"),
    _kind("replace-section", "replace-section"),
    _kind("sounds", "sounds generation"),
)
