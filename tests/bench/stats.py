"""Summaries shared by the harness and the Python contenders (same keys as the Go loadgen)."""

from __future__ import annotations

import math
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (the loadgen's definition); NaN for no values."""
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[rank]


def summarize(
    latencies_ms: list[float], *, mode: str, offered_rate: float, connections: int,
    elapsed: float, errors: int = 0, non_2xx: int = 0, dropped: int = 0,
) -> dict[str, Any]:
    values = sorted(latencies_ms)
    return {
        "mode": mode, "offered_rate": offered_rate, "connections": connections,
        "duration_s": elapsed, "sent": len(values) + errors + dropped,
        "completed": len(values), "non_2xx": non_2xx, "errors": errors, "dropped": dropped,
        "rate": len(values) / elapsed if elapsed > 0 else 0.0,
        "ok_rate": (len(values) - non_2xx) / elapsed if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "p99.9": percentile(values, 99.9),
            "max": values[-1] if values else math.nan,
            "mean": sum(values) / len(values) if values else math.nan,
        },
    }


def rate_since_first(total: int, first: tuple[float, int] | None, finished: float,
                     *, cpu_s: float | None = None) -> dict[str, Any]:
    """Records per second from the first observation ``(time, count)`` to ``finished``.

    ``cpu_s``: the consumer's CPU time over the same window, which gives its CPU per
    record: steadier than the rate on a shared machine, where a sub-second run's rate
    moves by a factor of two."""
    if first is None or finished <= first[0]:
        return {"records": total, "elapsed_s": 0.0, "rate": 0.0}
    elapsed = finished - first[0]
    counted = total - first[1]
    result: dict[str, Any] = {"records": total, "elapsed_s": elapsed, "rate": counted / elapsed}
    if cpu_s is not None and counted > 0:
        result |= {"cpu_s": cpu_s, "cpu_us_per_record": cpu_s / counted * 1e6}
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle of an even number), with every
    run's rate beside it."""
    ordered = sorted(runs, key=lambda run: float(run["rate"]))
    return ordered[(len(ordered) - 1) // 2] | {"run_rates": [run["rate"] for run in runs]}
