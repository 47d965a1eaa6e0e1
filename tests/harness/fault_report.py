"""The fault suite's result table: one row per scenario, printed at the end of the run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.harness.load_generator import Verdict

ROWS_KEY = pytest.StashKey[list["Row"]]()
HEADER = ("scenario", "sent", "2xx", "spooled", "503", "no answer", "lost", "wrong content",
          "duplicates", "slowest answer", "peak RSS", "result")


@dataclass(frozen=True)
class Row:
    scenario: str
    verdict: Verdict
    peak_rss_mib: float
    passed: bool
    note: str = ""

    def cells(self) -> tuple[str, ...]:
        v = self.verdict
        return (self.scenario, str(v.sent), str(v.acknowledged), str(v.spooled),
                str(v.statuses.get("503", 0)), str(v.statuses.get("none", 0)),
                str(len(v.lost)), str(len(v.mismatched)), str(v.duplicates),
                f"{v.max_latency:.2f} s", f"{self.peak_rss_mib:.0f} MiB",
                "pass" if self.passed else "FAIL")


def render(rows: list[Row]) -> list[str]:
    table = [HEADER, *(row.cells() for row in rows)]
    lines = ["| " + " | ".join(cells) + " |" for cells in table]
    lines.insert(1, "|" + "|".join(" --- " for _ in HEADER) + "|")
    lines += [f"* {row.scenario}: {row.note}" for row in rows if row.note]
    return lines
