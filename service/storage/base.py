"""The object-storage interface the archiver writes through, and the metadata it stores.

Two implementations: :class:`service.storage.filesystem.FilesystemStore` (an object file
plus a JSON sidecar) and :class:`service.storage.s3.S3Store` (obstore; Content-Type plus
user metadata). :func:`service.storage.factory.open_store` picks one from a URL.

Contract shared by both:

- keys are relative, ``/``-separated paths (``prefix/task/track/audio``); callers
  percent-encode ids, and :func:`validate_key` still refuses anything that could escape
  the store or collide with its bookkeeping (:class:`ValueError`);
- ``put_file`` streams from a local file and is atomic: under the final key there is
  either the previous complete object or the new complete object, never a partial one;
- ``stat`` returns metadata only for a complete object written by ``put_file``,
  otherwise ``None`` (so the caller simply writes it again);
- failures of the backend (I/O, network, credentials) raise :class:`StorageError`;
  caller mistakes (bad key, metadata that does not describe the file) raise ``ValueError``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

#: Keys may not end with this: the filesystem store keeps ``<key>.json`` sidecars, and
#: both stores refuse the same keys so that switching backends changes nothing.
SIDECAR_SUFFIX = ".json"


class StorageError(Exception):
    """The storage backend failed (I/O, network, credentials); usually worth retrying."""


@dataclass(frozen=True)
class ObjectMetadata:
    """What travels with an archived object."""

    content_type: str
    size: int
    sha256: str
    source_url: str
    title: str | None
    duration_seconds: float | None

    def __post_init__(self) -> None:
        if not self.content_type or any(ord(c) < 0x20 or ord(c) > 0x7E
                                        for c in self.content_type):
            raise ValueError(f"content_type must be a printable ASCII media type, "
                             f"got {self.content_type!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size must be a non-negative integer, got {self.size!r}")
        if not _SHA256_HEX.fullmatch(self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not self.source_url:
            raise ValueError("source_url must not be empty")
        if self.duration_seconds is not None and (
                isinstance(self.duration_seconds, bool)
                or not isinstance(self.duration_seconds, int | float)
                or not math.isfinite(self.duration_seconds) or self.duration_seconds < 0):
            raise ValueError(f"duration_seconds must be a finite non-negative number, "
                             f"got {self.duration_seconds!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (the filesystem sidecar's content)."""
        return {
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "source_url": self.source_url,
            "title": self.title,
            "duration_seconds": self.duration_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectMetadata:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything malformed."""
        try:
            content_type = data["content_type"]
            size = data["size"]
            sha256 = data["sha256"]
            source_url = data["source_url"]
        except KeyError as exc:
            raise ValueError(f"metadata lacks {exc.args[0]!r}") from None
        title = data.get("title")
        duration = data.get("duration_seconds")
        if not all(isinstance(v, str) for v in (content_type, sha256, source_url)):
            raise ValueError("content_type, sha256 and source_url must be strings")
        if title is not None and not isinstance(title, str):
            raise ValueError("title must be a string or null")
        if isinstance(duration, int) and not isinstance(duration, bool):
            duration = float(duration)
        return cls(content_type=content_type, size=size, sha256=sha256,
                   source_url=source_url, title=title, duration_seconds=duration)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``ValueError``.

    Refused: empty keys, a leading ``/``, empty segments (``a//b``, trailing ``/``),
    ``.`` and ``..`` segments, backslashes, control characters, and keys ending in
    ``.json`` (reserved for the filesystem store's sidecars).
    """
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative, got {key!r}")
    if "\\" in key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(f"object key must not contain backslashes or control characters, "
                         f"got {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"object key must not contain empty, '.' or '..' segments, "
                             f"got {key!r}")
    if key.endswith(SIDECAR_SUFFIX):
        raise ValueError(f"object keys ending in {SIDECAR_SUFFIX!r} are reserved for "
                         f"metadata sidecars, got {key!r}")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """Where archived objects go. All I/O methods are coroutines."""

    def uri(self, key: str) -> str:
        """``file:///abs/path`` or ``s3://bucket/prefix/key`` (the store adds its prefix)."""
        ...

    async def stat(self, key: str) -> ObjectMetadata | None:
        """The stored metadata, or ``None`` when no complete object exists under ``key``."""
        ...

    async def put_file(self, key: str, path: Path, metadata: ObjectMetadata) -> None:
        """Store the local file ``path`` under ``key`` with ``metadata``, atomically.

        Streams the file (never reads it whole). ``metadata.size`` must equal the file's
        size (``ValueError`` otherwise). Overwrites an existing object. The store may keep
        the file itself rather than a copy (the filesystem store hard-links a file on its
        own filesystem, which then keeps its mode): do not write to it afterwards;
        removing it is fine.
        """
        ...

    async def check(self) -> None:
        """Cheap reachability probe (for ``/readyz``); raises ``StorageError`` on failure."""
        ...

    async def close(self) -> None:
        """Release resources; the store must not be used afterwards."""
        ...
