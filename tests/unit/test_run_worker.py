"""``run_worker``, the shape of every consumer process: admin port, named readiness checks,
the work as a task, the clients closed after it, one exit-code policy (0 clean, 1 crashed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from service.config.shared import ProcessSettings
from service.runtime import (
    EXIT_CRASHED,
    EXIT_OK,
    ShutdownFlag,
    Worker,
    admin_listener,
    run_process,
    run_worker,
)
from tests.harness.loopback import free_port

Check = Callable[[], Awaitable[str | None]]


def answer(reason: str | None) -> Check:
    async def check() -> str | None:
        return reason

    return check


class Rig:
    """A worker whose work and checks the test steers, recording what happens in order."""

    def __init__(self, work: Callable[[ShutdownFlag], Awaitable[None]],
                 checks: dict[str, Check] | None = None) -> None:
        self.work = work
        self.checks = checks or {}
        self.happened: list[str] = []
        self.process = ProcessSettings(admin_port=free_port(), admin_host="127.0.0.1",
                                       shutdown_timeout_seconds=1.0)
        self.shutdown = ShutdownFlag()

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[Worker]:
        self.happened.append("clients_opened")
        try:
            yield Worker(work=self.recorded, checks=self.checks)
        finally:
            self.happened.append("clients_closed")

    async def recorded(self, shutdown: ShutdownFlag) -> None:
        self.happened.append("work_started")
        try:
            await self.work(shutdown)
        finally:
            self.happened.append("work_ended")

    def start(self) -> asyncio.Task[int]:
        return asyncio.create_task(run_worker(
            "demo", self.worker(), process=self.process, registry=CollectorRegistry(),
            shutdown=self.shutdown))

    async def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.process.admin_port}{path}"
        for _ in range(200):
            try:
                async with aiohttp.ClientSession() as session, session.get(url) as response:
                    return response.status, await response.json(content_type=None)
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)  # not listening yet
        raise AssertionError(f"{url} never answered")


async def until_shutdown(shutdown: ShutdownFlag) -> None:
    await shutdown.wait()


async def test_a_clean_stop_drains_the_work_then_closes_its_clients_and_exits_0() -> None:
    rig = Rig(until_shutdown)
    with structlog.testing.capture_logs() as logs:
        running = rig.start()
        assert (await rig.get("/healthz")) == (200, {"status": "ok"})
        rig.shutdown.set()
        assert await asyncio.wait_for(running, 10) == EXIT_OK
    assert rig.happened == ["clients_opened", "work_started", "work_ended", "clients_closed"]
    assert logs[-1] == {"event": "demo_stopped", "exit_code": 0, "log_level": "info"}


async def test_work_that_raises_stops_the_process_with_exit_code_1() -> None:
    async def crash(_: ShutdownFlag) -> None:
        raise RuntimeError("processing crashed")

    rig = Rig(crash)
    with structlog.testing.capture_logs() as logs:
        assert await asyncio.wait_for(rig.start(), 10) == EXIT_CRASHED
    assert rig.shutdown.is_set  # the admin listener went too
    assert rig.happened[-1] == "clients_closed"
    events = [line["event"] for line in logs]
    assert "demo_stopped_on_failure" in events
    assert logs[-1]["event"] == "demo_stopped"
    assert logs[-1]["exit_code"] == 1


async def test_work_that_returns_on_its_own_ends_the_process_cleanly() -> None:
    async def done(_: ShutdownFlag) -> None:
        return

    rig = Rig(done)
    assert await asyncio.wait_for(rig.start(), 10) == EXIT_OK
    assert rig.happened == ["clients_opened", "work_started", "work_ended", "clients_closed"]


async def test_readiness_names_the_first_failing_check_in_order() -> None:
    verdicts: dict[str, str | None] = {"consumer": None, "producer": "broker_unreachable",
                                       "storage": "storage_unreachable"}

    def steered(name: str) -> Check:
        async def check() -> str | None:
            return verdicts[name]

        return check

    rig = Rig(until_shutdown, {name: steered(name) for name in verdicts})
    running = rig.start()
    try:
        assert await rig.get("/readyz") == (
            503, {"status": "not_ready", "check": "producer", "reason": "broker_unreachable"})
        verdicts["producer"] = None
        assert (await rig.get("/readyz"))[1]["check"] == "storage"
        verdicts["storage"] = None
        assert await rig.get("/readyz") == (200, {"status": "ready"})
    finally:
        rig.shutdown.set()
        await running


async def test_not_ready_once_shutting_down_whatever_the_checks_say() -> None:
    shutdown = ShutdownFlag()
    process = ProcessSettings(admin_port=0)
    listener = admin_listener(process, CollectorRegistry(), shutdown, {"consumer": answer(None)})
    async with TestClient(TestServer(listener.app)) as client:
        assert (await client.get("/readyz")).status == 200
        shutdown.set()
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"status": "not_ready", "check": "shutdown",
                                         "reason": "shutting_down"}


async def test_while_the_work_drains_the_admin_port_says_alive_but_not_ready() -> None:
    release = asyncio.Event()

    async def slow_drain(shutdown: ShutdownFlag) -> None:
        await shutdown.wait()
        await release.wait()  # in-flight work still finishing

    rig = Rig(slow_drain, {"consumer": answer(None)})
    running = rig.start()
    assert await rig.get("/readyz") == (200, {"status": "ready"})
    rig.shutdown.set()
    assert await rig.get("/readyz") == (
        503, {"status": "not_ready", "check": "shutdown", "reason": "shutting_down"})
    assert await rig.get("/healthz") == (200, {"status": "ok"})  # no restart mid-drain
    release.set()
    assert await asyncio.wait_for(running, 10) == EXIT_OK


@pytest.mark.parametrize(("event_loop", "module"), [("uvloop", "uvloop"),
                                                    ("asyncio", "asyncio.unix_events")])
def test_a_process_runs_on_the_event_loop_it_is_configured_with(event_loop: str,
                                                                 module: str) -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    settings = ProcessSettings(admin_port=0, event_loop=event_loop)
    assert run_process(settings, loop_module()) == module
