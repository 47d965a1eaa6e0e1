"""Object storage on a local (or mounted) directory.

Layout: the object at ``<root>/<key>`` and its metadata in the sidecar
``<root>/<key>.json``. Both are written atomically: each to a temporary file in the same
directory (the object's a hard link to the given file when both are on one filesystem,
else a copy), both ``fsync``ed, renamed into place (the object first), then one ``fsync`` of
the directory for both renames, and one of each directory's parent that ``put_file``
created (else a crash could lose the new directory with everything in it). A key seen
before is replaced with its old sidecar removed first, and with a directory ``fsync``
between the two renames, so a sidecar never describes an object that is not the one on
disk. A crash at any point leaves the old complete pair, or an object without its sidecar
(or a sidecar without its object), which ``stat`` reports as absent so the next attempt
rewrites it.

Linking instead of copying spares a second write of every byte and a deleted file per
object. The deletes were the dear part: on an ext4 without a journal (as on this
project's development VM) the inode allocator scans past every inode deleted in the last
few seconds (``recently_deleted``); with a copy and a delete per object, 42 % of the
archiver's CPU was the kernel allocating inodes (perf under ``make bench``), 15 % after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from service.storage.base import SIDECAR_SUFFIX, ObjectMetadata, StorageError, validate_key

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_COPY_BUFFER = 1024 * 1024
_SIDECAR_FORMAT = 1


class FilesystemStore:
    """An :class:`~service.storage.base.ObjectStore` rooted at an absolute directory."""

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise ValueError(f"filesystem store root must be absolute, got {str(root)!r}")
        self.root = root

    def _object_path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    @staticmethod
    def _sidecar_path(object_path: Path) -> Path:
        return object_path.with_name(object_path.name + SIDECAR_SUFFIX)

    def uri(self, key: str) -> str:
        return self._object_path(key).as_uri()

    async def stat(self, key: str) -> ObjectMetadata | None:
        path = self._object_path(key)
        try:
            return await asyncio.to_thread(self._stat_sync, path)
        except OSError as exc:
            raise StorageError(f"cannot stat {self.uri(key)}: {exc}") from exc

    def _stat_sync(self, path: Path) -> ObjectMetadata | None:
        try:
            raw = self._sidecar_path(path).read_bytes()
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                return None
            metadata = ObjectMetadata.from_json(data)
        except ValueError:  # torn by hand or another program: absent, so it is rewritten
            return None
        return metadata if metadata.size == size else None

    async def put_file(self, key: str, path: Path, metadata: ObjectMetadata) -> None:
        target = self._object_path(key)
        try:
            await asyncio.to_thread(self._put_sync, target, path, metadata)
        except OSError as exc:
            raise StorageError(f"cannot write {target.as_uri()}: {exc}") from exc

    def _put_sync(self, target: Path, source: Path, metadata: ObjectMetadata) -> None:
        document = {"format": _SIDECAR_FORMAT, **metadata.to_json()}
        encoded = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
        with source.open("rb") as src:
            size = os.fstat(src.fileno()).st_size
            if size != metadata.size:
                raise ValueError(f"metadata.size is {metadata.size} but {source} has "
                                 f"{size} bytes")
            created = _make_directories(target.parent)
            sidecar = self._sidecar_path(target)
            replacing = target.exists()
            # An old sidecar must not describe the new object while it is being replaced.
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
                replacing = True
                _fsync_directory(target.parent)
            object_temporary = _link_temporary(target, source) or _write_temporary(
                target, lambda dst: shutil.copyfileobj(src, dst, _COPY_BUFFER))
        temporaries = [object_temporary]
        try:
            temporaries.append(_write_temporary(sidecar, lambda dst: dst.write(encoded)))
            object_temporary.replace(target)
            if replacing:
                _fsync_directory(target.parent)
            temporaries[1].replace(sidecar)
        except BaseException:
            for temporary in temporaries:  # a renamed one is gone already
                with contextlib.suppress(OSError):
                    temporary.unlink()
            raise
        _fsync_directory(target.parent)
        # Last: on a journalling filesystem the fsyncs above have already committed the
        # new directories, so these cost next to nothing there; elsewhere they are needed.
        for parent in created:
            _fsync_directory(parent)

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._check_sync)
        except OSError as exc:
            raise StorageError(f"archive directory {self.root} is not usable: {exc}") from exc

    def _check_sync(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.root) as probe:  # O_TMPFILE where available
            probe.write(b"ok")

    async def close(self) -> None:
        return None


def _make_directories(directory: Path) -> list[Path]:
    """``mkdir -p``; returns the parents whose entries changed (to fsync), deepest first."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    parents: list[Path] = []
    for path in reversed(missing):
        # Made meanwhile by a concurrent put of a sibling key: its parent is fsynced here
        # too, so this put does not return before the directory is durable.
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        parents.append(path.parent)
    return parents[::-1]


def _beside(target: Path, suffix: str, make: Callable[[Path], T]) -> tuple[T, Path]:
    """``make`` a new path beside ``target``, ``.<name>.<random hex><suffix>``."""
    while True:
        path = target.with_name(f".{target.name}.{secrets.token_hex(8)}{suffix}")
        try:
            return make(path), path
        except FileExistsError:  # pragma: no cover - 64 random bits collided
            continue


def create_beside(target: Path, suffix: str) -> tuple[int, Path]:
    """A new file beside ``target`` (so it can be renamed onto it), open for writing, with
    the mode any new file gets (0o666 less the umask)."""
    return _beside(target, suffix, lambda path: os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))


def _link_temporary(target: Path, source: Path) -> Path | None:
    """Hard-link ``source`` beside ``target`` and fsync it; None where it cannot be linked
    (another filesystem, one without hard links, whatever a mount answers: EXDEV, EPERM,
    EOPNOTSUPP, ENOSYS...): the caller copies instead, and a real problem (a full disk, an
    I/O error) surfaces there."""
    try:
        _, temporary = _beside(target, ".tmp", lambda path: os.link(source, path))
    except OSError:
        return None
    try:
        fd = os.open(temporary, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # the caller wrote it without: its bytes reach the disk here
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return temporary


def _write_temporary(target: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a temporary file beside ``target`` and fsync it; the caller renames it."""
    fd, temporary = create_beside(target, ".tmp")
    try:
        with os.fdopen(fd, "wb") as dst:
            write(dst)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return temporary


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
