"""cover-image: cover images generated for a music task, one ``image`` file per URL.

``{code, msg, data: {taskId, images: [url, ...]}}``; ``images`` is null on failure.
Record-info (``/api/v1/suno/cover/record-info``): ``data.successFlag`` (``1`` or
``SUCCESS``) and ``data.response.images``.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Final

from service.core.kinds.base import (
    CallbackKind,
    Document,
    Reading,
    data_object,
    distinct_present,
    file_entry,
    one_shot,
    one_shot_record_info,
    picked,
    record_result,
)
from service.core.model import Rejection


def read_cover_images(document: Document, _provider_tz: tzinfo) -> Reading | Rejection:
    images = data_object(document).get("images")
    urls = distinct_present(images) if isinstance(images, list) else []
    files = [file_entry("image", [url]) for url in urls]
    return one_shot(document, files, has_result=bool(files))


KIND: Final = CallbackKind(
    name="cover-image", schema="provider.cover-image-callback.v1", read=read_cover_images,
    summary="cover-image generation",
    record_info=one_shot_record_info("/api/v1/suno/cover/record-info", read_cover_images,
                                     lambda data: picked(record_result(data), "images")),
)
