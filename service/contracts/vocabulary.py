"""The closed sets of the v1 event contract, as Python names (pure).

``schemas/music.callbacks.v1.schema.json`` is the contract; these are its enums for
code that needs them as types or label sets (the archiver's roles, the metrics
consumer's ``kind`` label). ``tests/unit/test_vocabulary.py`` keeps them equal to the
schema, so a kind or role added there fails the suite until it is added here.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Kind = Literal[
    "generate-music", "extend-music", "upload-cover", "upload-extend", "add-vocals",
    "add-instrumental", "mashup", "replace-section", "sounds",
    "cover-image", "lyrics", "wav", "vocal-separation", "midi", "music-video",
]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
#: Kinds whose callbacks carry ``tracks[]`` and go through text, first and complete.
TRACK_FAMILY_KINDS: Final[tuple[Kind, ...]] = KINDS[:9]
#: Kinds answered by a single ``complete`` (or ``error``) callback.
ONE_SHOT_KINDS: Final[tuple[Kind, ...]] = KINDS[9:]

FileRole = Literal[
    "audio", "cover", "wav", "video", "image",
    "vocal", "instrumental", "backing_vocals", "drums", "bass", "guitar", "keyboard",
    "percussion", "strings", "synth", "fx", "brass", "woodwinds", "origin",
]
FILE_ROLES: Final[tuple[FileRole, ...]] = get_args(FileRole)
#: The vocal-separation stems (every role after ``image``).
STEM_ROLES: Final[tuple[FileRole, ...]] = FILE_ROLES[5:]
