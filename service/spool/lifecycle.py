"""Opening the spool for a process, and running its forwarder alongside."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import structlog

from service.config.env import ConfigError
from service.spool.forwarder import Forwarder
from service.spool.store import Spool, SpoolLockedError

log = structlog.get_logger(__name__)


async def open_spool(spool: Spool) -> None:
    """Lock and scan ``SPOOL_DIR``; a directory that cannot be used stops start-up."""
    try:
        reports = await asyncio.to_thread(spool.open)
    except SpoolLockedError as exc:
        raise ConfigError("SPOOL_DIR", str(exc)) from None
    except OSError as exc:
        raise ConfigError("SPOOL_DIR", f"cannot use {spool.directory}: {exc.strerror}") from None
    log.info(
        "spool_opened", directory=str(spool.directory), records=spool.records,
        bytes=spool.bytes, max_bytes=spool.max_bytes, segments=len(reports),
        corrupt_bytes=sum(report.corrupt_bytes for report in reports),
        torn_bytes=sum(report.torn_bytes for report in reports),
        oldest_age_s=round(spool.oldest_age_seconds(), 1),
    )
    volume = os.statvfs(spool.directory)
    room = volume.f_bavail * volume.f_frsize + spool.bytes
    if room < spool.max_bytes:
        log.warning("spool_volume_smaller_than_max", directory=str(spool.directory),
                    available_bytes=room, max_bytes=spool.max_bytes,
                    detail="the disk fills before SPOOL_MAX_BYTES: appends then fail (503)")


@contextlib.asynccontextmanager
async def forwarding(forwarder: Forwarder) -> AsyncIterator[None]:
    """Open the forwarder's spool and forward in the background until the block ends."""
    spool = forwarder.spool
    await open_spool(spool)
    await spool.start()
    task = asyncio.create_task(forwarder.run(), name="spool-forwarder")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await spool.close()
        log.info("spool_closed", records=spool.records, bytes=spool.bytes)
