"""What a callback kind is, and the small readers every kind shares (pure, no I/O).

A kind is a name (its route is ``/callbacks/<name>``), the inbound JSON Schema its
callbacks must satisfy, the places its task id may be found, and a reader that turns
a valid callback into a ``Reading``: the stage and the kind-specific parts of the
event (tracks, files, lyrics, midi). The pipeline in ``service.core.normalize`` does
the rest the same way for every kind.

A kind may also say how the reconciler asks the provider about a task whose callbacks
never came (``RecordInfo``): the record-info endpoint of the kind and a pure mapping
from its answer to the callback the provider would have sent, which then goes through
the kind's own reader and the same pipeline (``service.core.recovery``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, Final

from service.contracts.registry import SchemaError
from service.core.model import Rejection, Stage

ROUTE_PREFIX: Final = "/callbacks/"
#: ``ce_source`` of the events the reconciler recovers by polling: ``/reconciler/<kind>``.
RECONCILER_SOURCE_PREFIX: Final = "/reconciler/"
MAX_TASK_ID_CHARS: Final = 256

# A place in the document, as the keys leading to it from the root.
Place = tuple[str, ...]
DATA_TASK_ID: Final[Place] = ("data", "task_id")
DATA_TASK_ID_CAMEL: Final[Place] = ("data", "taskId")
TOP_TASK_ID: Final[Place] = ("task_id",)
# Most kinds put the id in data.task_id; every spelling the provider and its mirrors
# use is tolerated, the kind's documented one first.
TASK_ID_IN_DATA: Final = (DATA_TASK_ID, DATA_TASK_ID_CAMEL, TOP_TASK_ID)

CALLBACK_TYPES: Final[dict[str, Stage]] = {
    "text": "text",
    "first": "first",
    "complete": "complete",
    "error": "error",
    "failed": "error",  # one mirror documents "failed"
}

Document = dict[str, Any]
FileEntry = dict[str, str | None]


@dataclass(frozen=True, slots=True)
class Reading:
    """What a kind reads from a valid callback; the pipeline adds the common fields.

    ``extra`` holds the fields only one kind writes (``lyrics``, ``midi``).
    """

    stage: Stage
    error: str | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# A reader may refuse to guess (an unknown callbackType): the pipeline adds the task id.
Reader = Callable[[Document, tzinfo], Reading | Rejection]


def callback_route(kind_name: str) -> str:
    """``/callbacks/<kind>``: the route of a kind, and the ``ce_source`` of its events."""
    return ROUTE_PREFIX + kind_name


def reconciler_source(kind_name: str) -> str:
    """``/reconciler/<kind>``: the ``ce_source`` of the events the reconciler recovers."""
    return RECONCILER_SOURCE_PREFIX + kind_name


#: The ``data`` fields of the callback a successful record-info answer stands for at a
#: stage (track family: ``callbackType`` and the tracks in snake_case; one-shot kinds:
#: the result fields), from the answer's ``data``; the task id is added by the caller.
SuccessData = Callable[[Document, Stage], Document]
#: The stage the result in a record-info answer's ``data`` shows by itself (``complete``
#: when every file is there), None when it holds no result: how an answer whose status
#: does not say (``CALLBACK_EXCEPTION``: generated, but the callback failed) is read.
ResultStage = Callable[[Document], Stage | None]

ONE_SHOT_STAGES: Final[tuple[Stage, ...]] = ("complete", "error")


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """How the reconciler asks the provider about a task of this kind (pure mapping)."""

    path: str  # e.g. /api/v1/wav/record-info, queried with ?taskId=<task id>
    success_data: SuccessData
    result_stage: ResultStage
    stages: tuple[Stage, ...] = ONE_SHOT_STAGES  # what the kind's callbacks can report


@dataclass(frozen=True, slots=True)
class CallbackKind:
    name: str
    schema: str  # inbound schema name in schemas/ (one per distinct provider shape)
    read: Reader
    summary: str  # what the kind is, for the OpenAPI document
    task_id_places: tuple[Place, ...] = TASK_ID_IN_DATA
    record_info: RecordInfo | None = None  # None: the reconciler cannot recover this kind

    @property
    def route(self) -> str:
        return callback_route(self.name)

    def task_id(self, document: Document) -> str | None:
        """The first usable task id in the kind's places (a blank or huge one is not)."""
        for place in self.task_id_places:
            candidate = lookup(document, place)
            if (isinstance(candidate, str) and candidate.strip()
                    and len(candidate) <= MAX_TASK_ID_CHARS):
                return candidate.strip()
        return None

    def missing_task_id(self) -> Rejection:
        places = ", ".join(".".join(place) for place in self.task_id_places)
        pointer = "/" + "/".join(self.task_id_places[0])
        return Rejection("missing_task_id", (SchemaError(pointer, f"no task id in {places}"),))


def lookup(document: Document, place: Place) -> object:
    node: object = document
    for key in place:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def camel_case(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)


