"""midi: notes transcribed from a track, as ``midi.instruments[].notes[]``; no files.

``{task_id, code, msg, data: {state, instruments: [{name, notes: [{pitch, start, end,
velocity}]}]}}`` (a mirror: ``data.taskId``); failure ``{task_id, code: 500, data: null}``.
Note values come as numbers or numeric strings and are written as numbers. A note
with a value that is not a finite number is left out (the callback keeps it in
``raw``): a reader of ``midi`` can rely on four numbers per note. ``data.state`` is
kept in ``raw`` only; the stage comes from the code and the presence of instruments.
Record-info (``/api/v1/midi/record-info``): ``data.successFlag`` (0 pending, 1 success,
2 and 3 failed) and the notes in ``data.midiData`` (``state``, ``instruments``).
"""

from __future__ import annotations

import math
from datetime import tzinfo
from typing import Any, Final

from service.core.kinds.base import (
    DATA_TASK_ID,
    DATA_TASK_ID_CAMEL,
    TOP_TASK_ID,
    CallbackKind,
    Document,
    Reading,
    one_shot,
    one_shot_record_info,
    picked,
    record_result,
    text_or_none,
)
from service.core.model import Rejection

NOTE_FIELDS: Final = ("pitch", "start", "end", "velocity")
# Integral values up to 2**53 are written as integers; beyond it a float is exact
# only by luck, and orjson cannot write integers past 64 bits.
_MAX_EXACT_INTEGER: Final = 2**53


def read_midi(document: Document, _provider_tz: tzinfo) -> Reading | Rejection:
    data = document.get("data")
    instruments = data.get("instruments") if isinstance(data, dict) else None
    has_result = isinstance(instruments, list)
    midi = {"instruments": [_instrument(item) for item in (instruments or [])
                            if isinstance(item, dict)]}
    return one_shot(document, [], has_result=has_result, extra={"midi": midi})


def _instrument(item: Document) -> dict[str, Any]:
    notes = item.get("notes")
    readable = (_note(note) for note in (notes if isinstance(notes, list) else []))
    return {"name": text_or_none(item.get("name")),
            "notes": [note for note in readable if note is not None]}


def _note(note: object) -> dict[str, int | float] | None:
    if not isinstance(note, dict):
        return None
    values: dict[str, int | float] = {}
    for name in NOTE_FIELDS:
        number = note_number(note.get(name))
        if number is None:
            return None
        values[name] = number
    return values


def note_number(value: object) -> int | float | None:
    """A finite number from a JSON number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= _MAX_EXACT_INTEGER else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and abs(number) <= _MAX_EXACT_INTEGER else number


def record_midi(data: Document) -> Document:
    """The callback ``data`` of a record-info answer: ``state`` and ``instruments`` of its
    ``midiData`` (in ``data`` as documented, or in ``data.response``)."""
    for holder in (data, record_result(data)):
        for name in ("midiData", "midi_data"):
            if isinstance(holder.get(name), dict):
                return picked(holder[name], "state", "instruments")
    return {}


KIND: Final = CallbackKind(
    name="midi", schema="provider.midi-callback.v1", read=read_midi,
    summary="MIDI transcription",
    task_id_places=(TOP_TASK_ID, DATA_TASK_ID_CAMEL, DATA_TASK_ID),
    record_info=one_shot_record_info("/api/v1/midi/record-info", read_midi, record_midi),
)
