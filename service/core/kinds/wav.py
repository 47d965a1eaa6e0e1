"""wav: a track converted to WAV, one ``wav`` file.

``{code, msg, data: {task_id, audioWavUrl}}`` (a mirror: ``audio_wav_url``); null on failure.
"""

from __future__ import annotations

from typing import Final

from service.core.kinds.base import CallbackKind, one_url_reader

KIND: Final = CallbackKind(
    name="wav", schema="provider.wav-callback.v1", read=one_url_reader("wav", "audio_wav_url"),
    summary="WAV conversion",
)
