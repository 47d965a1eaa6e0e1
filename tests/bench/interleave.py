"""A/B: gateways from different source trees under the same load, in alternating short runs.

    python -m tests.bench.interleave [--rounds 6] [--seconds 8] [--bootstrap HOST:PORT] TREE...

On a shared machine the load from other work drifts by a factor of several within minutes,
so two figures taken minutes apart say little (CPU time per answer, also printed, moves
much less). Here every gateway (and the bare aiohttp
ceiling) is started once, pinned to core 0, and they take turns: a short closed-loop run
each, round after round. Each gateway's figure is the median of its rounds, and the
ratios are taken within a round before the median.

A TREE is ``.`` (this worktree) or a git revision (``HEAD~3``, a branch, a commit), whose
``service/`` and ``schemas/`` are exported with ``git archive`` into ``.cache/bench/trees``;
every gateway runs on the bench's interpreter (``lineup.service_python``) and production
defaults, unless the TREE names settings to change after a colon
(``.:KAFKA_COMPRESSION_TYPE=zstd,LINGER=1``): the same tree can be compared with itself
under other settings.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

from tests.bench import tools
from tests.bench.lineup import CEILING, FULL, HTTP_CONTENDERS, Context, Launch, launch_gateway
from tests.bench.load import closed_loop, measured_closed_loop, prepare_tools
from tests.bench.procs import Pinned

TREES = tools.CACHE / "trees"


def source_tree(name: str) -> Path:
    """``.`` → the worktree; otherwise the revision's service/ and schemas/ (exported once)."""
    if name == ".":
        return tools.REPO
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{name}^{{commit}}"],
                            cwd=tools.REPO, capture_output=True, text=True, check=True)
    target = TREES / commit.stdout.strip()
    if not (target / "service").is_dir():
        archive = subprocess.run(["git", "archive", "--format=tar", commit.stdout.strip(),
                                  "service", "schemas"], cwd=tools.REPO,
                                 capture_output=True, check=True)
        TREES.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=TREES))
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(partial, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def take_turns(ctx: Context, launches: dict[str, Launch], rounds: int,
               seconds: float) -> dict[str, list[dict[str, Any]]]:
    """Start every launch once, pinned to core 0, and warm each up; then ``rounds`` rounds
    in which each takes a closed-loop run of ``seconds`` in turn. Every run's result
    (``measured_closed_loop``), by name, in round order."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in launches}
    with contextlib.ExitStack() as stack:
        running = {}
        for index, (name, launch) in enumerate(launches.items()):
            proc = stack.enter_context(Pinned(f"turns-{index}", launch.argv, env=launch.env,
                                              log_dir=ctx.logs, cwd=launch.cwd))
            proc.wait_until(launch.ready)
            closed_loop(ctx.tools, launch.url, ctx.settings.warmup_s)
            running[name] = proc
        for number in range(rounds):
            for name, launch in launches.items():
                results[name].append(
                    measured_closed_loop(ctx.tools, running[name], launch.url, seconds))
                running[name].alive()
            print(f"[interleave] round {number + 1}: " + ", ".join(
                f"{name} {runs[-1]['ok_rate']:,.0f}/s" for name, runs in results.items()),
                file=sys.stderr, flush=True)
    return results


# Figures of one closed-loop run (``measured_closed_loop``).
Figure = Callable[[dict[str, Any]], float]


def rate(run: dict[str, Any]) -> float:
    return float(run["ok_rate"])


def cpu(run: dict[str, Any]) -> float:
    return float(run["cpu_us_per_2xx"])


def median_of(runs: list[dict[str, Any]], figure: Figure) -> float:
    """The median of ``figure`` over the rounds."""
    return statistics.median(figure(run) for run in runs)


def median_ratio(runs: list[dict[str, Any]], baseline: list[dict[str, Any]],
                 figure: Figure) -> float:
    """``figure`` over the baseline's in the same round, the median over the rounds (a
    round taken as a whole, so a drift of the machine between rounds cancels out); NaN
    for a round where the baseline's figure is zero (it answered nothing)."""
    return statistics.median(figure(run) / (figure(base) or math.nan)
                             for run, base in zip(runs, baseline, strict=True))


def run(trees: list[str], rounds: int, seconds: float, bootstrap: str,
        out: Path) -> dict[str, Any]:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(bootstrap=bootstrap, out=out, logs=logs, tools=prepare_tools(),
                  settings=FULL)
    launches = {CEILING: next(c for c in HTTP_CONTENDERS if c.name == CEILING).launch(ctx)}
    for tree in trees:
        source, _, settings = tree.partition(":")
        overrides = dict(item.split("=", 1) for item in settings.split(",") if item)
        launches[tree] = replace(launch_gateway(ctx, **overrides), cwd=source_tree(source))
    runs = take_turns(ctx, launches, rounds, seconds)
    first = trees[0]
    return {
        name: {
            "rates": [rate(run) for run in results],
            "median": median_of(results, rate),
            "ratio_to_ceiling": median_ratio(results, runs[CEILING], rate),
            "ratio_to_first": median_ratio(results, runs[first], rate),
            "cpu_us_per_2xx": median_of(results, cpu),
        }
        for name, results in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+",
                        help="'.' or git revisions, each optionally ':NAME=VALUE,...'")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--bootstrap", help="use this running Kafka broker (loopback)")
    parser.add_argument("--out", type=Path, default=tools.REPO / ".bench" / "interleave")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap
        if bootstrap is None:
            from tests.bench.harness import start_broker

            bootstrap = start_broker(stack)
        results = run(args.trees, args.rounds, args.seconds, bootstrap, args.out)
    print("| gateway source | median 2xx/s | ratio to ceiling | ratio to first "
          "| CPU µs per 2xx |")
    print("|---|---|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['median']:,.0f} | {figures['ratio_to_ceiling']:.3f} "
              f"| {figures['ratio_to_first']:.3f} | {figures['cpu_us_per_2xx']:,.0f} |")


if __name__ == "__main__":
    main()
