"""Planning: the objects one events-topic value asks the archiver to store (pure).

Only ``first`` and ``complete`` events carry files to store. Each entry of the event's
``files[]`` (``{role, url, fallback_url, track_id}``, whatever the kind) becomes one
:class:`Job`: its key (``<task>/<track or _>/<role>``, see :mod:`.keys`) is known before
any download, ``url`` is tried first and ``fallback_url`` when it fails.

Records written before ``files[]`` existed have none: their files are derived from
``tracks[]`` exactly as the archiver always did (:func:`files_from_tracks`): for every
track with an id and an audio URL, ``audio`` (``audio_url``, else ``source_audio_url``)
and, when it has one, ``cover`` (``image_url``, else ``source_image_url``); tracks without
an id are counted, not stored.

Within one event, a track's role is stored once (the first entry wins, as when a track is
listed twice). Files without a track id are told apart by URL: the n-th distinct URL of a
role gets the object name ``<role>-<n>`` (the images of a cover-image task). Entries that
cannot be stored at all (not an object, an unknown role, no URL) are counted as unusable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

from service.consumers.archiver.keys import object_key, object_name
from service.contracts.vocabulary import FILE_ROLES, FileRole

ARCHIVED_STAGES: Final = frozenset({"first", "complete"})


@dataclass(frozen=True)
class Job:
    """One object to archive."""

    task_id: str
    track_id: str | None
    role: FileRole
    name: str  # the key's last segment: the role, or <role>-<n>
    urls: tuple[str, ...]
    title: str | None
    duration_seconds: float | None
    key: str
    kind: str | None = None  # the event's callback kind, when it names one


@dataclass(frozen=True)
class Plan:
    task_id: str
    stage: str
    kind: str | None
    jobs: tuple[Job, ...]
    tracks_without_id: int = 0
    unusable_files: int = 0


def text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _urls(*values: object) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        candidate = text(value)
        if candidate is not None and candidate.strip() and candidate.strip() not in found:
            found.append(candidate.strip())
    return tuple(found)


def _duration(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def files_from_tracks(tracks: Iterable[object]) -> tuple[list[dict[str, Any]], int]:
    """The ``files[]`` of a record written before it existed, and its tracks without id."""
    files: list[dict[str, Any]] = []
    without_id = 0
    for track in tracks:
        if not isinstance(track, dict):
            continue
        audio = _urls(track.get("audio_url"), track.get("source_audio_url"))
        if not audio:
            continue  # not ready yet (a later callback carries it)
        track_id = text(track.get("id"))
        if track_id is None:
            without_id += 1
            continue
        cover = _urls(track.get("image_url"), track.get("source_image_url"))
        for role, urls in (("audio", audio), ("cover", cover)):
            if urls:
                files.append({"role": role, "url": urls[0],
                              "fallback_url": urls[1] if len(urls) > 1 else None,
                              "track_id": track_id})
    return files, without_id


def plan_event(value: object) -> Plan | None:
    """The objects an events-topic value asks for; None when it is not an event at all."""
    if not isinstance(value, dict):
        return None
    task_id = text(value.get("task_id"))
    stage = value.get("stage")
    tracks = value.get("tracks")
    files = value.get("files")
    if (task_id is None or not isinstance(stage, str) or not isinstance(tracks, list)
            or not isinstance(files, list | None)):
        return None
    kind = text(value.get("kind"))
    if stage not in ARCHIVED_STAGES:
        return Plan(task_id, stage, kind, ())
    without_id = 0
    if files is None:
        files, without_id = files_from_tracks(tracks)
    jobs, unusable = _jobs(task_id, kind, files, tracks)
    return Plan(task_id, stage, kind, tuple(jobs), without_id, unusable)


def _jobs(task_id: str, kind: str | None, files: list[Any],
          tracks: list[Any]) -> tuple[list[Job], int]:
    about = {track_id: track for track in tracks
             if isinstance(track, dict) and (track_id := text(track.get("id"))) is not None}
    jobs: list[Job] = []
    unusable = 0
    taken: set[tuple[str, str]] = set()  # (track id, role) already planned
    task_urls: dict[str, list[str]] = {}  # role -> first URLs of files without a track
    for entry in files:
        role = entry.get("role") if isinstance(entry, dict) else None
        urls = _urls(entry.get("url"), entry.get("fallback_url")) if role else ()
        if role not in FILE_ROLES or not urls:
            unusable += 1
            continue
        role = cast("FileRole", role)
        track_id = text(entry.get("track_id"))
        if track_id is None:
            seen = task_urls.setdefault(role, [])
            if urls[0] in seen:
                continue  # the same file listed twice
            seen.append(urls[0])
            name = object_name(role, len(seen))
        else:
            if (track_id, role) in taken:
                continue  # the same track twice in one event: one set of objects
            taken.add((track_id, role))
            name = object_name(role)
        track = about.get(track_id) if track_id is not None else None
        title = text(track.get("title")) if track is not None else None
        duration = (_duration(track.get("duration_seconds"))
                    if track is not None and role == "audio" else None)
        jobs.append(Job(task_id, track_id, role, name, urls, title, duration,
                        object_key(task_id, track_id, name), kind))
    return jobs, unusable
