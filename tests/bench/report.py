"""The run's outputs: the table (stdout, README), results.json and the latency chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

import orjson

from tests.bench.lineup import CEILING, HALF

PHASES: Final = ("memory", "profile", "in_turns", "consumers")


def half_step(row: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in row.get("open", []) if s.get("fraction") == HALF), None)


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def render_table(report: dict[str, Any]) -> str:
    rows = report["contenders"]
    ceiling = next((r["closed"]["ok_rate"] for r in rows
                    if r["name"] == CEILING and "closed" in r), None)
    ceiling_cpu = next((r["closed"].get("cpu_us_per_2xx") for r in rows
                        if r["name"] == CEILING and "closed" in r), None)
    header = ("| contender | 2xx/s | ratio | CPU µs/2xx | CPU ratio | p50 ms | p99 ms "
              "| p99.9 ms | non-2xx | RSS MiB | ½-load p99 ms | ½-load p99.9 ms |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['label']} | failed: {row['error'].splitlines()[0][:80]} "
                         "| | | | | | | | | | |")
            continue
        closed = row["closed"]
        latency = closed["latency_ms"]
        ratio = f"{closed['ok_rate'] / ceiling:.2f}" if ceiling else "-"
        cpu = closed.get("cpu_us_per_2xx", float("nan"))
        cpu_ratio = (f"{ceiling_cpu / cpu:.2f}" if ceiling_cpu and cpu > 0 and not math.isnan(cpu)
                     else "-")
        half = half_step(row)
        half_latency = half["latency_ms"] if half else {}
        lines.append(
            f"| {row['label']} | {closed['ok_rate']:,.0f} | {ratio} | {_ms(cpu)} | {cpu_ratio} "
            f"| {_ms(latency['p50'])} "
            f"| {_ms(latency['p99'])} | {_ms(latency['p99.9'])} "
            f"| {closed['non_2xx'] + closed['errors']:,} | {row['peak_rss_mib']:.0f} "
            f"| {_ms(half_latency.get('p99'))} | {_ms(half_latency.get('p99.9'))} |")
    out = ["\n".join(lines)]
    steps = render_steps(rows)
    if steps:
        out.append(steps)
    memory = report.get("memory")
    if memory and "error" not in memory:
        load = memory["load"]["latency_ms"]
        out.append(
            f"gateway at half load ({memory['rate']:,.0f}/s offered, open loop, "
            f"{memory['load']['duration_s']:.0f} s): RSS {memory['early_rss_mib']:.1f} MiB at "
            f"{memory['early_at_s']:.0f} s, {memory['end_rss_mib']:.1f} MiB at "
            f"{memory['end_at_s']:.0f} s ({memory['growth']:+.1%}); p50 {_ms(load['p50'])} ms, "
            f"p99 {_ms(load['p99'])} ms, p99.9 {_ms(load['p99.9'])} ms, "
            f"non-2xx {memory['load']['non_2xx']}, dropped {memory['load']['dropped']}")
    in_turns = report.get("in_turns")
    if in_turns and "error" not in in_turns:
        out.append(render_in_turns(in_turns))
    consumers = report.get("consumers")
    if consumers and "error" not in consumers:
        out.append(render_consumers(consumers))
    profile = report.get("profile")
    if profile and "error" not in profile:
        top = ", ".join(f"{name} {share:.0%}" for name, share in profile["packages"][:8])
        out.append(f"gateway profile ({profile['samples']} samples, {profile['file']}): "
                   f"self time by package: {top}")
    for phase in PHASES:
        section = report.get(phase)
        if section and "error" in section:
            out.append(f"{phase}: failed: {section['error'][:300]}")
    return "\n\n".join(out)


def render_in_turns(section: dict[str, Any]) -> str:
    """The gateway, FastAPI and the ceiling measured in turns: medians, and the gateway's
    ratios to FastAPI within each round."""
    parts = []
    for figures in section["contenders"].values():
        latency = figures["latency_ms"]
        parts.append(f"{figures['label']} {figures['ok_rate']:,.0f}/s, "
                     f"{figures['cpu_us_per_2xx']:,.0f} µs CPU per 2xx, p50 "
                     f"{_ms(latency['p50'])} / p99 {_ms(latency['p99'])} / p99.9 "
                     f"{_ms(latency['p99.9'])} ms")
    ratio = section["gateway_over_fastapi"]
    return (f"in turns (each started once, then {section['rounds']} rounds of "
            f"{section['turn_s']:g} s closed loop each, one after the other; medians): "
            + "; ".join(parts)
            + f". The gateway over FastAPI within a round (median): rate "
              f"{ratio['rate']:.2f}, CPU per answer {ratio['cpu']:.2f}")


def render_consumers(consumers: dict[str, Any]) -> str:
    """The consumers' line: rates, CPU per record and both ratios to their baselines."""
    raw, metrics = consumers["raw"], consumers["metrics"]
    archiver, plain = consumers["archiver"], consumers["plain_archiver"]
    reread = consumers["archiver_reread"]
    runs = raw.get("run_rates", [])
    runs_text = (f" (median of {len(runs)} runs: "
                 f"{', '.join(f'{rate:,.0f}' for rate in runs)}/s)" if len(runs) > 1 else "")
    return (
        f"consumers on {consumers['events']:,} events (CPU per record is the process's own, "
        f"every thread): raw aiokafka {raw['rate']:,.0f}/s{runs_text}{_cpu(raw)}; "
        f"metrics consumer {metrics['rate']:,.0f}/s{_cpu(metrics)} "
        f"({_ratios(metrics, 'raw')} of raw); archiver (4 downloads + 4 archived records "
        f"per event, local file server) {archiver['rate']:,.0f}/s{_cpu(archiver)} "
        f"({archiver['ratio_to_raw']:.2f} of raw; {_ratios(archiver, 'plain')} of the same "
        f"I/O done plainly: {plain['rate']:,.0f}/s{_cpu(plain)}); archiver re-reading them, "
        f"every object already stored, {reread['rate']:,.0f}/s{_cpu(reread)} "
        f"({reread['ratio_to_raw']:.2f} of raw)")


