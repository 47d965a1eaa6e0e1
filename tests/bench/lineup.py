"""The contenders: how each is started, and how it is measured (closed, then open loop)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from tests.bench.load import (
    BODY_FILE,
    CONNECTIONS,
    Tools,
    closed_loop,
    measured_closed_loop,
    run_loadgen,
)
from tests.bench.procs import SERVER_CPU, BenchError, Pinned, child_env, http_status, pinned
from tests.bench.tools import REPO
from tests.harness.loopback import free_port

CALLBACK_PATH: Final = "/callbacks/extend-music"
PARTITIONS: Final = 6  # the gateway's default TOPIC_PARTITIONS, for every topic here
HALF: Final = 0.5  # the open-loop step the table reports (half the maximum)
#: A virtualenv with only the image's locked dependencies (``make bench-image-venv``).
IMAGE_PYTHON: Final = REPO / ".cache" / "bench" / "image-venv" / "bin" / "python"


@dataclass(frozen=True)
class Settings:
    smoke: bool
    warmup_s: float
    closed_s: float
    open_s: float
    open_fractions: tuple[float, ...]
    memory_s: float
    memory_early_s: float
    memory_sample_s: float
    profile_s: float
    consumer_events: int
    consumer_cap_s: float
    turn_rounds: int  # the gateway, FastAPI and the ceiling measured in turns
    turn_s: float


FULL: Final = Settings(smoke=False, warmup_s=3, closed_s=20, open_s=15,
                       open_fractions=(0.25, 0.5, 0.75, 0.9), memory_s=600,
                       memory_early_s=60, memory_sample_s=5, profile_s=20,
                       consumer_events=10_000, consumer_cap_s=120, turn_rounds=5, turn_s=8)
SMOKE: Final = Settings(smoke=True, warmup_s=0.5, closed_s=1, open_s=1,
                        open_fractions=(0.5,), memory_s=3, memory_early_s=1,
                        memory_sample_s=0.5, profile_s=2, consumer_events=300,
                        consumer_cap_s=3, turn_rounds=2, turn_s=1)

@dataclass
class Context:
    bootstrap: str
    out: Path
    logs: Path
    tools: Tools
    settings: Settings
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    gateway_topic: str | None = None  # where the gateway contender published (raw producer)


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    url: str
    ready: Callable[[], bool]
    cwd: Path = REPO


def unique(prefix: str) -> str:
    return f"bench.{prefix}.{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
        finally:
            await admin.close()

    asyncio.run(create())


def gateway_env(ctx: Context, **overrides: str) -> tuple[dict[str, str], int, int]:
    """Production defaults, loopback ports, a fresh set of topics, one URL token."""
    http_port, admin_port = free_port(), free_port()
    env = child_env(
        KAFKA_BOOTSTRAP_SERVERS=ctx.bootstrap, HTTP_HOST="127.0.0.1", HTTP_PORT=str(http_port),
        ADMIN_HOST="127.0.0.1", ADMIN_PORT=str(admin_port), CALLBACK_TOKENS=ctx.token,
        EVENTS_TOPIC=unique("events"), REJECTED_TOPIC=unique("rejected"),
        ARCHIVED_TOPIC=unique("archived"), ARCHIVE_DLQ_TOPIC=unique("archive-failed"),
        **overrides,
    )
    done = subprocess.run([service_python(), "-m", "service", "topics", "ensure"], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"topics ensure failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return env, http_port, admin_port


def service_python() -> str:
    """The interpreter the service's own processes run on in the bench: the image's
    dependency set (``deploy/requirements.lock`` only, made by ``make bench``), as in
    production, so that no development tool they would import is measured (structlog
    imports ``rich`` where it is installed: 3 MiB of RSS). This virtualenv's otherwise."""
    return str(IMAGE_PYTHON) if IMAGE_PYTHON.exists() else sys.executable


def launch_gateway(ctx: Context, **overrides: str) -> Launch:
    env, http_port, admin_port = gateway_env(ctx, **overrides)
    ctx.gateway_topic = env["EVENTS_TOPIC"]
    return Launch(
        [service_python(), "-m", "service", "gateway"], env,
        f"http://127.0.0.1:{http_port}{CALLBACK_PATH}?token={ctx.token}",
        lambda: http_status(f"http://127.0.0.1:{admin_port}/readyz") == 200,
    )


def _posts_ok(url: str) -> Callable[[], bool]:
    body = BODY_FILE.read_bytes()
    return lambda: http_status(url, body) == 200


def launch_python(module: str, path: str, *extra: str,
                  env: dict[str, str] | None = None) -> Callable[[Context], Launch]:
    def make(ctx: Context) -> Launch:
        port = free_port()
        url = f"http://127.0.0.1:{port}{path}"
        argv = [sys.executable, "-m", module, str(port),
                *(a.replace("{bootstrap}", ctx.bootstrap) for a in extra)]
        if "{topic}" in argv:
            topic = unique(module.rsplit(".", 1)[-1])
            create_topic(ctx.bootstrap, topic)
            argv[argv.index("{topic}")] = topic
        return Launch(argv, child_env(**(env or {})), url, _posts_ok(url))

    return make


