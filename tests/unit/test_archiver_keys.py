"""Archiver object keys (no id escapes the prefix, distinct ids never share a key), event
ids, and the fitting of stored metadata into S3's 2 KiB user-metadata limit."""

from __future__ import annotations

import hashlib
import string
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.consumers.archiver.keys import (
    ELLIPSIS,
    MAX_SEGMENT,
    NO_TRACK,
    archive_event_id,
    dead_letter_event_id,
    encode_id,
    fit_metadata,
    object_key,
    object_name,
    trim_encoded,
)
from service.contracts.vocabulary import FILE_ROLES, FileRole
from service.storage.base import ObjectMetadata, validate_key
from service.storage.filesystem import FilesystemStore
from service.storage.s3 import USER_METADATA_LIMIT, decode_user_metadata, encode_user_metadata

SAFE = set(string.ascii_letters + string.digits + "._-%~")
ids = st.text(min_size=1, max_size=300)


@pytest.mark.parametrize(("value", "expected"), [
    ("2fac9f72", "2fac9f72"),
    ("Task_1.v2-x", "Task_1.v2-x"),
    ("a/b", "a%2Fb"),
    ("../../etc", "..%2F..%2Fetc"),
    (".", "%2E"),
    ("..", "%2E%2E"),
    ("...", "..."),
    ("a b", "a%20b"),
    ("%2F", "%252F"),
    ("ü", "%C3%BC"),
    ("🎵", "%F0%9F%8E%B5"),
    ("a\\b", "a%5Cb"),
    ("\x00", "%00"),
    ("x.json", "x.json"),
    ("~", "%7E"),
    ("_", "%5F"),  # "_" is the segment of files without a track
    ("__", "__"),
])
def test_encode_id(value: str, expected: str) -> None:
    assert encode_id(value) == expected


def test_empty_id_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        encode_id("")


def test_object_key_layout() -> None:
    assert object_key("2fac9f72", "8551662c", "audio") == "2fac9f72/8551662c/audio"
    assert object_key("t/1", "..", "cover") == "t%2F1/%2E%2E/cover"
    assert object_key("t", "x", "video") == "t/x/video"
    assert object_key("t", None, "image-2") == "t/_/image-2"
    for name in ("movie", "image-1", "image-02", "image-x", "image-", "-2", "audio/x",
                 "audio.json"):
        with pytest.raises(ValueError, match="object name"):
            object_key("t", "x", name)


@pytest.mark.parametrize("role", FILE_ROLES)
def test_every_role_has_a_key_with_and_without_a_track(role: FileRole) -> None:
    assert object_key("task", "tr", object_name(role)) == f"task/tr/{role}"
    assert object_key("task", None, object_name(role)) == f"task/{NO_TRACK}/{role}"
    assert object_key("task", None, object_name(role, 3)) == f"task/_/{role}-3"


def test_a_track_called_underscore_never_meets_the_files_without_a_track() -> None:
    assert object_key("t", "_", "audio") == "t/%5F/audio"
    assert object_key("t", None, "audio") == "t/_/audio"
    assert object_key("t", "%5F", "audio") == "t/%255F/audio"
    assert len({archive_event_id("t", track, "audio", "0" * 64) for track in ("_", None)}) == 2


def test_object_names() -> None:
    assert object_name("image") == "image"
    assert object_name("image", 2) == "image-2"
    with pytest.raises(ValueError, match="role"):
        object_name("movie")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ordinal"):
        object_name("image", 0)


