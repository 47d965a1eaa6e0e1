"""The archiver's I/O done plainly: the baseline the archiver is compared with.

    python -m tests.bench.contenders.plain_archiver BOOTSTRAP EVENTS_TOPIC REPORTS_TOPIC \
        ARCHIVE_DIR COUNT [--concurrency 4] [--timeout S]

A raw aiokafka consumer reads COUNT events; for every entry of an event's ``files[]``
it downloads ``url`` with aiohttp (one session, ``--concurrency`` downloads at a time,
like ``ARCHIVE_CONCURRENCY``), streams it to a temporary file in ARCHIVE_DIR, fsyncs it,
renames it into place and fsyncs the directory (the least a durable write takes), then
publishes one report record per object with the archiver's producer settings (acks=all,
idempotence, gzip) and waits for its acknowledgement. No validation, no metadata, no
retries, no guard, no logs. Offsets are auto-committed. Prints one JSON line: events/s
from the first fetched batch, as the raw consumer does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.bench.contenders.raw_kafka import MAX_RECORDS
from tests.bench.stats import rate_since_first


def write_durably(directory: Path, name: str, body: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the directory."""
    temporary = directory / f".{name}.{uuid.uuid4().hex}"
    with temporary.open("wb") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(directory / name)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


async def archive_event(value: bytes, *, session: aiohttp.ClientSession,
                        producer: AIOKafkaProducer, slots: asyncio.Semaphore,
                        archive: Path, reports_topic: str) -> None:
    event = orjson.loads(value)
    task = event["task_id"]

    async def one(index: int, file: dict[str, Any]) -> None:
        async with slots:
            async with session.get(file["url"]) as response:
                response.raise_for_status()
                body = await response.read()
            directory = archive / task
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
            name = f"{file.get('track_id')}-{file['role']}-{index}"
            await asyncio.to_thread(write_durably, directory, name, body)
        report = {"task_id": task, "object": file["role"], "size": len(body),
                  "uri": (directory / name).as_uri()}
        await producer.send_and_wait(reports_topic, orjson.dumps(report), key=task.encode())

    await asyncio.gather(*(one(index, file) for index, file in enumerate(event["files"])))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap,
                                group_id=f"bench-plain-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", max_poll_records=MAX_RECORDS)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all",
                                enable_idempotence=True, compression_type="gzip")
    await consumer.start()
    await producer.start()
    slots = asyncio.Semaphore(args.concurrency)
    # Events in flight: enough queued downloads to keep every slot busy.
    events_in_flight = asyncio.Semaphore(4 * args.concurrency)
    done = 0
    first: tuple[float, int] | None = None
    cpu_at_first = 0.0
    deadline = time.monotonic() + args.timeout
    pending: set[asyncio.Task[None]] = set()

    async def process(value: bytes) -> None:
        nonlocal done
        try:
            await archive_event(value, session=session, producer=producer, slots=slots,
                                archive=args.archive, reports_topic=args.reports_topic)
            done += 1
        finally:
            events_in_flight.release()

    try:
        async with aiohttp.ClientSession() as session:
            fetched = 0
            while fetched < args.count and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
                if batch and first is None:
                    first, cpu_at_first = (time.perf_counter(), 0), time.process_time()
                for records in batch.values():
                    for record in records:
                        await events_in_flight.acquire()
                        task = asyncio.create_task(process(record.value or b"{}"))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                        fetched += 1
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            finished, cpu = time.perf_counter(), time.process_time() - cpu_at_first
    finally:
        await consumer.stop()
        await producer.stop()
    return rate_since_first(done, first, finished, cpu_s=cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("reports_topic")
    parser.add_argument("archive", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(run(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
