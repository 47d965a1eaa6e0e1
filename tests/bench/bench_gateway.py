"""Gateway throughput, latency and memory against a real Kafka broker (acks=all, idempotent).

    python -m tests.bench.bench_gateway [--requests N] [--concurrency C]

Starts a KRaft broker from the test harness and ``python -m service gateway`` as a
separate process with URL-token verification on, then drives it from this process over
loopback. Every request must be answered 200 (the broker acknowledged the event).
Client, gateway and broker share the machine, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from service.config.env import Env
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.examples import example
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.loopback import free_port
from tests.harness.processes import ServiceProcess


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _drive(url: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    template = example("real-first-partial.json")
    bodies = []
    for n in range(requests):
        template["data"]["task_id"] = f"bench-{n}"
        bodies.append(orjson.dumps(template))
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, data=body) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"unexpected {response.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    token = secrets.token_urlsafe(24)
    with KafkaBroker() as broker, tempfile.TemporaryDirectory() as logs:
        http_port, admin_port = free_port(), free_port()
        env = gateway_env(broker.bootstrap_servers, AUTH_MODE="verify", CALLBACK_TOKENS=token,
                          HTTP_PORT=str(http_port), ADMIN_PORT=str(admin_port),
                          HTTP_HOST="127.0.0.1", ADMIN_HOST="127.0.0.1", LOG_LEVEL="WARNING",
                          MAX_IN_FLIGHT="100000")
        asyncio.run(ensure_topics(gateway_config(env).kafka, project_topics(Env(env))))
        with ServiceProcess(["gateway"], env, Path(logs)) as gateway:
            gateway.wait_ready(admin_port)
            url = f"http://127.0.0.1:{http_port}/callbacks/extend-music?token={token}"
            asyncio.run(_drive(url, 500, args.concurrency))  # warm-up
            latencies, elapsed = asyncio.run(_drive(url, args.requests, args.concurrency))
            assert gateway.process is not None
            rss = _peak_rss_mib(gateway.process.pid)
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"gateway: {args.requests} callbacks, concurrency {args.concurrency}, "
          f"acks=all + idempotence, token verification on")
    print(f"  throughput   {args.requests / elapsed:8.0f} callbacks/s (all answered 200)")
    print(f"  latency p50  {quantiles[49] * 1000:8.2f} ms")
    print(f"  latency p99  {quantiles[98] * 1000:8.2f} ms")
    print(f"  latency max  {latencies[-1] * 1000:8.2f} ms")
    print(f"  gateway peak RSS {rss:6.1f} MiB")


if __name__ == "__main__":
    main()
