"""music-video: a rendered music video, one ``video`` file.

``{code, msg, data: {task_id, video_url}}``; ``video_url`` is null on failure.
Record-info (``/api/v1/mp4/record-info``): ``data.successFlag`` and
``data.response.videoUrl`` (either spelling read).
"""

from __future__ import annotations

from typing import Final

from service.core.kinds.base import CallbackKind, one_url_reader, one_url_record_info

_READ: Final = one_url_reader("video", "video_url")

KIND: Final = CallbackKind(
    name="music-video", schema="provider.music-video-callback.v1", read=_READ,
    summary="music-video generation",
    record_info=one_url_record_info("/api/v1/mp4/record-info", _READ, "video_url"),
)
