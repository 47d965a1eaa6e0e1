"""wav: a track converted to WAV, one ``wav`` file.

``{code, msg, data: {task_id, audioWavUrl}}`` (a mirror: ``audio_wav_url``); null on failure.
Record-info: ``data.status`` and ``data.response.audio_wav_url`` (either spelling read).
"""

from __future__ import annotations

from typing import Final

from service.core.kinds.base import CallbackKind, one_url_reader, one_url_record_info

_READ: Final = one_url_reader("wav", "audio_wav_url")

KIND: Final = CallbackKind(
    name="wav", schema="provider.wav-callback.v1", read=_READ, summary="WAV conversion",
    record_info=one_url_record_info("/api/v1/wav/record-info", _READ, "audio_wav_url"),
)
