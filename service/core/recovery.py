"""A record-info answer → the callback the provider would have sent (pure, no I/O).

The reconciler asks the provider about tasks whose callbacks never came. What comes
back is ``{code, msg, data: {taskId, status | successFlag, response, errorCode,
errorMessage, ...}}`` (``schemas/provider-api.record-info.v1.schema.json``). Here it
becomes a provider-shaped callback of the task's kind, which the kind's own reader and
the one pipeline (``normalize_recovered``) turn into the event a callback would have
given. What the status (``status`` or ``successFlag``) means:

* ``PENDING``, ``0``, absent, or a word we do not know: nothing yet, keep asking;
* ``TEXT_SUCCESS``, ``FIRST_SUCCESS``: ``text``, ``first`` (the track family; for a
  one-shot kind, still pending);
* ``SUCCESS``, ``1``: ``complete``; the kind's reader decides, as for a callback (code
  200 without a result is an ``error``);
* ``CALLBACK_EXCEPTION``: what the result shows. Generated, only the callback failed, is
  a success (``complete``; ``first`` or ``text`` while some tracks lack their audio);
  no result at all is an ``error``;
* ``*_FAILED``, ``*_ERROR`` (``SENSITIVE_WORD_ERROR``), ``2``, ``3``: ``error``.

An error's ``code`` is the answer's ``errorCode`` when it is a provider code other than
200, else 400 for ``SENSITIVE_WORD_ERROR`` and ``CREATE_TASK_FAILED`` (a request the
provider refused), 500 for a ``CALLBACK_EXCEPTION`` without a result and 501
(generation failed) otherwise; its ``msg`` is the status word and its ``error`` the
answer's ``errorMessage`` (or a sentence naming the status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from service.core.kinds.base import CallbackKind, Document, data_object, present, text_or_none
from service.core.model import Stage

Progress = Literal["pending", "text", "first", "complete", "failed", "callback_exception"]

_WORDS: Final[dict[str, Progress]] = {
    "PENDING": "pending",
    "TEXT_SUCCESS": "text",
    "FIRST_SUCCESS": "first",
    "SUCCESS": "complete",
    "CALLBACK_EXCEPTION": "callback_exception",
}
# successFlag as a number (midi, cover-image): 0 pending, 1 success, 2 the task could not
# be created, 3 generation failed.
_FLAGS: Final[dict[int, Progress]] = {0: "pending", 1: "complete", 2: "failed", 3: "failed"}
_FAILED_SUFFIXES: Final = ("FAIL", "FAILED", "FAILURE", "ERROR")
_REFUSED_WORDS: Final = frozenset({"SENSITIVE_WORD_ERROR", "CREATE_TASK_FAILED"})
_MAX_WORD_CHARS: Final = 64
_INT32: Final = 2**31

#: ``code`` and ``msg`` of the error a task gets when it has no outcome within the horizon.
HORIZON_CODE: Final = 408
HORIZON_MESSAGE: Final = "RECONCILE_HORIZON"


@dataclass(frozen=True, slots=True)
class Status:
    """What an answer's status says, and the word itself (for logs and messages)."""

    progress: Progress
    word: str


@dataclass(frozen=True, slots=True)
class Recovered:
    """The provider-shaped callback an answer stands for, and the status it came from."""

    document: Document
    status: Status


def read_status(data: Document) -> Status:
    """The status of a record-info answer's ``data``: ``status`` (track family, lyrics,
    wav) or ``successFlag`` (the others), as a word or a number."""
    for name in ("status", "successFlag", "success_flag"):
        value = data.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            number = int(value)
            return Status(_FLAGS.get(number, "pending"), str(number)[:_MAX_WORD_CHARS])
        if isinstance(value, str) and value.strip():
            word = value.strip().upper()[:_MAX_WORD_CHARS]
            if word in _WORDS:
                return Status(_WORDS[word], word)
            if word.endswith(_FAILED_SUFFIXES):
                return Status("failed", word)
            return Status("pending", word)  # a word we do not know: keep asking
    return Status("pending", "")


def recovered_callback(kind: CallbackKind, answer: Document, task_id: str,
                       ) -> Recovered | Status:
    """The callback ``answer`` stands for, or its ``Status`` while it stands for none
    (pending). ``kind`` must have a ``record_info``."""
    info = kind.record_info
    if info is None:
        raise ValueError(f"kind {kind.name!r} has no record-info endpoint")
    data = data_object(answer)
    status = read_status(data)
    stage: Stage | None
    if status.progress == "pending":
        return status
    if status.progress == "failed":
        stage = "error"
    elif status.progress == "callback_exception":
        stage = info.result_stage(data) or "error"
    else:
        stage = status.progress
    if stage == "error":
        return Recovered(_failure(kind, task_id, data, status), status)
    if stage not in info.stages:
        return status  # an intermediate stage the kind does not report
    message = text_or_none(answer.get("msg")) or "success"
    document = callback_document(kind, task_id, code=200, message=message,
                                 data=info.success_data(data, stage))
    return Recovered(document, status)


def horizon_callback(kind: CallbackKind, task_id: str, *, horizon_seconds: float,
                     last_status: str | None) -> Document:
    """The error callback of a task the reconciler gives up on: no outcome from the
    provider within ``horizon_seconds`` of its submission."""
    said = f"the provider last said {last_status}" if last_status else \
        "the provider never gave a status"
    error = (f"no outcome within {horizon_seconds:g} s of submission ({said}); "
             "the reconciler gave up")
    return callback_document(kind, task_id, code=HORIZON_CODE, message=HORIZON_MESSAGE,
                             data={"callbackType": "error", "error": error})


def callback_document(kind: CallbackKind, task_id: str, *, code: int, message: str,
                      data: Document) -> Document:
    """``{code, msg, data}`` with the task id in the kind's documented place."""
    document: Document = {"code": code, "msg": message, "data": dict(data)}
    place = kind.task_id_places[0]
    node = document
    for key in place[:-1]:
        node = node.setdefault(key, {})
    node[place[-1]] = task_id
    return document


def _failure(kind: CallbackKind, task_id: str, data: Document, status: Status) -> Document:
    error = present(data.get("errorMessage")) or present(data.get("error_message")) or (
        f"the provider reports {status.word}" if status.word else "the provider reports a failure")
    return callback_document(kind, task_id, code=_error_code(data, status),
                             message=status.word or "FAILED",
                             data={"callbackType": "error", "error": error})


def _error_code(data: Document, status: Status) -> int:
    for name in ("errorCode", "error_code"):
        code = data.get(name)
        if isinstance(code, str) and code.strip().isdigit():
            code = int(code)
        if (isinstance(code, int) and not isinstance(code, bool) and code not in (0, 200)
                and -_INT32 <= code < _INT32):
            return code
    if status.word in _REFUSED_WORDS:
        return 400
    return 500 if status.progress == "callback_exception" else 501
