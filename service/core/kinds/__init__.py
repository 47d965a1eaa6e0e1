"""The kind registry: every callback kind the gateway accepts, in one table.

Each kind lives in its own module (the track family's nine kinds share one, because
they share one provider shape). ``create_app`` adds ``POST /callbacks/<kind>`` for
every kind listed here; the OpenAPI document is generated from this table, and tests
check that the event schema, the AsyncAPI document and the examples cover exactly
these kinds. Adding a kind: see "Adding a callback kind" in the README.
"""

from __future__ import annotations

from typing import Final

from service.core.kinds import (
    cover_image,
    lyrics,
    midi,
    music_video,
    tracks,
    vocal_separation,
    wav,
)
from service.core.kinds.base import CallbackKind, Reading, callback_route

KINDS: Final[tuple[CallbackKind, ...]] = (
    *tracks.KINDS,
    cover_image.KIND,
    lyrics.KIND,
    wav.KIND,
    vocal_separation.KIND,
    midi.KIND,
    music_video.KIND,
)
_BY_NAME: Final = {kind.name: kind for kind in KINDS}

# The names as closed sets, for consumers' label sets and checks.
KIND_NAMES: Final[tuple[str, ...]] = tuple(kind.name for kind in KINDS)
#: Kinds whose callbacks carry ``tracks[]`` and go through text, first and complete.
TRACK_FAMILY_KIND_NAMES: Final[tuple[str, ...]] = tuple(kind.name for kind in tracks.KINDS)
#: Kinds answered by a single ``complete`` (or ``error``) callback.
ONE_SHOT_KIND_NAMES: Final[tuple[str, ...]] = tuple(
    name for name in KIND_NAMES if name not in TRACK_FAMILY_KIND_NAMES)


def kind_named(name: str) -> CallbackKind:
    """The registered kind called ``name`` (KeyError for any other)."""
    return _BY_NAME[name]


__all__ = [
    "KINDS", "KIND_NAMES", "ONE_SHOT_KIND_NAMES", "TRACK_FAMILY_KIND_NAMES", "CallbackKind",
    "Reading", "callback_route", "kind_named",
]
