"""vocal-separation: a track split into stems, one file per stem (role = stem name).

``{code, msg, data: {task_id, vocal_removal_info: {origin_url, vocal_url, ...}}}``
(a mirror: ``vocal_separation_info``), null on failure. ``separate_vocal`` gives
origin, vocal and instrumental; ``split_stem`` gives origin and twelve stems.
``origin_url`` is often ``""`` and then left out.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Final

from service.core.kinds.base import (
    CallbackKind,
    Document,
    FileEntry,
    Reading,
    data_object,
    file_entry,
    one_shot,
    present_in_either_spelling,
)
from service.core.model import Rejection

# Roles in the order files are listed; "origin" is the input track, not a result.
STEMS: Final = (
    "vocal", "instrumental", "backing_vocals", "drums", "bass", "guitar", "keyboard",
    "percussion", "strings", "synth", "fx", "brass", "woodwinds", "origin",
)
_INFO_FIELDS: Final = ("vocal_removal_info", "vocal_separation_info")


def read_vocal_separation(document: Document, _provider_tz: tzinfo) -> Reading | Rejection:
    data = data_object(document)
    info: Document = next(
        (data[name] for name in _INFO_FIELDS if isinstance(data.get(name), dict)), {})
    files: list[FileEntry] = []
    for stem in STEMS:
        url = present_in_either_spelling(info, f"{stem}_url")
        if url is not None:
            files.append(file_entry(stem, [url]))
    separated = any(entry["role"] != "origin" for entry in files)
    return one_shot(document, files, has_result=separated)


KIND: Final = CallbackKind(
    name="vocal-separation", schema="provider.vocal-separation-callback.v1",
    read=read_vocal_separation, summary="vocal separation and stem splitting",
)
