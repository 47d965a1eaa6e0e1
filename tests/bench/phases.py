"""The phases after the contenders: memory at half load, a profile, the consumers' rates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from service.config.archiver import ArchiverConfig
from tests.bench.interleave import Figure, cpu, median_of, median_ratio, rate, take_turns
from tests.bench.lineup import (
    CEILING,
    FASTAPI,
    GATEWAY,
    HALF,
    HTTP_CONTENDERS,
    Context,
    launch_gateway,
    service_python,
    unique,
)
from tests.bench.load import BODY_FILE, CONNECTIONS, closed_loop, run_loadgen
from tests.bench.procs import (
    LOADGEN_CPU,
    READY_TIMEOUT_S,
    SERVER_CPU,
    BenchError,
    Pinned,
    child_env,
    http_status,
    pinned,
)
from tests.bench.stats import median_run, rate_since_first
from tests.bench.tools import REPO
from tests.harness.loopback import free_port

ARCHIVE_CONCURRENCY = ArchiverConfig.concurrency  # the archiver's default, for its baseline
RAW_CONSUMER_RUNS = 3


@contextlib.contextmanager
def running_gateway(ctx: Context, name: str, **overrides: str) -> Iterator[tuple[Pinned, str]]:
    launch = launch_gateway(ctx, **overrides)
    with Pinned(name, launch.argv, env=launch.env, log_dir=ctx.logs) as proc:
        proc.wait_until(launch.ready)
        yield proc, launch.url


def measure_memory(ctx: Context, proc: Pinned, url: str, maximum: float) -> dict[str, Any]:
    """RSS of the gateway under an open-loop half load, early in the run and at its end."""
    settings = ctx.settings
    rate = HALF * maximum
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.wait(settings.memory_sample_s):
            samples.append((time.monotonic() - started, proc.rss_mib()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        load = run_loadgen(ctx.tools, url, settings.memory_s, rate)
    finally:
        stop.set()
        sampler.join()
    proc.alive()
    if not samples:
        raise BenchError("no RSS sample was taken")
    early = min(samples, key=lambda s: abs(s[0] - settings.memory_early_s))
    end = samples[-1]
    return {"rate": rate, "load": load, "samples": samples,
            "early_at_s": early[0], "early_rss_mib": early[1],
            "end_at_s": end[0], "end_rss_mib": end[1], "growth": end[1] / early[1] - 1}


def collapsed_stacks(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one ``root;...;leaf count`` line per distinct stack."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            stacks.append(([frame.strip() for frame in stack.split(";")], int(count_text)))
    return stacks


def write_speedscope(stacks: list[tuple[list[str], int]], path: Path, name: str) -> None:
    """The same samples in speedscope's file format (open it in speedscope to browse)."""
    index: dict[str, int] = {}
    samples = [[index.setdefault(frame, len(index)) for frame in frames]
               for frames, _ in stacks]
    weights = [count for _, count in stacks]
    document = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "exporter": "tests/bench/phases.py", "name": name,
        "shared": {"frames": [{"name": frame} for frame in index]},
        "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                      "endValue": sum(weights), "samples": samples, "weights": weights}],
    }
    path.write_bytes(orjson.dumps(document))