def present_in_either_spelling(mapping: dict[str, Any], snake: str) -> str | None:
    """The non-blank text of ``mapping[snake]`` or of its camelCase twin
    (``audio_wav_url`` / ``audioWavUrl``): mirrors spell the same field both ways."""
    return present(mapping.get(snake)) or present(mapping.get(camel_case(snake)))


def data_object(document: Document) -> Document:
    """``data`` when it is an object; ``{}`` for ``null`` or absent (failures)."""
    data = document.get("data")
    return data if isinstance(data, dict) else {}


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def present(value: object) -> str | None:
    """A non-blank string, else None: empty-string URLs are left out."""
    return value if isinstance(value, str) and value.strip() else None


def distinct_present(values: Iterable[object]) -> list[str]:
    """The non-blank strings among ``values``, first occurrence only, in order."""
    found: list[str] = []
    for value in values:
        text = present(value)
        if text is not None and text not in found:
            found.append(text)
    return found


def file_entry(role: str, urls: list[str], track_id: str | None = None) -> FileEntry:
    """One file to archive: the first URL, the next distinct one as its fallback."""
    return {"role": role, "url": urls[0], "fallback_url": urls[1] if len(urls) > 1 else None,
            "track_id": track_id}


def status_code(document: Document) -> int:
    # The schema requires an integer; an integral float (200.0) is written as an integer.
    return int(document["code"])


def callback_type_stage(value: object) -> Stage | Rejection:
    """The stage a ``callbackType`` names; an unknown name is rejected, never guessed."""
    stage = CALLBACK_TYPES.get(value.strip().lower()) if isinstance(value, str) else None
    if stage is None:
        return Rejection("unknown_callback_type", (
            SchemaError("/data/callbackType", f"unknown callback type {str(value)[:40]!r}"),))
    return stage


def one_shot_stage(document: Document, *, has_result: bool) -> Stage | Rejection:
    """Stage of a kind that calls back once: ``complete`` for code 200 with a result,
    ``error`` otherwise.

    A ``callbackType``, when present, is read like the track family's: ``error`` and
    ``failed`` are failures, unknown values are rejected; ``text`` and ``first`` stay
    what they say (an intermediate stage is never promoted to ``complete``, which
    consumers take as the end of the task).
    """
    named: Stage | None = None
    callback_type = data_object(document).get("callbackType")
    if callback_type is not None:
        stage = callback_type_stage(callback_type)
        if isinstance(stage, Rejection):
            return stage
        named = stage
    if named == "error" or status_code(document) != 200:
        return "error"
    if named in ("text", "first"):
        return named
    return "complete" if has_result else "error"


def one_shot(document: Document, files: list[FileEntry], *, has_result: bool,
             extra: dict[str, Any] | None = None) -> Reading | Rejection:
    """The ``Reading`` of a one-shot kind: its stage, ``data.error``, its files."""
    stage = one_shot_stage(document, has_result=has_result)
    if isinstance(stage, Rejection):
        return stage
    return Reading(stage, error=text_or_none(data_object(document).get("error")),
                   files=files, extra=extra or {})


def one_url_reader(role: str, field_name: str) -> Reader:
    """The reader of a one-shot kind whose result is one URL, ``data.<field_name>`` in
    either spelling: one file of ``role``, and ``complete`` only when it is there."""
    def read(document: Document, _provider_tz: tzinfo) -> Reading | Rejection:
        url = present_in_either_spelling(data_object(document), field_name)
        files = [file_entry(role, [url])] if url else []
        return one_shot(document, files, has_result=bool(files))

    return read


# ---- record-info answers (the reconciler) ----------------------------------------------

def record_result(data: Document) -> Document:
    """Where a record-info answer keeps the task's result: ``data.response`` (every
    documented endpoint); a mirror that puts the fields in ``data`` itself is read there."""
    response = data.get("response")
    return response if isinstance(response, dict) else data


def picked(mapping: Document, *names: str) -> Document:
    """The entries of ``mapping`` named ``names`` that are there (spellings kept as sent)."""
    return {name: mapping[name] for name in names if name in mapping}


def one_shot_record_info(path: str, read: Reader,
                         result: Callable[[Document], Document]) -> RecordInfo:
    """The ``RecordInfo`` of a one-shot kind whose callback ``data`` is ``result(answer
    data)``: the result is there when the kind's own reader calls such a callback
    ``complete``."""
    def success_data(data: Document, _stage: Stage) -> Document:
        return result(data)

    def result_stage(data: Document) -> Stage | None:
        reading = read({"code": 200, "data": result(data)}, UTC)
        return "complete" if isinstance(reading, Reading) and reading.stage == "complete" \
            else None

    return RecordInfo(path, success_data, result_stage)


def one_url_record_info(path: str, read: Reader, field_name: str) -> RecordInfo:
    """A one-shot kind whose record-info result is one URL, ``<field_name>`` in either
    spelling (the wav endpoint answers ``audio_wav_url``, the mp4 one ``videoUrl``)."""
    return one_shot_record_info(
        path, read, lambda data: picked(record_result(data), field_name, camel_case(field_name)))
