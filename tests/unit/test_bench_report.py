"""The bench report's open-loop table: every step of every contender, not only half load."""

from __future__ import annotations

from typing import Any

from tests.bench.report import render_steps, render_table


def step(fraction: float, rate: float, p99: float, p999: float,
         served: float | None = None) -> dict[str, Any]:
    return {"fraction": fraction, "offered_rate": rate,
            "rate": rate if served is None else served,
            "latency_ms": {"p50": 1.0, "p99": p99, "p99.9": p999}}


def contender(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "label": f"the {name}", "peak_rss_mib": 40.0, "open": steps,
            "closed": {"ok_rate": 1000.0, "cpu_us_per_2xx": 100.0, "non_2xx": 0, "errors": 0,
                       "latency_ms": {"p50": 1.0, "p99": 2.0, "p99.9": 3.0}}}


def test_every_step_of_every_contender_is_a_cell_with_its_offered_rate() -> None:
    rows = [
        contender("ceiling", [step(0.25, 2500, 2.5, 5.0), step(0.5, 4999.9, 2.9, 6.0, 4990),
                              step(0.9, 9000, 1361.2, 1366.0, 8123)]),
        contender("gateway", [step(0.25, 470, 6.59, 11.59), step(0.5, 934, 5.6, 11.3)]),
    ]

    table = render_steps(rows)

    assert table is not None
    header, _, ceiling, gateway = table.splitlines()
    assert header.count("of its maximum") == 3  # 25, 50 and 90 %: the union of the steps
    # Served within 1 % of the rate offered: the offered rate alone; else both.
    assert ceiling == ("| the ceiling | 2.50 / 5.00 (2,500/s) | 2.90 / 6.00 (5,000/s) "
                       "| 1,361 / 1,366 (8,123 of 9,000/s) |")
    assert gateway.endswith("| 5.60 / 11.30 (934/s) | - |")  # no 90 % step: a dash


def test_a_run_with_only_the_half_load_step_has_no_steps_table() -> None:
    report = {"contenders": [contender("ceiling", [step(0.5, 5000, 2.9, 6.0)])]}

    assert render_steps(report["contenders"]) is None
    assert "of its maximum" not in render_table(report)
