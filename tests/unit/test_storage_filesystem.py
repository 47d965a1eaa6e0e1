"""FilesystemStore: atomic object + sidecar writes, stat semantics, key validation."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

from service.config.env import ConfigError, Env
from service.storage import filesystem as filesystem_module
from service.storage.base import ObjectMetadata, ObjectStore, StorageError, validate_key
from service.storage.factory import open_store
from service.storage.filesystem import FilesystemStore

if TYPE_CHECKING:
    from collections.abc import Callable

TITLE = "Ünïcødé 🎵 — «Song» 日本語 100% a/b"


def _file(tmp_path: Path, content: bytes, name: str = "source.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _metadata(content: bytes, *, title: str | None = TITLE,
              duration: float | None = 187.25) -> ObjectMetadata:
    return ObjectMetadata(content_type="audio/mpeg", size=len(content),
                          sha256=hashlib.sha256(content).hexdigest(),
                          source_url="https://cdn.example.test/a.mp3?x=1&y=%C3%A4",
                          title=title, duration_seconds=duration)


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "archive")


async def test_put_then_stat_roundtrips_metadata_and_content(store: FilesystemStore,
                                                             tmp_path: Path) -> None:
    content = os.urandom(3000)
    metadata = _metadata(content)
    key = "pre/task%2F1/track-1/audio"
    assert await store.stat(key) is None
    await store.put_file(key, _file(tmp_path, content), metadata)

    assert await store.stat(key) == metadata
    object_path = store.root / "pre" / "task%2F1" / "track-1" / "audio"
    assert object_path.read_bytes() == content
    sidecar = json.loads((object_path.parent / "audio.json").read_text(encoding="utf-8"))
    assert sidecar["title"] == TITLE
    assert sidecar["sha256"] == metadata.sha256
    # Nothing else: no temporary files left behind.
    assert _all_files(store.root) == ["pre/task%2F1/track-1/audio",
                                      "pre/task%2F1/track-1/audio.json"]
    assert store.uri(key) == object_path.as_uri()
    assert store.uri(key).startswith("file:///")


async def test_optional_fields_and_overwrite(store: FilesystemStore, tmp_path: Path) -> None:
    first = b"first version"
    await store.put_file("k/audio", _file(tmp_path, first), _metadata(first))
    second = b"the second, longer version"
    replacement = _metadata(second, title=None, duration=None)
    await store.put_file("k/audio", _file(tmp_path, second, "other.bin"), replacement)
    assert await store.stat("k/audio") == replacement
    assert (store.root / "k" / "audio").read_bytes() == second
    assert _all_files(store.root) == ["k/audio", "k/audio.json"]


async def test_object_without_sidecar_is_absent(store: FilesystemStore,
                                                tmp_path: Path) -> None:
    content = b"abc"
    await store.put_file("a/b", _file(tmp_path, content), _metadata(content))
    (store.root / "a" / "b.json").unlink()
    assert await store.stat("a/b") is None
    # ...and a sidecar without its object is absent too.
    await store.put_file("a/b", _file(tmp_path, content), _metadata(content))
    (store.root / "a" / "b").unlink()
    assert await store.stat("a/b") is None


async def test_sidecar_not_matching_the_object_is_absent(store: FilesystemStore,
                                                         tmp_path: Path) -> None:
    content = b"abcdef"
    await store.put_file("a/b", _file(tmp_path, content), _metadata(content))
    (store.root / "a" / "b").write_bytes(b"abc")  # size no longer matches
    assert await store.stat("a/b") is None
    (store.root / "a" / "b").write_bytes(content)
    (store.root / "a" / "b.json").write_text("{not json", encoding="utf-8")
    assert await store.stat("a/b") is None


async def test_crash_while_writing_object_leaves_nothing_visible(
        store: FilesystemStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = b"old content"
    await store.put_file("x/audio", _file(tmp_path, old), _metadata(old))
    real_fsync = os.fsync
    calls = 0

    def failing_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # 1: directory after removing the old sidecar; 2: the new object
            raise OSError(5, "simulated I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    new = b"new content that never lands"
    with pytest.raises(StorageError, match="simulated I/O error"):
        await store.put_file("x/audio", _file(tmp_path, new, "new.bin"), _metadata(new))
    monkeypatch.setattr(os, "fsync", real_fsync)

    # The final name still holds the complete old bytes, no temp file is left, and since
    # the old sidecar was removed first, the key reads as absent (so it is rewritten).
    assert (store.root / "x" / "audio").read_bytes() == old
    assert _all_files(store.root) == ["x/audio"]
    assert await store.stat("x/audio") is None
    await store.put_file("x/audio", _file(tmp_path, new, "new.bin"), _metadata(new))
    assert await store.stat("x/audio") == _metadata(new)


async def test_crash_between_object_and_sidecar_reads_as_absent(
        store: FilesystemStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real: Callable[..., Path] = filesystem_module._write_temporary

    def write_object_only(target: Path, write: Callable[..., object]) -> Path:
        if target.name.endswith(".json"):
            raise OSError(28, "No space left on device")
        return real(target, write)

    monkeypatch.setattr(filesystem_module, "_write_temporary", write_object_only)
    content = b"payload"
    with pytest.raises(StorageError, match="No space left"):
        await store.put_file("t/audio", _file(tmp_path, content), _metadata(content))
    assert await store.stat("t/audio") is None
    assert _all_files(store.root) == []  # neither the object nor a temporary file
    monkeypatch.setattr(filesystem_module, "_write_temporary", real)
    await store.put_file("t/audio", _file(tmp_path, content), _metadata(content))
    assert await store.stat("t/audio") == _metadata(content)


def _cannot_link(monkeypatch: pytest.MonkeyPatch, error: int = errno.EXDEV) -> None:
    def failing_link(source: object, target: object) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "link", failing_link)


async def test_a_file_on_the_same_filesystem_is_linked_not_copied(
        store: FilesystemStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = os.urandom(70_000)
    source = _file(tmp_path, content)
    copies: list[object] = []
    monkeypatch.setattr(shutil, "copyfileobj", lambda *args: copies.append(args))

    await store.put_file("t/audio", source, _metadata(content))

    stored = store.root / "t" / "audio"
    assert copies == []
    assert stored.stat().st_ino == source.stat().st_ino
    source.unlink()  # what the archiver does next: the object stays
    assert stored.read_bytes() == content
    assert await store.stat("t/audio") == _metadata(content)
    assert _all_files(store.root) == ["t/audio", "t/audio.json"]


@pytest.mark.parametrize("error", [errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS,
                                   errno.EMLINK])
async def test_a_file_that_cannot_be_linked_is_copied(
        store: FilesystemStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        error: int) -> None:
    content = os.urandom(5000)
    source = _file(tmp_path, content)
    _cannot_link(monkeypatch, error)

    await store.put_file("t/audio", source, _metadata(content))

    stored = store.root / "t" / "audio"
    assert stored.stat().st_ino != source.stat().st_ino
    assert stored.read_bytes() == content == source.read_bytes()
    assert _all_files(store.root) == ["t/audio", "t/audio.json"]


async def test_a_failure_the_copy_meets_too_is_a_storage_error(
        store: FilesystemStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"bytes"
    _cannot_link(monkeypatch, errno.ENOSPC)
    real_open = os.open

    def full_disk(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", full_disk)
    with pytest.raises(StorageError, match="No space left"):
        await store.put_file("t/audio", _file(tmp_path, content), _metadata(content))
    monkeypatch.undo()
    assert await store.stat("t/audio") is None


async def test_large_file_is_copied_in_chunks(store: FilesystemStore, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    content = os.urandom(5 * 1024 * 1024 + 17)
    source = _file(tmp_path, content)
    _cannot_link(monkeypatch)  # on another filesystem
    largest_write = 0
    real_copy = shutil.copyfileobj

    def spying_copy(src: IO[bytes], dst: IO[bytes], length: int = 0) -> None:
        nonlocal largest_write
        largest_write = length
        real_copy(src, dst, length)

    monkeypatch.setattr(shutil, "copyfileobj", spying_copy)
    await store.put_file("big/audio", source, _metadata(content))
    assert 0 < largest_write <= 1024 * 1024
    assert hashlib.sha256((store.root / "big" / "audio").read_bytes()).hexdigest() == (
        _metadata(content).sha256)


async def test_size_mismatch_is_refused(store: FilesystemStore, tmp_path: Path) -> None:
    content = b"12345"
    wrong = ObjectMetadata(content_type="audio/mpeg", size=4,
                           sha256=hashlib.sha256(content).hexdigest(),
                           source_url="https://x.test/a", title=None, duration_seconds=None)
    with pytest.raises(ValueError, match=r"metadata\.size"):
        await store.put_file("k/audio", _file(tmp_path, content), wrong)
    assert not store.root.exists() or _all_files(store.root) == []


async def test_missing_source_file_is_a_storage_error(store: FilesystemStore,
                                                      tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        await store.put_file("k/audio", tmp_path / "missing", _metadata(b""))


@pytest.mark.parametrize("key", [
    "", "/abs/key", "a//b", "a/b/", "../escape", "a/../b", "a/./b", ".", "a\\b",
    "a/b\x00", "line\nbreak", "a/b.json",
])
async def test_invalid_keys_are_refused(store: FilesystemStore, tmp_path: Path,
                                        key: str) -> None:
    content = b"x"
    with pytest.raises(ValueError, match="key"):
        await store.put_file(key, _file(tmp_path, content), _metadata(content))
    with pytest.raises(ValueError, match="key"):
        await store.stat(key)
    with pytest.raises(ValueError, match="key"):
        store.uri(key)
    with pytest.raises(ValueError, match="key"):
        validate_key(key)
    assert not store.root.exists()
    assert _all_files(tmp_path) == ["source.bin"]


async def test_check_creates_root_and_fails_when_unusable(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "new" / "root")
    await store.check()
    assert (tmp_path / "new" / "root").is_dir()
    assert _all_files(tmp_path) == []
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="not usable"):
        await FilesystemStore(blocker / "root").check()
    await store.close()


def test_store_satisfies_the_protocol(store: FilesystemStore) -> None:
    assert isinstance(store, ObjectStore)


def test_relative_root_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        FilesystemStore(Path("relative/dir"))


def test_metadata_validation() -> None:
    good = _metadata(b"x")
    for field, value in [("size", -1), ("sha256", "ABC"), ("content_type", ""),
                         ("source_url", ""), ("duration_seconds", float("nan"))]:
        with pytest.raises(ValueError, match=field):
            ObjectMetadata(**{**good.to_json(), field: value})
    assert ObjectMetadata.from_json(good.to_json()) == good


def test_open_store_file_url(tmp_path: Path) -> None:
    store = open_store((tmp_path / "a b").as_uri(), Env({}))
    assert isinstance(store, FilesystemStore)
    assert store.root == tmp_path / "a b"


@pytest.mark.parametrize("url", [
    "file://relative/dir", "file:///", "file:///a/../b", "ftp://host/x", "/plain/path",
    "file:///dir?x=1", "",
])
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^ARCHIVE_STORAGE_URL: "):
        open_store(url, Env({}))


def _spy_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every fsync as ``dir:<path>`` or ``file:<name>`` (the name without the
    temporary file's random part), in order."""
    calls: list[str] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            calls.append(f"dir:{path}")
        else:
            calls.append("file:" + path.name[1:].rsplit(".", 2)[0])  # .audio.<hex>.tmp → audio
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spying_fsync)
    return calls


