"""lyrics: generated lyrics, one ``lyrics[]`` entry per variant; no files.

``{code, msg, data: {callbackType, taskId, data: [{text, title, status, errorMessage}]}}``
(a mirror: ``task_id`` and ``error_message``); ``data.data`` is null on failure.
Record-info (``/api/v1/lyrics/record-info``): ``data.status`` and the variants in
``data.response.lyricsData`` (one mirror: ``data.response.data``).
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Final

from service.core.kinds.base import (
    CallbackKind,
    Document,
    Reading,
    data_object,
    one_shot,
    one_shot_record_info,
    present_in_either_spelling,
    record_result,
    text_or_none,
)
from service.core.model import Rejection


def read_lyrics(document: Document, _provider_tz: tzinfo) -> Reading | Rejection:
    items = data_object(document).get("data")
    lyrics = [
        {"text": text_or_none(item.get("text")),
         "title": text_or_none(item.get("title")),
         "status": text_or_none(item.get("status")),
         "error": present_in_either_spelling(item, "error_message")}  # "" means no error
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
    ]
    return one_shot(document, [], has_result=bool(lyrics), extra={"lyrics": lyrics})


def record_lyrics(data: Document) -> Document:
    """The callback ``data`` of a record-info answer: its variants as ``data``."""
    result = record_result(data)
    for name in ("lyricsData", "lyrics_data", "data"):
        if isinstance(result.get(name), list):
            return {"data": result[name]}
    return {}


KIND: Final = CallbackKind(
    name="lyrics", schema="provider.lyrics-callback.v1", read=read_lyrics,
    summary="lyrics generation",
    record_info=one_shot_record_info("/api/v1/lyrics/record-info", read_lyrics, record_lyrics),
)
