"""lyrics: generated lyrics, one ``lyrics[]`` entry per variant; no files.

``{code, msg, data: {callbackType, taskId, data: [{text, title, status, errorMessage}]}}``
(a mirror: ``task_id`` and ``error_message``); ``data.data`` is null on failure.
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
    present_in_either_spelling,
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


KIND: Final = CallbackKind(
    name="lyrics", schema="provider.lyrics-callback.v1", read=read_lyrics,
    summary="lyrics generation",
)