def summarize_profile(stacks: list[tuple[list[str], int]], top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares of the samples, by function and by package."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    packages_inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        total += count
        self_counts[frames[-1]] += count
        packages[package_of(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
        for package in {package_of(frame) for frame in frames}:
            packages_inclusive[package] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, count / total) for name, count in counter.most_common(top)]

    return {"samples": total, "self": shares(self_counts), "inclusive": shares(inclusive),
            "packages": shares(packages), "packages_inclusive": shares(packages_inclusive)}


def package_of(frame: str) -> str:
    """``func (path/to/file.py:12)`` → the package or service module it belongs to."""
    location = frame.rpartition("(")[2].rstrip(")").rpartition(":")[0]
    if location.startswith("<") or not location:
        return location or "?"
    # py-spy shortens paths to the import root: "aiohttp/web_protocol.py", "uuid.py".
    parts = Path(location).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    depth = 3 if parts[0] == "service" else 1  # our own code: by module
    return "/".join(parts[:depth]).removesuffix(".py")


def measure_profile(ctx: Context, proc: Pinned, url: str) -> dict[str, Any]:
    """py-spy (100 Hz, raw collapsed stacks) of the gateway under the closed-loop load."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
        "py-spy")
    if py_spy is None:
        raise BenchError("py-spy is not installed (pip install -e '.[bench]')")
    settings = ctx.settings
    output = ctx.out / "profile-gateway.txt"
    output.unlink(missing_ok=True)
    loader = threading.Thread(
        target=closed_loop, args=(ctx.tools, url, settings.profile_s + 2), daemon=True)
    loader.start()
    time.sleep(1)
    record = [py_spy, "record", "--pid", str(proc.pid), "--duration",
              str(max(1, round(settings.profile_s))), "--rate", "100", "--format", "raw",
              "--output", str(output)]
    done = subprocess.run(pinned(LOADGEN_CPU, record), capture_output=True, text=True,
                          check=False, timeout=settings.profile_s + 60)
    if done.returncode != 0 or not output.is_file():  # ptrace refused: sample without it
        done = subprocess.run(pinned(LOADGEN_CPU, [*record, "--nonblocking"]),
                              capture_output=True, text=True, check=False,
                              timeout=settings.profile_s + 60)
    loader.join()
    proc.alive()
    if done.returncode != 0 or not output.is_file():
        raise BenchError(f"py-spy failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
    stacks = collapsed_stacks(output)
    speedscope = output.with_suffix(".speedscope.json")
    write_speedscope(stacks, speedscope, "gateway under closed-loop load")
    return {"file": str(output), "speedscope": str(speedscope), **summarize_profile(stacks)}


IN_TURNS: Final = (CEILING, GATEWAY, FASTAPI)


def measure_in_turns(ctx: Context) -> dict[str, Any]:
    """The gateway, FastAPI + pydantic and the ceiling, each started once and measured in
    turns (``take_turns``): the table's rows are minutes apart, and on a shared machine the
    same process's CPU per answer moved by a quarter between them. Medians over the
    rounds; the gateway's ratios to FastAPI are taken within each round, then the median."""
    settings = ctx.settings
    by_name = {contender.name: contender for contender in HTTP_CONTENDERS}
    runs = take_turns(ctx, {name: by_name[name].launch(ctx) for name in IN_TURNS},
                      settings.turn_rounds, settings.turn_s)

    def percentile(name: str) -> Figure:
        return lambda run: float(run["latency_ms"][name])

    return {
        "rounds": settings.turn_rounds, "turn_s": settings.turn_s,
        "contenders": {name: {
            "label": by_name[name].label, "ok_rate": median_of(runs[name], rate),
            "cpu_us_per_2xx": median_of(runs[name], cpu),
            "latency_ms": {p: median_of(runs[name], percentile(p))
                           for p in ("p50", "p99", "p99.9")},
            "rates": [rate(run) for run in runs[name]],
        } for name in IN_TURNS},
        "gateway_over_fastapi": {
            "rate": median_ratio(runs[GATEWAY], runs[FASTAPI], rate),
            "cpu": median_ratio(runs[GATEWAY], runs[FASTAPI], cpu)},
    }


def consumer_messages(admin_port: int, prefix: str) -> int | None:
    """The sum of ``<prefix>_messages_total`` on a process's /metrics (None: not up yet).

    Only that counter is asked for (``name[]``): polled every 50 ms, the whole registry
    cost the metrics consumer a fifth of its CPU (py-spy), which Prometheus scraping every
    15 s never would."""
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{admin_port}/metrics?name[]={prefix}_messages_total",
                timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return int(sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == f"{prefix}_messages_total"))


