"""Test data for the records the services exchange, built one way (the gateway's shapes).

No fixtures here: see the conftest files.
"""

from __future__ import annotations

import uuid
from typing import Any

# ---- events-topic values, built the way the gateway writes them ------------------------------

def track_value(track_id: str | None = "tr1", *, audio: str | None = None,
                source_audio: str | None = None, image: str | None = None,
                source_image: str | None = None, title: str | None = "Night Drive",
                duration: object = 2.0) -> dict[str, Any]:
    """One ``tracks[]`` entry of a v1 event."""
    return {"id": track_id, "title": title, "prompt": "[Verse] test", "model_name": "chirp-v4",
            "tags": ["test"], "duration_seconds": duration, "created_at": None,
            "audio_url": audio, "source_audio_url": source_audio, "stream_audio_url": None,
            "source_stream_audio_url": None, "image_url": image, "source_image_url": source_image}


def file_value(role: str, url: str, *, fallback: str | None = None,
               track_id: str | None = None) -> dict[str, Any]:
    """One ``files[]`` entry of a v1 event."""
    return {"role": role, "url": url, "fallback_url": fallback, "track_id": track_id}


def event_value(task_id: str, *tracks: dict[str, Any], kind: str = "extend-music",
                stage: str = "complete", files: list[dict[str, Any]] | None = None,
                event_id: str | None = None) -> dict[str, Any]:
    """A v1 event; without ``files`` it is a record written before ``files[]`` existed."""
    document: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex, "task_id": task_id, "kind": kind,
        "stage": stage, "code": 200, "message": "ok", "received_at": "2026-11-25T10:00:00Z",
        "error": None, "tracks": list(tracks), "raw": {"code": 200},
    }
    if files is not None:
        document["files"] = files
    return document
