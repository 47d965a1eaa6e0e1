"""The load generators, pinned to ``LOADGEN_CPU``: wrk (closed loop) and loadgen (open loop).

Both POST ``complete-two-tracks.json`` (1.4 KB, two tracks) over 32 keep-alive connections,
with its task id replaced by a per-request counter so records spread over partitions as
real traffic does. Both return the same summary shape (see ``stats.summarize``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from tests.bench import tools
from tests.bench.procs import LOADGEN_CPU, BenchError, Pinned, pinned

BODY_FILE: Final = tools.BENCH_DIR / "complete-two-tracks.json"
WRK_SCRIPT: Final = tools.BENCH_DIR / "post_body.lua"
CONNECTIONS: Final = 32


@dataclass
class Tools:
    loadgen: Path
    wrk: str | None
    express: Path | None
    express_error: str | None = None


def varied_task_id() -> str:
    """The body's task id: both load generators replace it with a per-request counter."""
    task_id: str = orjson.loads(BODY_FILE.read_bytes())["data"]["task_id"]
    return task_id


def run_loadgen(tool: Tools, url: str, seconds: float, rate: float = 0.0) -> dict[str, Any]:
    argv = [str(tool.loadgen), "-url", url, "-body", str(BODY_FILE), "-rate", f"{rate:.3f}",
            "-duration", f"{seconds}s", "-connections", str(CONNECTIONS),
            "-vary", varied_task_id()]
    done = subprocess.run(pinned(LOADGEN_CPU, argv), capture_output=True, text=True,
                          check=False, timeout=seconds + 120)
    if done.returncode != 0:
        raise BenchError(f"loadgen failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["generator"] = "loadgen"
    return result


def run_wrk(wrk: str, url: str, seconds: float) -> dict[str, Any]:
    argv = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
            "-s", str(WRK_SCRIPT), url]
    done = subprocess.run(pinned(LOADGEN_CPU, argv), capture_output=True, text=True,
                          check=False, timeout=seconds + 120,
                          env={**os.environ, "WRK_BODY_FILE": str(BODY_FILE),
                               "WRK_VARY": varied_task_id()})
    line = next((raw for raw in done.stdout.splitlines() if raw.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout[-1500:]}"
                         f"{done.stderr[-1500:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    elapsed = raw["duration_us"] / 1e6
    answered = raw["requests"]
    return {
        "mode": "closed", "offered_rate": 0.0, "connections": CONNECTIONS,
        "duration_s": elapsed, "sent": answered, "completed": answered,
        "non_2xx": raw["non_2xx"], "dropped": 0,
        "errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
        + raw["timeouts"],
        "rate": answered / elapsed, "ok_rate": (answered - raw["non_2xx"]) / elapsed,
        "latency_ms": {key: raw[f"{key}_us"] / 1000
                       for key in ("p50", "p90", "p99", "p999", "max", "mean")},
        "generator": "wrk",
    }


def closed_loop(tool: Tools, url: str, seconds: float) -> dict[str, Any]:
    if tool.wrk is None:
        return run_loadgen(tool, url, seconds)
    result = run_wrk(tool.wrk, url, seconds)
    result["latency_ms"]["p99.9"] = result["latency_ms"].pop("p999")
    return result



def measured_closed_loop(tool: Tools, proc: Pinned, url: str, seconds: float,
                         ) -> dict[str, Any]:
    """:func:`closed_loop` plus ``cpu_us_per_2xx``, the server's own CPU time (every
    thread) per 2xx answer: unlike the rates, barely moved by other load on the machine."""
    before = proc.cpu_seconds()
    result = closed_loop(tool, url, seconds)
    answered = result["ok_rate"] * result["duration_s"]
    result["cpu_us_per_2xx"] = ((proc.cpu_seconds() - before) / answered * 1e6
                                if answered else float("nan"))
    return result


def prepare_tools() -> Tools:
    express: Path | None = None
    express_error: str | None = None
    try:
        express = tools.express_app()
    except tools.ToolError as exc:
        express_error = str(exc)
    return Tools(loadgen=tools.loadgen(), wrk=tools.wrk(), express=express,
                 express_error=express_error)