def time_consumer(proc: Pinned, admin_port: int, prefix: str, expected: int,
                  cap_s: float) -> dict[str, Any]:
    """Poll the consumer's message counter until ``expected`` or ``cap_s`` after the first."""
    proc.wait_until(lambda: consumer_messages(admin_port, prefix) is not None)
    count = 0
    # The time and the process's CPU seconds at the last poll that saw no record, and at
    # the start once one has: a consumer that finishes between two polls still gets a
    # rate (at worst one poll interval slower than it was).
    idle = (time.perf_counter(), proc.cpu_seconds())
    started: tuple[float, float] | None = None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and count < expected:
        proc.alive()
        count = consumer_messages(admin_port, prefix) or 0
        if started is None:
            if count:
                started = idle
                deadline = time.monotonic() + cap_s
            else:
                idle = (time.perf_counter(), proc.cpu_seconds())
        time.sleep(0.05)
    finished, cpu_now = time.perf_counter(), proc.cpu_seconds()
    first, cpu_s = ((started[0], 0), cpu_now - started[1]) if started else (None, None)
    return rate_since_first(count, first, finished, cpu_s=cpu_s) | {
        "peak_rss_mib": proc.peak_rss_mib()}


async def prefill(url: str, files_base: str, count: int) -> int:
    """POST ``count`` distinct callbacks whose tracks point at the loopback file server."""
    template = orjson.loads(BODY_FILE.read_bytes())
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    accepted = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            n = queue.get_nowait()
            task = f"bench{n:08d}{uuid.uuid4().hex[:8]}"
            template["data"]["task_id"] = task
            for index, track in enumerate(template["data"]["data"]):
                track_id = f"{task}-{index}"
                track["id"] = track_id
                track["audio_url"] = f"{files_base}/{task}/{track_id}.mp3"
                track["image_url"] = f"{files_base}/{task}/{track_id}.jpeg"
            async with session.post(url, data=orjson.dumps(template),
                                    headers={"Content-Type": "application/json"}) as answer:
                accepted += answer.status == 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONNECTIONS)))
    return accepted


def measure_consumers(ctx: Context) -> dict[str, Any]:
    """Raw aiokafka consumer vs the metrics consumer vs the archiver on the same events."""
    settings = ctx.settings
    files_port = free_port()
    file_server = Pinned("file-server", [sys.executable, "-m",
                                         "tests.bench.contenders.file_server", str(files_port)],
                         env=child_env(), log_dir=ctx.logs, cpu=LOADGEN_CPU)
    with file_server:
        file_server.wait_until(
            lambda: http_status(f"http://127.0.0.1:{files_port}/x.mp3", None) == 200)
        # Filling the topic is not measured: no rate limit gets in the way.
        with running_gateway(ctx, "gateway-prefill", RATE_LIMIT_PER_SECOND="1000000",
                             RATE_LIMIT_BURST="1000000") as (gateway, url):
            events_topic = gateway.env["EVENTS_TOPIC"]
            accepted = asyncio.run(prefill(url, f"http://127.0.0.1:{files_port}",
                                           settings.consumer_events))
        if accepted == 0:
            raise BenchError("the gateway accepted none of the pre-fill callbacks")
        base_env = {key: gateway.env[key] for key in (
            "KAFKA_BOOTSTRAP_SERVERS", "EVENTS_TOPIC", "REJECTED_TOPIC", "ARCHIVED_TOPIC",
            "ARCHIVE_DLQ_TOPIC")}

        # The raw consumer reads them in a fraction of a second, so one run's rate moves by
        # a factor of two: the median of a few.
        results: dict[str, Any] = {"events": accepted, "raw": median_run([
            raw_consumer(ctx, events_topic, accepted) for _ in range(RAW_CONSUMER_RUNS)])}

        admin_port = free_port()
        metrics_env = child_env(**base_env, ADMIN_HOST="127.0.0.1", ADMIN_PORT=str(admin_port),
                                METRICS_GROUP_ID=unique("metrics"))
        with Pinned("metrics-consumer", [service_python(), "-m", "service", "metrics"],
                    env=metrics_env, log_dir=ctx.logs) as metrics:
            results["metrics"] = time_consumer(metrics, admin_port, "metrics", accepted,
                                               settings.consumer_cap_s)

        with tempfile.TemporaryDirectory(prefix="bench-plain-archive-") as archive:
            results["plain_archiver"] = plain_archiver(ctx, gateway.env, archive, accepted)
        with tempfile.TemporaryDirectory(prefix="bench-archive-") as archive:
            results["archiver"] = run_archiver(ctx, base_env, archive, "archiver", accepted)
            # The same topic again into the same store: every object is already there.
            results["archiver_reread"] = run_archiver(ctx, base_env, archive,
                                                      "archiver-reread", accepted)
    for name in ("metrics", "archiver", "archiver_reread"):
        results[name] |= ratios(results[name], results["raw"], "raw")
    results["archiver"] |= ratios(results["archiver"], results["plain_archiver"], "plain")
    return results


