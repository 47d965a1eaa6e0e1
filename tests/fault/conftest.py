"""Prints the fault suite's table in the test log (pytest runs without -s)."""

from __future__ import annotations

import pytest

from tests.harness.fault_report import ROWS_KEY, render


def pytest_configure(config: pytest.Config) -> None:
    config.stash[ROWS_KEY] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    rows = config.stash.get(ROWS_KEY, [])
    if rows:
        terminalreporter.section("fault suite: every 2xx answer against the topic")
        for line in render(rows):
            terminalreporter.write_line(line)
