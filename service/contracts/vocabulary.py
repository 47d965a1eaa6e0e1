"""The file roles of the v1 event contract, as Python names (pure).

``schemas/music.callbacks.v1.schema.json`` is the contract; this is its ``file.role``
enum for code that needs it as a type or label set (the archiver). The kind names come
from the kind registry (``service.core.kinds.KIND_NAMES``).
``tests/unit/test_vocabulary.py`` keeps both equal to the schemas, so a role added
there fails the suite until it is added here.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

FileRole = Literal[
    "audio", "cover", "wav", "video", "image",
    "vocal", "instrumental", "backing_vocals", "drums", "bass", "guitar", "keyboard",
    "percussion", "strings", "synth", "fx", "brass", "woodwinds", "origin",
]
FILE_ROLES: Final[tuple[FileRole, ...]] = get_args(FileRole)
#: The vocal-separation stems (every role after ``image``).
STEM_ROLES: Final[tuple[FileRole, ...]] = FILE_ROLES[5:]