def test_long_ids_are_shortened_with_a_hash() -> None:
    long_id = "é" * 200  # 1200 characters once encoded
    segment = encode_id(long_id)
    assert len(segment) <= MAX_SEGMENT
    assert segment.endswith("~" + hashlib.sha256(long_id.encode()).hexdigest())
    head = segment.split("~")[0]
    assert head
    assert urllib.parse.unquote(head, errors="strict") == "é" * (len(head) // 6)
    assert encode_id(long_id + "x") != segment


@settings(deadline=None)  # timing is not what these tests assert
@given(ids)
def test_every_id_makes_one_safe_segment(value: str) -> None:
    segment = encode_id(value)
    assert set(segment) <= SAFE
    assert segment not in ("", ".", "..")
    assert len(segment) <= MAX_SEGMENT
    key = object_key(value, value, "audio")
    assert validate_key(key) == key
    assert key.count("/") == 2


@settings(deadline=None)  # timing is not what these tests assert
@given(ids, ids)
def test_distinct_ids_have_distinct_segments(a: str, b: str) -> None:
    if a != b:
        assert encode_id(a) != encode_id(b)


@settings(deadline=None)  # timing is not what these tests assert
@given(ids)
def test_short_segments_decode_back(value: str) -> None:
    segment = encode_id(value)
    if "~" not in segment:
        assert urllib.parse.unquote(segment, errors="strict") == value


@settings(deadline=None)  # timing is not what these tests assert
@given(st.lists(ids, min_size=2, max_size=2))
def test_keys_stay_inside_the_filesystem_root(pair: list[str]) -> None:
    root = Path("/srv/archive")
    path = FilesystemStore(root)._object_path(object_key(pair[0], pair[1], "cover"))
    assert path.resolve().is_relative_to(root)
    assert len(path.relative_to(root).parts) == 3


def test_archive_event_id_follows_the_schema() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    expected = hashlib.sha256(f"t\ntr\naudio\n{sha}".encode()).hexdigest()[:32]
    assert archive_event_id("t", "tr", "audio", sha) == expected
    assert archive_event_id("t", "tr", "cover", sha) != expected
    # Existing track-family objects keep the ids they were reported with.
    # (the literal is what the archiver computed before files[] existed)
    assert archive_event_id("2fac9f72", "8551662c", "audio", "9" * 64) == \
        "10df7598573daa0aaf0b83dfb6be9bb8"
    # A file without a track: the empty string, which no track id is.
    no_track = hashlib.sha256(f"t\n\nvideo\n{sha}".encode()).hexdigest()[:32]
    assert archive_event_id("t", None, "video", sha) == no_track
    assert dead_letter_event_id("t", None, "video", "e" * 32) == hashlib.sha256(
        ("t\n\nvideo\n" + "e" * 32).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- metadata fitting


def _metadata(source_url: str, title: str | None) -> ObjectMetadata:
    return ObjectMetadata(content_type="audio/mpeg", size=123,
                          sha256=hashlib.sha256(b"x").hexdigest(), source_url=source_url,
                          title=title, duration_seconds=187.25)


def _user_size(metadata: ObjectMetadata) -> int:
    return sum(len(k) + len(v) for k, v in encode_user_metadata(metadata).items())


def test_small_metadata_is_kept_as_is() -> None:
    metadata = _metadata("https://cdn.example.test/a.mp3?sig=abc", "Iron Man")
    assert fit_metadata(metadata) is metadata


def test_trim_encoded_respects_the_budget_and_marks_the_cut() -> None:
    assert trim_encoded("abc", 3) == "abc"
    cut = trim_encoded("é" * 100, 60)
    assert cut.endswith(ELLIPSIS)
    assert len(urllib.parse.quote(cut, safe="")) <= 60
    assert len(urllib.parse.quote(cut[:-1] + "é" + ELLIPSIS, safe="")) > 60


@settings(deadline=None)  # timing is not what these tests assert
@given(url_tail=st.text(max_size=3000), title=st.none() | st.text(max_size=3000))
def test_fitted_metadata_always_fits_s3(url_tail: str, title: str | None) -> None:
    metadata = _metadata("https://cdn.example.test/" + url_tail, title)
    fitted = fit_metadata(metadata)
    assert _user_size(fitted) <= USER_METADATA_LIMIT
    assert fitted.source_url.startswith("https://cdn.example.test/"[: len(fitted.source_url)])
    assert fitted.sha256 == metadata.sha256
    assert fitted.size == metadata.size
    assert (fitted.title is None) == (title is None)
    decoded = decode_user_metadata("audio/mpeg", encode_user_metadata(fitted))
    assert decoded == fitted


def test_long_title_is_cut_before_the_url() -> None:
    url = "https://cdn.example.test/" + "a" * 1000
    fitted = fit_metadata(_metadata(url, "🎵" * 400))
    assert fitted.source_url == url
    assert fitted.title is not None
    assert fitted.title.endswith(ELLIPSIS)
    assert _user_size(fitted) <= USER_METADATA_LIMIT
