"""``make bench``: the gateway beside its contenders, on one broker, in one run.

    python -m tests.bench.harness [--smoke] [--bootstrap HOST:PORT] [--out DIR]
                                  [--only NAME,...] [--skip memory,profile,consumers]

Every contender runs pinned to core 0 (``taskset -c 0``) and the load generator to core 1;
the Kafka broker (the test harness's Apache Kafka, started here unless ``--bootstrap``
names a running one) is not pinned and shares both cores. Every HTTP contender gets the
same 1.4 KB two-track ``complete`` callback (``complete-two-tracks.json``):

* closed loop: ``wrk`` with 32 connections for the maximum (the Go ``loadgen`` in closed
  mode when wrk is not installed);
* open loop: ``loadgen`` at a constant arrival rate, a few steps up to the contender's
  maximum, latency measured from each request's intended send time.

Then: the gateway's RSS at half load over minutes (``memory``), a py-spy profile of the
gateway under load (``profile``), and the metrics consumer and the archiver against a raw
aiokafka consumer on the same records (``consumers``). The table goes to stdout; the
results to ``<out>/results.json``, the chart of latency percentiles against offered load
to ``<out>/latency.png``, the profile to ``<out>/profile-gateway.txt``.

The gateway runs as a user runs it: ``python -m service gateway`` with production
defaults (INFO logs, URL-token verification, acks=all, idempotence, default compression,
default rate limits), topics made by ``python -m service topics ensure``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from tests.bench.lineup import (
    ALL_NAMES,
    FULL,
    GATEWAY,
    HTTP_CONTENDERS,
    RAW_PRODUCER,
    SMOKE,
    Context,
    Settings,
    measure_http,
    measure_raw_producer,
    service_python,
)
from tests.bench.load import BODY_FILE, CONNECTIONS, prepare_tools
from tests.bench.phases import (
    IN_TURNS,
    measure_consumers,
    measure_in_turns,
    measure_memory,
    measure_profile,
)
from tests.bench.procs import LOADGEN_CPU, SERVER_CPU, BenchError, Pinned
from tests.bench.report import PHASES, write_outputs
from tests.bench.tools import REPO

DEFAULT_OUT: Final = REPO / ".bench"


def start_broker(stack: contextlib.ExitStack) -> str:
    """The test harness's Kafka broker, stopped with ``stack``; returns its bootstrap."""
    from tests.harness.kafka_broker import DEFAULT_JVM_OPTIONS, KafkaBroker

    # Full JIT for the broker: the harness's C1-only start-up setting is for tests.
    options = tuple(o for o in DEFAULT_JVM_OPTIONS if "TieredStopAtLevel" not in o)
    return stack.enter_context(KafkaBroker(jvm_options=options)).bootstrap_servers


def timed(name: str, label: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; a failure becomes an ``error`` entry instead of ending the run."""
    started = time.monotonic()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        result = measure()
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        result = {"name": name, "label": label, "error": str(exc)}
    result["seconds"] = time.monotonic() - started
    print(f"[bench] {name}: {result['seconds']:.1f} s"
          f"{' (failed)' if 'error' in result else ''}", file=sys.stderr, flush=True)
    return result


def run(settings: Settings, bootstrap: str, out: Path, only: set[str],
        skip: set[str]) -> dict[str, Any]:
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    started = time.monotonic()
    ctx = Context(bootstrap=bootstrap, out=out, logs=logs, tools=prepare_tools(),
                  settings=settings)
    print(f"[bench] tools ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    load_before = os.getloadavg()
    closed_by = "wrk" if ctx.tools.wrk else "loadgen (wrk is not installed)"
    report: dict[str, Any] = {
        "mode": "smoke" if settings.smoke else "full", "settings": settings.__dict__,
        "cores": os.cpu_count(), "server_cpu": SERVER_CPU, "loadgen_cpu": LOADGEN_CPU,
        "connections": CONNECTIONS, "body_bytes": BODY_FILE.stat().st_size,
        "closed_loop_generator": closed_by, "load_average_before": load_before,
        "service_dependencies": ("the image's (deploy/requirements.lock)"
                                 if service_python() != sys.executable
                                 else "the development virtualenv's"),
        "contenders": [],
    }
    def gateway_phases(proc: Pinned, url: str, maximum: float) -> None:
        """Memory and profile on the gateway contender's process, after its load steps."""
        if "memory" not in skip:
            report["memory"] = timed("memory", "memory",
                                     lambda: measure_memory(ctx, proc, url, maximum))
        if "profile" not in skip:
            report["profile"] = timed("profile", "profile",
                                      lambda: measure_profile(ctx, proc, url))

    for contender in HTTP_CONTENDERS:
        if contender.name not in only:
            continue
        during = gateway_phases if contender.name == GATEWAY else None
        report["contenders"].append(timed(contender.name, contender.label,
                                          functools.partial(measure_http, ctx, contender, during)))
    if RAW_PRODUCER in only:
        report["contenders"].append(timed(RAW_PRODUCER, "raw aiokafka producer",
                                          lambda: measure_raw_producer(ctx)))
    if "in_turns" not in skip and set(IN_TURNS) <= only:
        report["in_turns"] = timed("in_turns", "in turns", lambda: measure_in_turns(ctx))
    if "consumers" not in skip:
        report["consumers"] = timed("consumers", "consumers", lambda: measure_consumers(ctx))
    report["load_average_after"] = os.getloadavg()
    report["title"] = (
        f"make bench ({report['mode']}): {report['cores']} cores, contenders on core "
        f"{SERVER_CPU}, load generator on core {LOADGEN_CPU}, Kafka broker unpinned; "
        f"closed loop by {closed_by}, {CONNECTIONS} connections, "
        f"{report['body_bytes']} B callback; service processes on "
        f"{report['service_dependencies']} dependencies; load average "
        f"{load_before[0]:.2f} before, {report['load_average_after'][0]:.2f} after")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        default=os.environ.get("BENCH_SMOKE") == "1",
                        help="a few seconds per contender (CI); also BENCH_SMOKE=1")
    parser.add_argument("--bootstrap", help="use this running Kafka broker (loopback)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", default=",".join(ALL_NAMES),
                        help=f"contenders, comma-separated (default: {','.join(ALL_NAMES)})")
    parser.add_argument("--skip", default="", help=f"phases to skip: {','.join(PHASES)}")
    parser.add_argument("--memory-minutes", type=float,
                        help="length of the half-load memory run (full default: 10)")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.memory_minutes:
        settings = replace(settings, memory_s=args.memory_minutes * 60,
                           memory_early_s=min(settings.memory_early_s,
                                              args.memory_minutes * 6))
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        report = run(settings, args.bootstrap or start_broker(stack), args.out, only, skip)
    print(write_outputs(report, args.out), flush=True)
    failed = [row["name"] for row in report["contenders"] if "error" in row]
    failed += [phase for phase in PHASES if "error" in report.get(phase, {})]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