def launch_fastapi(ctx: Context) -> Launch:
    port = free_port()
    topic = unique("fastapi")
    create_topic(ctx.bootstrap, topic)
    url = f"http://127.0.0.1:{port}/callback"
    return Launch(
        [sys.executable, "-m", "uvicorn", "tests.bench.contenders.fastapi_pydantic:app",
         "--host", "127.0.0.1", "--port", str(port)],
        child_env(BENCH_BOOTSTRAP=ctx.bootstrap, BENCH_TOPIC=topic), url, _posts_ok(url),
    )


def launch_express(ctx: Context) -> Launch:
    if ctx.tools.express is None:
        raise BenchError(f"Express contender unavailable: {ctx.tools.express_error}")
    port = free_port()
    url = f"http://127.0.0.1:{port}/extend-music-callback"
    node = shutil.which("node") or "node"
    return Launch([node, "server.js", str(port)], child_env(NODE_ENV="production"), url,
                  _posts_ok(url), cwd=ctx.tools.express)


@dataclass(frozen=True)
class HttpContender:
    name: str
    label: str
    launch: Callable[[Context], Launch]


CEILING: Final = "ceiling"
GATEWAY: Final = "gateway"
FASTAPI: Final = "fastapi"
RAW_PRODUCER: Final = "raw-producer"

HTTP_CONTENDERS: Final = (
    HttpContender(CEILING, "bare aiohttp handler (ceiling)",
                  launch_python("tests.bench.contenders.bare_aiohttp", "/callback")),
    HttpContender(GATEWAY, "the gateway (production defaults)", launch_gateway),
    HttpContender("minimal", "minimal aiohttp + orjson + aiokafka send_and_wait",
                  launch_python("tests.bench.contenders.minimal_aiokafka", "/callback",
                                "{bootstrap}", "{topic}")),
    HttpContender(FASTAPI, "FastAPI + pydantic + aiokafka (uvicorn)", launch_fastapi),
    HttpContender("flask", "provider docs' Flask receiver (dev server, no Kafka)",
                  launch_python("tests.bench.contenders.flask_receiver",
                                "/extend-music-callback")),
    HttpContender("express", "provider docs' Express receiver (no Kafka)", launch_express),
)
ALL_NAMES: Final = (*(c.name for c in HTTP_CONTENDERS), RAW_PRODUCER)


# Called with the contender still running after its load steps: (process, URL, maximum).
During = Callable[[Pinned, str, float], None]


def measure_http(ctx: Context, contender: HttpContender,
                 during: During | None = None) -> dict[str, Any]:
    launch = contender.launch(ctx)
    settings = ctx.settings
    with Pinned(contender.name, launch.argv, env=launch.env, log_dir=ctx.logs,
                cwd=launch.cwd) as proc:
        proc.wait_until(launch.ready)
        closed_loop(ctx.tools, launch.url, settings.warmup_s)
        maximum = measured_closed_loop(ctx.tools, proc, launch.url, settings.closed_s)
        proc.alive()
        base = maximum["ok_rate"] or maximum["rate"]
        steps = [run_loadgen(ctx.tools, launch.url, settings.open_s, fraction * base)
                 | {"fraction": fraction} for fraction in settings.open_fractions]
        proc.alive()
        peak = proc.peak_rss_mib()
        if during is not None:
            during(proc, launch.url, base)
    return {"name": contender.name, "label": contender.label, "closed": maximum,
            "open": steps, "peak_rss_mib": peak, "log": str(proc.log_path)}


def capture_record(bootstrap: str, topic: str, path: Path) -> None:
    """One record the gateway published (key, value, headers), for the raw producer."""
    from aiokafka import AIOKafkaConsumer

    async def first_record() -> dict[str, Any]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()

        def b64(data: bytes | None) -> str | None:
            return base64.b64encode(data).decode() if data is not None else None

        return {"key": b64(record.key), "value": b64(record.value),
                "headers": [[name, b64(value)] for name, value in record.headers]}

    path.write_bytes(orjson.dumps(asyncio.run(first_record())))


def measure_raw_producer(ctx: Context) -> dict[str, Any]:
    if ctx.gateway_topic is None:
        raise BenchError("the raw producer sends the gateway's records: run the gateway too")
    record = ctx.out / "gateway-record.json"
    capture_record(ctx.bootstrap, ctx.gateway_topic, record)
    topic = unique("raw-producer")
    create_topic(ctx.bootstrap, topic)

    def produce(seconds: float, *options: str) -> dict[str, Any]:
        argv = [sys.executable, "-m", "tests.bench.contenders.raw_kafka", "produce",
                ctx.bootstrap, topic, str(record), "--duration", str(seconds), *options]
        done = subprocess.run(pinned(SERVER_CPU, argv), cwd=REPO, env=child_env(),
                              capture_output=True, text=True, check=False,
                              timeout=seconds + 120)
        if done.returncode != 0:
            raise BenchError(f"raw producer failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        result["generator"] = "in-process"
        return result

    settings = ctx.settings
    concurrency = ("--concurrency", str(CONNECTIONS))
    produce(settings.warmup_s, *concurrency)
    maximum = produce(settings.closed_s, *concurrency)
    steps = [produce(settings.open_s, "--rate", f"{fraction * maximum['rate']:.3f}")
             | {"fraction": fraction} for fraction in settings.open_fractions]
    return {"name": RAW_PRODUCER, "label": "raw aiokafka producer, same records (no HTTP)",
            "closed": maximum, "open": steps, "peak_rss_mib": maximum["peak_rss_mib"]}

