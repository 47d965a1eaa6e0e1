"""Per-role media rules: accepted content types and size limits, and their settings."""

from __future__ import annotations

import pytest

from service.config.archiver import (
    DEFAULT_MAX_BYTES,
    DEFAULT_VIDEO_MAX_BYTES,
    max_bytes_variable,
    read_max_bytes,
)
from service.config.env import ConfigError, Env
from service.consumers.archiver.download import DownloadLimits
from service.consumers.archiver.media import limits_by_role, media_type
from service.contracts.vocabulary import FILE_ROLES, STEM_ROLES


def test_every_role_accepts_one_media_type() -> None:
    assert {role: media_type(role) for role in ("audio", "wav", "cover", "image", "video")} == {
        "audio": "audio", "wav": "audio", "cover": "image", "image": "image", "video": "video"}
    assert {media_type(role) for role in STEM_ROLES} == {"audio"}


def test_limits_by_role_narrow_the_base_limits() -> None:
    base = DownloadLimits(max_bytes=100, connect_timeout=1.0, total_timeout=2.0)
    limits = limits_by_role(base, {"video": 5000})
    assert set(limits) == set(FILE_ROLES)
    assert limits["video"].max_bytes == 5000
    assert limits["video"].media_types == frozenset({"video"})
    assert limits["drums"].max_bytes == 100
    assert limits["drums"].media_types == frozenset({"audio"})
    assert limits["cover"].media_types == frozenset({"image"})
    assert (limits["audio"].connect_timeout, limits["audio"].total_timeout) == (1.0, 2.0)


def test_every_role_defaults_to_the_general_limit_but_video() -> None:
    general, by_role = read_max_bytes(Env({}), FILE_ROLES)
    assert general == DEFAULT_MAX_BYTES
    assert by_role["video"] == DEFAULT_VIDEO_MAX_BYTES
    assert {by_role[role] for role in FILE_ROLES if role != "video"} == {DEFAULT_MAX_BYTES}


def test_a_general_limit_above_the_video_default_raises_video_too() -> None:
    env = Env({"ARCHIVE_MAX_BYTES": str(2 * DEFAULT_VIDEO_MAX_BYTES),
               "ARCHIVE_MAX_BYTES_BACKING_VOCALS": "1000"})
    general, by_role = read_max_bytes(env, FILE_ROLES)
    assert by_role["video"] == general == 2 * DEFAULT_VIDEO_MAX_BYTES
    assert by_role["backing_vocals"] == 1000
    assert max_bytes_variable("backing_vocals") == "ARCHIVE_MAX_BYTES_BACKING_VOCALS"


@pytest.mark.parametrize(("environ", "variable"), [
    ({"ARCHIVE_MAX_BYTES_VIDEO": "huge"}, "ARCHIVE_MAX_BYTES_VIDEO"),
    ({"ARCHIVE_MAX_BYTES_COVER": "0"}, "ARCHIVE_MAX_BYTES_COVER"),
    ({"ARCHIVE_MAX_BYTES_VIDOE": "1000"}, "ARCHIVE_MAX_BYTES_VIDOE"),  # misspelt: refused
])
def test_bad_limits_name_their_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_max_bytes(Env(environ), FILE_ROLES)
    assert info.value.name == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_an_empty_role_variable_is_as_good_as_unset() -> None:
    _, by_role = read_max_bytes(Env({"ARCHIVE_MAX_BYTES_VIDOE": " "}), FILE_ROLES)
    assert by_role["video"] == DEFAULT_VIDEO_MAX_BYTES
