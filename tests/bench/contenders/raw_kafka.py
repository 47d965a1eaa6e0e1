"""Raw aiokafka, no HTTP: the broker-side ceiling for producing and for consuming.

    python -m tests.bench.contenders.raw_kafka produce BOOTSTRAP TOPIC RECORD_JSON \
        --duration S [--rate R | --concurrency C]
    python -m tests.bench.contenders.raw_kafka consume BOOTSTRAP TOPIC COUNT

``produce`` sends the record the gateway produced (value and headers captured from its
topic; a new key per record) with the gateway's producer settings (acks=all, idempotence,
gzip).
``--concurrency C`` senders (32, like the HTTP load's connections) each ``send_and_wait``
in turn: as fast as answered (closed loop), or, with ``--rate R``, taking sends due at a
constant rate, latency counted from the time each was due (open loop).
``consume`` reads COUNT records in a fresh group and does nothing with them.
Both print one JSON line in the load generator's format.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import resource
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.config.kafka import ProducerSettings
from tests.bench.stats import rate_since_first, summarize

DRAIN_SECONDS = 5.0  # open loop: sends still due after the run are dropped past this


async def produce(args: argparse.Namespace) -> dict[str, Any]:
    record = orjson.loads(Path(args.record).read_bytes())  # noqa: ASYNC240 - before any I/O
    value = base64.b64decode(record["value"])
    headers = [(name, base64.b64decode(v)) for name, v in record["headers"]]
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all",
                                enable_idempotence=True, compression_type=args.compression)
    await producer.start()
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    # A new key per record, like the HTTP load's per-request task ids: records spread over
    # the partitions as real traffic does (one key would serialize them on one partition).
    keys = itertools.count(time.time_ns())

    async def send(due: float) -> None:
        key = f"{next(keys) % 2**64:016x}".encode()
        try:
            await producer.send_and_wait(args.topic, value, key=key, headers=headers)
        except Exception as exc:  # noqa: BLE001 - counted, like a failed HTTP request
            failures[type(exc).__name__] += 1
            return
        latencies.append(time.perf_counter() - due)

    started = time.perf_counter()
    end = started + args.duration
    # Like the HTTP load generators: --concurrency senders (connections). Closed loop: each
    # sends again as soon as it is answered. Open loop: sends are due at a constant rate,
    # wait for a free sender, and their latency counts from the time they were due.
    due_times: asyncio.Queue[float | None] = asyncio.Queue()

    dropped = 0

    async def sender() -> None:
        nonlocal dropped
        if not args.rate:
            while time.perf_counter() < end:
                await send(time.perf_counter())
            return
        while (due := await due_times.get()) is not None:
            if time.perf_counter() < end + DRAIN_SECONDS:
                await send(due)
            else:
                dropped += 1

    async def schedule() -> None:
        n = 0
        while (due := started + n / args.rate) < end:
            while due <= time.perf_counter() and due < end:  # every send due by now
                due_times.put_nowait(due)
                n += 1
                due = started + n / args.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        for _ in range(args.concurrency):
            due_times.put_nowait(None)

    try:
        senders = [sender() for _ in range(args.concurrency)]
        await asyncio.gather(*senders, *([schedule()] if args.rate else []))
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    summary = summarize(
        [s * 1000 for s in latencies], mode="open" if args.rate else "closed",
        offered_rate=args.rate or 0.0, connections=args.concurrency, elapsed=elapsed,
        errors=sum(failures.values()), dropped=dropped,
    )
    summary["error_types"] = dict(failures)
    summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return summary


# The service's consumers poll at most 100 records at a time (ConsumerOptions): the same here.
MAX_RECORDS = 100


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap,
                                group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest")
    await consumer.start()
    seen = 0
    # Timed from the first batch on (group join and the first fetch are not the rate).
    first: tuple[float, int] | None = None
    cpu_at_first = 0.0
    deadline = time.monotonic() + args.timeout
    try:
        while seen < args.count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            seen += sum(len(records) for records in batch.values())
            if batch and first is None:
                first, cpu_at_first = (time.perf_counter(), seen), time.process_time()
        finished, cpu = time.perf_counter(), time.process_time() - cpu_at_first
    finally:
        await consumer.stop()
    return rate_since_first(seen, first, finished, cpu_s=cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    prod = sub.add_parser("produce")
    prod.add_argument("bootstrap")
    prod.add_argument("topic")
    prod.add_argument("record")
    prod.add_argument("--duration", type=float, required=True)
    prod.add_argument("--rate", type=float, default=0.0)
    prod.add_argument("--concurrency", type=int, default=32)
    # The gateway's own default, so the raw producer sends what the gateway would.
    prod.add_argument("--compression", default=ProducerSettings.compression_type)
    cons = sub.add_parser("consume")
    cons.add_argument("bootstrap")
    cons.add_argument("topic")
    cons.add_argument("count", type=int)
    cons.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    run = produce if args.command == "produce" else consume
    print(orjson.dumps(asyncio.run(run(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