def _cpu(result: dict[str, Any]) -> str:
    cost = result.get("cpu_us_per_record")
    return f", {cost:,.0f} µs CPU per record" if cost else ""


def _ratios(result: dict[str, Any], baseline: str) -> str:
    by_cpu = result.get(f"cpu_ratio_to_{baseline}")
    by_rate = f"{result[f'ratio_to_{baseline}']:.2f}"
    return f"{by_rate} by rate, {by_cpu:.2f} by CPU" if by_cpu else by_rate


def render_steps(rows: list[dict[str, Any]]) -> str | None:
    """The open loop at every step, not only at half load: p99 / p99.9 ms per contender
    at each fraction of its own maximum, with the rate offered, and the rate served where
    the contender fell behind it."""
    fractions = sorted({s["fraction"] for row in rows for s in row.get("open", [])})
    if len(fractions) < 2:  # the smoke run has the half-load step only: in the table
        return None
    header = ("| open loop, p99 / p99.9 ms | "
              + " | ".join(f"{fraction:.0%} of its maximum" for fraction in fractions) + " |")
    lines = [header, "|" + "---|" * (len(fractions) + 1)]
    for row in rows:
        by_fraction = {s["fraction"]: s for s in row.get("open", [])}
        if not by_fraction:
            continue
        cells = []
        for fraction in fractions:
            step = by_fraction.get(fraction)
            if step is None:
                cells.append("-")
                continue
            latency = step["latency_ms"]
            offered, served = step["offered_rate"], step.get("rate", step["offered_rate"])
            # Fell behind (served under 99 % of the rate offered): say how far.
            rate = (f"{served:,.0f} of {offered:,.0f}/s" if served < 0.99 * offered
                    else f"{offered:,.0f}/s")
            cells.append(f"{_ms(latency['p99'])} / {_ms(latency['p99.9'])} ({rate})")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 5), sharex=True)
    for row in report["contenders"]:
        steps = sorted(row.get("open", []), key=lambda s: s["offered_rate"])
        if not steps:
            continue
        offered = [s["offered_rate"] for s in steps]
        for axis, key in zip(axes, ("p50", "p99", "p99.9"), strict=True):
            axis.plot(offered, [s["latency_ms"][key] for s in steps], marker="o",
                      label=row["label"])
    for axis, key in zip(axes, ("p50", "p99", "p99.9"), strict=True):
        axis.set_title(f"{key} latency (open loop, from intended send time)")
        axis.set_xlabel("offered load (requests/s)")
        axis.set_ylabel("ms")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.grid(visible=True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(report["title"], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(report: dict[str, Any], out: Path) -> str:
    """Write results.json and latency.png under ``out``; return the text to print."""
    (out / "results.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    render_chart(report, out / "latency.png")
    return (f"{report['title']}\n\n{render_table(report)}\n\n"
            f"results: {out}/results.json, chart: {out}/latency.png")
