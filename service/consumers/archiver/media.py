"""What each file role may be: its accepted content types and its size limit (pure).

Audio roles (``audio``, ``wav`` and the vocal-separation stems) accept ``audio/*``,
``cover`` and ``image`` accept ``image/*``, ``video`` accepts ``video/*``; every role
accepts ``application/octet-stream`` (what many CDNs send). Every role's size limit is
``ARCHIVE_MAX_BYTES`` unless ``ARCHIVE_MAX_BYTES_<ROLE>`` says otherwise; video defaults
to at least :data:`DEFAULT_VIDEO_MAX_BYTES`, since a music video is far larger than a song.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from service.consumers.archiver.download import DownloadLimits
from service.contracts.vocabulary import FILE_ROLES, FileRole

DEFAULT_VIDEO_MAX_BYTES: Final = 1024 * 1024 * 1024  # 1 GiB

_IMAGE_ROLES: Final = frozenset({"cover", "image"})
_VIDEO_ROLES: Final = frozenset({"video"})


def media_type(role: FileRole) -> str:
    """The top-level content type a role's files have: ``audio``, ``image`` or ``video``."""
    if role in _IMAGE_ROLES:
        return "image"
    if role in _VIDEO_ROLES:
        return "video"
    return "audio"


def max_bytes_variable(role: FileRole) -> str:
    """The environment variable that sets one role's size limit."""
    return f"ARCHIVE_MAX_BYTES_{role.upper()}"


def default_max_bytes(role: FileRole, general: int) -> int:
    """A role's limit when its own variable is not set."""
    return max(general, DEFAULT_VIDEO_MAX_BYTES) if role in _VIDEO_ROLES else general


def limits_by_role(base: DownloadLimits,
                   max_bytes: Mapping[FileRole, int]) -> dict[FileRole, DownloadLimits]:
    """``base`` narrowed per role: its content types and its size limit."""
    return {role: dataclasses.replace(base, max_bytes=max_bytes.get(role, base.max_bytes),
                                      media_types=frozenset({media_type(role)}))
            for role in FILE_ROLES}
