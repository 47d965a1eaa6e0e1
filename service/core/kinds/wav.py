"""wav: a track converted to WAV, one ``wav`` file.

``{code, msg, data: {task_id, audioWavUrl}}`` (a mirror: ``audio_wav_url``); null on failure.
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


def read_wav(document: Document, _provider_tz: tzinfo) -> Reading | Rejection:
    url = present(either_spelling(data_object(document), "audio_wav_url"))
    files = [file_entry("wav", [url])] if url else []
    return one_shot(document, files, has_result=bool(files))


KIND: Final = CallbackKind(
    name="wav", schema="provider.wav-callback.v1", read=read_wav, summary="WAV conversion",
)
