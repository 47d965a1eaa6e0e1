"""The bench report's open-loop table: every step of every contender, not only half load."""

from __future__ import annotations

import math
from typing import Any

from tests.bench.interleave import median_of, median_ratio, rate
from tests.bench.phases import ratios
from tests.bench.report import render_consumers, render_in_turns, render_steps, render_table
from tests.bench.stats import median_run, rate_since_first


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


def consumer_run(rate: float, cpu_us: float | None = None) -> dict[str, Any]:
    run: dict[str, Any] = {"records": 1000, "elapsed_s": 1000 / rate, "rate": rate}
    if cpu_us is not None:
        run["cpu_us_per_record"] = cpu_us
    return run


def test_the_raw_consumer_is_the_median_of_its_runs_with_every_rate_kept() -> None:
    runs = [consumer_run(90_000, 10), consumer_run(40_000, 20), consumer_run(60_000, 15)]

    chosen = median_run(runs)

    assert chosen["rate"] == 60_000
    assert chosen["cpu_us_per_record"] == 15  # the median run's own CPU, not a mix
    assert chosen["run_rates"] == [90_000, 40_000, 60_000]
    assert median_run(runs[:2])["rate"] == 40_000  # an even count: the lower middle


def test_cpu_per_record_counts_the_records_after_the_first_observation() -> None:
    result = rate_since_first(1000, (10.0, 200), 12.0, cpu_s=0.4)

    assert result["rate"] == 400
    assert result["cpu_us_per_record"] == 500  # 0.4 s over the 800 records in the window
    assert "cpu_us_per_record" not in rate_since_first(1000, (10.0, 200), 12.0)
    assert rate_since_first(0, None, 12.0, cpu_s=0.4)["rate"] == 0.0


def test_ratios_by_rate_and_by_cpu_against_a_baseline() -> None:
    baseline = consumer_run(50_000, 20)

    assert ratios(consumer_run(10_000, 80), baseline, "raw") == {
        "ratio_to_raw": 0.2, "cpu_ratio_to_raw": 0.25}
    # A baseline without CPU (an older contender): the rate's ratio only.
    assert ratios(consumer_run(10_000, 80), consumer_run(50_000), "raw") == {"ratio_to_raw": 0.2}


def test_the_consumers_line_gives_rates_cpu_per_record_and_both_ratios() -> None:
    raw = median_run([consumer_run(50_000, 20), consumer_run(60_000, 16),
                      consumer_run(40_000, 25)])
    metrics = consumer_run(10_000, 80) | ratios(consumer_run(10_000, 80), raw, "raw")
    plain = consumer_run(200, 4000)
    archiver = consumer_run(80, 12_000) | ratios(consumer_run(80, 12_000), raw, "raw") | ratios(
        consumer_run(80, 12_000), plain, "plain")
    reread = consumer_run(300) | ratios(consumer_run(300), raw, "raw")

    line = render_consumers({"events": 1000, "raw": raw, "metrics": metrics,
                             "archiver": archiver, "plain_archiver": plain,
                             "archiver_reread": reread})

    assert "raw aiokafka 50,000/s (median of 3 runs: 50,000, 60,000, 40,000/s), 20 µs CPU" in line
    metrics_part = "metrics consumer 10,000/s, 80 µs CPU per record (0.20 by rate, 0.25 by CPU"
    assert f"{metrics_part} of raw)" in line
    plain_part = "0.40 by rate, 0.33 by CPU of the same I/O done plainly: 200/s, 4,000 µs CPU"
    assert f"(0.00 of raw; {plain_part} per record)" in line
    assert "every object already stored, 300/s (0.01 of raw)" in line


def test_the_in_turns_line_gives_medians_and_the_gateway_over_fastapi() -> None:
    def figures(label: str, rate: float, cpu: float) -> dict[str, Any]:
        return {"label": label, "ok_rate": rate, "cpu_us_per_2xx": cpu, "rates": [rate],
                "latency_ms": {"p50": 1.5, "p99": 12.25, "p99.9": 150.0}}

    line = render_in_turns({
        "rounds": 5, "turn_s": 8.0,
        "contenders": {"ceiling": figures("the ceiling", 11_000, 90),
                       "gateway": figures("the gateway", 2_000, 450),
                       "fastapi": figures("FastAPI", 1_500, 600)},
        "gateway_over_fastapi": {"rate": 1.3333, "cpu": 0.75}})

    assert line.startswith("in turns (each started once, then 5 rounds of 8 s closed loop")
    assert "the gateway 2,000/s, 450 µs CPU per 2xx, p50 1.50 / p99 12.25 / p99.9 150 ms" in line
    assert line.endswith("over FastAPI within a round (median): rate 1.33, CPU per answer 0.75")


def test_ratios_in_turns_are_taken_within_each_round_then_the_median() -> None:
    gateway = [{"ok_rate": 100.0}, {"ok_rate": 300.0}, {"ok_rate": 200.0}]
    fastapi = [{"ok_rate": 50.0}, {"ok_rate": 300.0}, {"ok_rate": 400.0}]

    # Per round 2.0, 1.0, 0.5: the median is 1.0, not 200 / 300 of the medians.
    assert median_ratio(gateway, fastapi, rate) == 1.0
    assert median_of(gateway, rate) == 200.0
    # A round where the baseline answered nothing is NaN, not a ZeroDivisionError.
    assert math.isnan(median_ratio([{"ok_rate": 1.0}], [{"ok_rate": 0.0}], rate))