async def test_new_key_fsyncs_both_files_then_its_directory_once_then_new_parents(
        store: FilesystemStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.root.mkdir()
    calls = _spy_fsyncs(monkeypatch)
    content = b"new object"
    await store.put_file("task/track/audio", _file(tmp_path, content), _metadata(content))

    # Both renames share one directory fsync; the two directories made for the key are
    # made durable in their parents (else a crash could lose them with the object).
    root = store.root
    assert calls == ["file:audio", "file:audio.json", f"dir:{root / 'task' / 'track'}",
                     f"dir:{root / 'task'}", f"dir:{root}"]
    assert await store.stat("task/track/audio") == _metadata(content)

    calls.clear()
    await store.put_file("task/track/cover", _file(tmp_path, content), _metadata(content))
    assert calls == ["file:cover", "file:cover.json", f"dir:{root / 'task' / 'track'}"]


async def test_replacing_a_key_fsyncs_the_directory_between_the_renames(
        store: FilesystemStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = b"old", b"new bytes"
    await store.put_file("k/audio", _file(tmp_path, old), _metadata(old))
    calls = _spy_fsyncs(monkeypatch)
    renamed: list[str] = []
    real_replace = Path.replace

    def spying_replace(self: Path, target: Path) -> Path:
        renamed.append(f"{Path(target).name} after {len(calls)} fsyncs")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spying_replace)
    await store.put_file("k/audio", _file(tmp_path, new), _metadata(new))

    directory = f"dir:{store.root / 'k'}"
    # The old sidecar goes first (and durably); the new one is renamed only once the new
    # object's rename is durable, so it never describes the old bytes.
    assert calls == [directory, "file:audio", "file:audio.json", directory, directory]
    assert renamed == ["audio after 3 fsyncs", "audio.json after 4 fsyncs"]
    assert await store.stat("k/audio") == _metadata(new)
