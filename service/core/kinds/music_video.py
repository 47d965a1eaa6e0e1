"""music-video: a rendered music video, one ``video`` file.

``{code, msg, data: {task_id, video_url}}``; ``video_url`` is null on failure.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Final

from service.core.kinds.base import (
    CallbackKind,
    Document,
    Reading,
    data_object,
    either_spelling,
    file_entry,
    one_shot,
    present,
)
from service.core.model import Rejection


def read_music_video(document: Document, _provider_tz: tzinfo) -> Reading | Rejection:
    url = present(either_spelling(data_object(document), "video_url"))
    files = [file_entry("video", [url])] if url else []
    return one_shot(document, files, has_result=bool(files))


KIND: Final = CallbackKind(
    name="music-video", schema="provider.music-video-callback.v1", read=read_music_video,
    summary="music-video generation",
)