def ratios(result: dict[str, Any], baseline: dict[str, Any], name: str) -> dict[str, float]:
    """``ratio_to_<name>`` by rate and, where both have it, ``cpu_ratio_to_<name>``: the
    baseline's CPU per record over the result's (1.0: as cheap as the baseline)."""
    out = {f"ratio_to_{name}": result["rate"] / baseline["rate"] if baseline["rate"] else 0.0}
    if result.get("cpu_us_per_record") and baseline.get("cpu_us_per_record"):
        out[f"cpu_ratio_to_{name}"] = baseline["cpu_us_per_record"] / result["cpu_us_per_record"]
    return out


def raw_consumer(ctx: Context, topic: str, expected: int) -> dict[str, Any]:
    """One run of a raw aiokafka consumer (a fresh group) over ``expected`` records."""
    timeout = READY_TIMEOUT_S + ctx.settings.consumer_cap_s
    raw = subprocess.run(
        pinned(SERVER_CPU, [sys.executable, "-m", "tests.bench.contenders.raw_kafka",
                            "consume", ctx.bootstrap, topic, str(expected),
                            "--timeout", str(timeout)]),
        cwd=REPO, env=child_env(), capture_output=True, text=True, check=False,
        timeout=timeout + 30)
    if raw.returncode != 0:
        raise BenchError(f"raw consumer failed: {raw.stderr[-2000:]}")
    return dict(json.loads(raw.stdout.splitlines()[-1]))


def run_archiver(ctx: Context, base_env: dict[str, str], archive: str, name: str,
                 expected: int) -> dict[str, Any]:
    """``python -m service archiver`` in a new group, timed like the metrics consumer."""
    admin_port = free_port()
    archiver_env = child_env(
        **base_env, ADMIN_HOST="127.0.0.1", ADMIN_PORT=str(admin_port),
        ARCHIVER_GROUP_ID=unique("archiver"), ARCHIVE_ALLOW_LOOPBACK="true",
        ARCHIVE_STORAGE_URL=Path(archive).as_uri())
    with Pinned(name, [service_python(), "-m", "service", "archiver"],
                env=archiver_env, log_dir=ctx.logs) as archiver:
        return time_consumer(archiver, admin_port, "archiver", expected,
                             ctx.settings.consumer_cap_s)


def plain_archiver(ctx: Context, gateway_env: dict[str, str], archive: str,
                   expected: int) -> dict[str, Any]:
    """The archiver's downloads, writes and reports done plainly (its I/O baseline)."""
    cap = ctx.settings.consumer_cap_s
    done = subprocess.run(
        pinned(SERVER_CPU, [sys.executable, "-m", "tests.bench.contenders.plain_archiver",
                            ctx.bootstrap, gateway_env["EVENTS_TOPIC"],
                            gateway_env["ARCHIVED_TOPIC"], archive, str(expected),
                            "--concurrency", str(ARCHIVE_CONCURRENCY), "--timeout", str(cap)]),
        cwd=REPO, env=child_env(), capture_output=True, text=True, check=False,
        timeout=READY_TIMEOUT_S + cap + 30)
    if done.returncode != 0:
        raise BenchError(f"plain archiver failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.splitlines()[-1]))
