"""Running aiohttp applications and long-lived workers until SIGTERM/SIGINT.

Signal handlers only set a flag (an ``asyncio.Event``); the shutdown sequence
runs in the main coroutine: mark not ready, stop accepting, let in-flight
requests finish (bounded), then run each app's cleanup (flushing producers).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Listener:
    app: web.Application
    host: str
    port: int
    name: str


class ShutdownFlag:
    """Set by SIGTERM/SIGINT; everything else only reads it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.event.set)

    @property
    def is_set(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> None:
        await self.event.wait()


async def serve(
    listeners: list[Listener],
    *,
    shutdown: ShutdownFlag,
    shutdown_timeout: float,
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Start every listener, wait for the flag, then stop them in order (first = public)."""
    runners: list[web.AppRunner] = []
    try:
        for listener in listeners:
            runner = web.AppRunner(
                listener.app, access_log=None, shutdown_timeout=shutdown_timeout,
                handle_signals=False,
            )
            await runner.setup()
            site = web.TCPSite(runner, listener.host, listener.port)
            await site.start()
            runners.append(runner)
            log.info("listening", listener=listener.name, host=listener.host,
                     port=bound_port(runner) or listener.port)
        if on_started is not None:
            await on_started()
        await shutdown.wait()
        log.info("shutting_down")
    finally:
        for runner in runners:
            await runner.cleanup()
        log.info("stopped")


def bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return None
