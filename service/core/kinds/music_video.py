"""music-video: a rendered music video, one ``video`` file.

``{code, msg, data: {task_id, video_url}}``; ``video_url`` is null on failure.
"""

from __future__ import annotations

from typing import Final

from service.core.kinds.base import CallbackKind, one_url_reader

KIND: Final = CallbackKind(
    name="music-video", schema="provider.music-video-callback.v1",
    read=one_url_reader("video", "video_url"), summary="music-video generation",
)
