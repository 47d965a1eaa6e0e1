"""Where the repository and the schemas' examples are, for tests that read files."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
#: One directory per schema, holding that schema's valid examples (a test validates each).
EXAMPLES: Final = REPO / "tests" / "examples"
