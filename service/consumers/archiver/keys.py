"""Object keys and stored-metadata sizing for the archiver (pure).

Keys are computable before any download: ``<task>/<track>/<object>`` (the store adds its
own prefix: the ``s3://bucket/prefix`` path or the filesystem root), where each id is
percent-encoded outside ``[A-Za-z0-9._-]`` (UTF-8, upper-case hex). So an id can never
add a ``/`` segment, and the ids ``.`` and ``..`` (the only segments made of allowed
characters that could escape the prefix) have their dots encoded too.

A file of the task as a whole (no track id) goes under the track segment ``_``
(:data:`NO_TRACK`); a real track id ``_`` is encoded ``%5F``, so the two never meet.
``<object>`` is the file's role (``audio``, ``cover``, ``video``, ``vocal``, ...), or
``<role>-<n>`` for the n-th (n >= 2) distinct file of one role without a track id (the
images of a cover-image task).

The mapping is injective: a plain encoded id never contains ``~``. An id whose encoding
would exceed :data:`MAX_SEGMENT` characters (a file name is at most 255 bytes on common
file systems) becomes ``<first part of its encoding>~<sha256 of the id>``, which only
another id with the same SHA-256 could share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import urllib.parse
from typing import Final

from service.contracts.vocabulary import FILE_ROLES, FileRole
from service.storage.base import ObjectMetadata, validate_key
from service.storage.s3 import USER_METADATA_LIMIT, encode_user_metadata

#: The track segment of a file that belongs to no track.
NO_TRACK: Final = "_"

#: Longest encoded id kept as is; longer ones are shortened with a hash (see module doc).
MAX_SEGMENT: Final = 200
_HEAD: Final = 120
_SAFE: Final = "._-"  # with ASCII letters and digits (and "~", handled below)
_PARTIAL_ESCAPE: Final = re.compile(r"%[0-9A-F]?$")

#: Stored titles are cut to this many characters once percent-encoded (S3 user metadata).
TITLE_BUDGET: Final = 512
ELLIPSIS: Final = "…"


def encode_id(value: str) -> str:
    """One key segment for a task or track id (non-empty; ``ValueError`` otherwise)."""
    if not isinstance(value, str) or not value:
        raise ValueError("ids must be non-empty strings")
    encoded = urllib.parse.quote(value, safe=_SAFE, encoding="utf-8", errors="strict")
    encoded = encoded.replace("~", "%7E")  # quote() always leaves "~" alone
    if encoded in (".", ".."):
        encoded = "%2E" * len(encoded)
    elif encoded == NO_TRACK:  # reserved for "no track"
        encoded = "%5F"
    if len(encoded) <= MAX_SEGMENT:
        return encoded
    head = _PARTIAL_ESCAPE.sub("", encoded[:_HEAD])  # never cut an escape in half
    return f"{head}~{hashlib.sha256(value.encode('utf-8')).hexdigest()}"


def object_name(role: FileRole, ordinal: int = 1) -> str:
    """The last key segment: the role, or ``<role>-<ordinal>`` from the second file on."""
    if role not in FILE_ROLES:
        raise ValueError(f"unknown file role {role!r}")
    if ordinal < 1:
        raise ValueError("ordinal must be >= 1")
    return role if ordinal == 1 else f"{role}-{ordinal}"


def object_key(task_id: str, track_id: str | None, name: str) -> str:
    """``<task>/<track or _>/<name>``, relative to the store's prefix."""
    role, dash, ordinal = name.partition("-")
    numbered = ordinal.isascii() and ordinal.isdigit() and ordinal == str(max(2, int(ordinal)))
    if role not in FILE_ROLES or (dash and not numbered):
        raise ValueError(f"unknown object name {name!r}")
    track = NO_TRACK if track_id is None else encode_id(track_id)
    return validate_key(f"{encode_id(task_id)}/{track}/{name}")


def archive_event_id(task_id: str, track_id: str | None, name: str, sha256: str) -> str:
    """``ce_id`` of an archived report: equal for every report of the same stored object.

    A missing track id counts as the empty string, which no real track id is.
    """
    material = "\n".join((task_id, track_id or "", name, sha256)).encode("utf-8")
    return hashlib.sha256(material).hexdigest()[:32]


def dead_letter_event_id(task_id: str, track_id: str | None, name: str,
                         source_event_id: str) -> str:
    """``ce_id`` of a dead letter: equal when the same event's object fails again."""
    material = "\n".join((task_id, track_id or "", name, source_event_id)).encode("utf-8")
    return hashlib.sha256(material).hexdigest()[:32]


def _encoded_length(value: str) -> int:
    return len(urllib.parse.quote(value, safe=""))


def trim_encoded(value: str, budget: int) -> str:
    """``value``, or its longest prefix plus ``…`` whose S3 encoding fits ``budget``."""
    if _encoded_length(value) <= budget:
        return value
    room = budget - _encoded_length(ELLIPSIS)
    low, high = 0, len(value)  # encoded length grows with the prefix: binary search
    while low < high:
        middle = (low + high + 1) // 2
        if _encoded_length(value[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return value[:low] + ELLIPSIS


def _user_metadata_size(metadata: ObjectMetadata) -> int:
    return sum(len(name) + len(value) for name, value in encode_user_metadata(metadata).items())


def fit_metadata(metadata: ObjectMetadata) -> ObjectMetadata:
    """``metadata`` with title and source URL shortened until S3 accepts it (2 KiB).

    Applied for every backend, so switching backends changes nothing. The title is cut
    first (to :data:`TITLE_BUDGET`), then the source URL gets whatever room is left
    (it keeps at least its scheme and host in practice: the fixed fields take ~150 bytes).
    """
    if _user_metadata_size(metadata) <= USER_METADATA_LIMIT:
        return metadata
    if metadata.title is not None:
        metadata = dataclasses.replace(metadata,
                                       title=trim_encoded(metadata.title, TITLE_BUDGET))
    excess = _user_metadata_size(metadata) - USER_METADATA_LIMIT
    if excess > 0:
        budget = _encoded_length(metadata.source_url) - excess
        metadata = dataclasses.replace(metadata,
                                       source_url=trim_encoded(metadata.source_url, budget))
    return metadata
