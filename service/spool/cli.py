"""``python -m service spool inspect|drain``: what the spool holds, and emptying it by hand.

``inspect`` only reads (safe while a gateway runs; the segment being written may then
show an unfinished last record as a torn tail). ``drain`` takes the spool's lock, so
it runs only when no gateway uses the directory (a stopped or replaced gateway's
volume), and forwards everything to Kafka exactly as the gateway's forwarder would.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from service.config.gateway import GatewayConfig
from service.gateway.app import build_publisher
from service.spool.forwarder import Forwarder
from service.spool.framing import SpoolRecord
from service.spool.lifecycle import open_spool
from service.spool.store import LOCK_NAME, Spool, read_frames, scan_segment, segment_paths


def _when(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "-"
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def lock_holder(directory: Path) -> str | None:
    """The pid in the lock file when a process holds the lock, else None."""
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return path.read_text().strip() or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _describe(record: SpoolRecord) -> str:
    event_id = record.header("ce_id") or record.header("reason") or b"-"
    key = record.key.decode("utf-8", "replace") if record.key is not None else "-"
    return (f"{_when(record.spooled_at_ms)}  {record.topic}  key={key}  "
            f"id={event_id.decode('utf-8', 'replace')}  {len(record.value)} B")


def inspect(directory: Path, *, records: bool, out: TextIO = sys.stdout) -> int:
    if not directory.is_dir():
        print(f"{directory}: no such directory (nothing spooled yet)", file=out)
        return 0
    reports = [scan_segment(sequence, path) for sequence, path in segment_paths(directory)]
    holder = lock_holder(directory)
    total = sum(report.records for report in reports)
    oldest = next((r.first_spooled_at_ms for r in reports if r.first_spooled_at_ms), None)
    age = ""
    if oldest is not None:
        age = f" (age {datetime.now(UTC).timestamp() - oldest / 1000:.0f} s)"
    print(f"spool {directory}: {total} records in {len(reports)} segments, "
          f"{_size(sum(r.bytes for r in reports))}; oldest {_when(oldest)}{age}; "
          + (f"in use by pid {holder}" if holder else "not in use"), file=out)
    for report in reports:
        topics = ", ".join(f"{topic}={count}" for topic, count in sorted(report.topics.items()))
        print(f"  {report.path.name}  {_size(report.bytes)}  {report.records} records  "
              f"[{topics}]  {_when(report.first_spooled_at_ms)} .. "
              f"{_when(report.last_spooled_at_ms)}  corrupt {report.corrupt_bytes} B  "
              f"torn {report.torn_bytes} B", file=out)
        if records:
            for frame in read_frames(report.path, 0, report.bytes):
                print(f"    @{frame.start}  {_describe(frame.record)}", file=out)
    return 0


async def drain(config: GatewayConfig, *, give_up_after: float,
                out: TextIO = sys.stdout) -> int:
    if config.spool.directory is None:
        print("SPOOL_DIR is not set: there is no spool to drain", file=out)
        return 2
    spool = Spool(config.spool.directory, max_bytes=config.spool.max_bytes)
    await open_spool(spool)  # a gateway using the directory: ConfigError naming SPOOL_DIR
    await spool.start()
    publisher = build_publisher(config)
    await publisher.start()
    forwarder = Forwarder(spool, publisher)
    try:
        print(f"draining {spool.records} records ({_size(spool.bytes)}) from "
              f"{spool.directory}", file=out, flush=True)
        try:
            async with asyncio.timeout(give_up_after):
                await forwarder.drain()
        except TimeoutError:
            print(f"gave up after {give_up_after:.0f} s: {forwarder.forwarded} forwarded, "
                  f"{spool.records} still in the spool (failures: {dict(forwarder.failures)})",
                  file=out)
            return 1
        print(f"drained: {forwarder.forwarded} records forwarded, the spool is empty", file=out)
        return 0
    finally:
        with contextlib.suppress(Exception):
            await spool.close()
        await publisher.stop(flush_timeout=config.process.shutdown_timeout_seconds)
