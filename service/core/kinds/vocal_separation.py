"""vocal-separation: a track split into stems, one file per stem (role = stem name).

``{code, msg, data: {task_id, vocal_removal_info: {origin_url, vocal_url, ...}}}``
(a mirror: ``vocal_separation_info``), null on failure. ``separate_vocal`` gives
origin, vocal and instrumental; ``split_stem`` gives origin and twelve stems.
``origin_url`` is often ``""`` and then left out.

Record-info (``/api/v1/vocal-removal/record-info``): ``data.successFlag`` and the stems
in ``data.response`` in camelCase (``vocalUrl``, ``backingVocalsUrl``, ...), which the
reader already accepts; stems we have no role for (``pianoUrl``) stay in ``raw`` only.
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
    one_shot_record_info,
    picked,
    present_in_either_spelling,
    record_result,
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


def record_stems(data: Document) -> Document:
    """The callback ``data`` of a record-info answer: its stems as ``vocal_removal_info``
    (a mirror that already nests them under either name is taken as it is)."""
    result = record_result(data)
    return picked(result, *_INFO_FIELDS) or {"vocal_removal_info": result}


KIND: Final = CallbackKind(
    name="vocal-separation", schema="provider.vocal-separation-callback.v1",
    read=read_vocal_separation, summary="vocal separation and stem splitting",
    record_info=one_shot_record_info("/api/v1/vocal-removal/record-info",
                                     read_vocal_separation, record_stems),
)
