"""What each file role may be: its accepted content types and its size limit (pure).

Audio roles (``audio``, ``wav`` and the vocal-separation stems) accept ``audio/*``,
``cover`` and ``image`` accept ``image/*``, ``video`` accepts ``video/*``; every role
accepts ``application/octet-stream`` (what many CDNs send). Each role's size limit is
read with the settings (``service.config.archiver.read_max_bytes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from service.consumers.archiver.download import DownloadLimits
from service.contracts.vocabulary import FILE_ROLES, FileRole

_IMAGE_ROLES: Final = frozenset({"cover", "image"})
_VIDEO_ROLES: Final = frozenset({"video"})


def media_type(role: FileRole) -> str:
    """The top-level content type a role's files have: ``audio``, ``image`` or ``video``."""
    if role in _IMAGE_ROLES:
        return "image"
    if role in _VIDEO_ROLES:
        return "video"
    return "audio"


def limits_by_role(base: DownloadLimits,
                   max_bytes: Mapping[str, int]) -> dict[FileRole, DownloadLimits]:
    """``base`` narrowed per role: its content types and its size limit."""
    return {role: dataclasses.replace(base, max_bytes=max_bytes.get(role, base.max_bytes),
                                      media_types=frozenset({media_type(role)}))
            for role in FILE_ROLES}
