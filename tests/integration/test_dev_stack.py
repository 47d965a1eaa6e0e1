"""``python -m service dev`` (what ``make run`` starts) on the embedded Tansu broker."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

from tests.harness.examples import example_bytes
from tests.harness.loopback import free_port
from tests.harness.processes import ServiceProcess


def dev_env(tmp_path: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {
        "HTTP_PORT": str(ports["http"]),
        "DEV_BROKER_PORT": str(ports["broker"]),
        "DEV_DATA_DIR": str(tmp_path / "data"),
    }
    for child in ("gateway", "archiver", "metrics", "reconciler"):
        if child in ports:
            env[f"DEV_{child.upper()}_ADMIN_PORT"] = str(ports[child])
    return env


def wait_until_up(stack: ServiceProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while "The local stack is up." not in stack.output():
        assert stack.process is not None
        assert stack.process.poll() is None, stack.output()[-3000:]
        assert time.monotonic() < deadline, stack.output()[-3000:]
        time.sleep(0.2)


def test_dev_stack_accepts_the_documented_callback_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "gateway", "archiver", "metrics", "broker")}
    stack = ServiceProcess(["dev"], dev_env(tmp_path, ports), tmp_path).start()
    try:
        wait_until_up(stack)
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['http']}/callbacks/extend-music",
            data=example_bytes("documented-complete.json"),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200
        assert "curl -sS -X POST" in stack.output()
        # the gateway keeps its spool under the data directory (make run: .dev-data/spool)
        assert (tmp_path / "data" / "spool" / "lock").is_file()
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['gateway']}/metrics",
                                    timeout=10) as response:
            assert "gateway_spool_enabled 1.0" in response.read().decode()
        stack.signal(signal.SIGINT)
        assert stack.wait(60) == 0
    finally:
        stack.stop()
    assert not _listening(ports["broker"]), "the embedded broker outlived the stack"


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_dev_stack_starts_the_reconciler_when_a_provider_key_is_set(
    tmp_path: Path,
) -> None:
    """On Tansu too: a task posted to /tasks, answered by the provider, is recovered."""
    import asyncio
    import secrets

    import orjson

    from tests.harness.fake_provider import FakeProvider, answer

    provider = FakeProvider(api_key=secrets.token_urlsafe(24))
    await provider.start()
    ports = {name: free_port() for name in ("http", "gateway", "archiver", "metrics",
                                            "reconciler", "broker")}
    env = {
        **dev_env(tmp_path, ports),
        "PROVIDER_API_BASE_URL": provider.base_url,
        "PROVIDER_API_KEY": provider.api_key,
        "RECONCILE_AFTER_SECONDS": "0",
        "RECONCILE_POLL_INTERVAL_SECONDS": "0.5",
    }
    provider.script("dev-task-1", answer("wav-success.json", "dev-task-1"))
    stack = ServiceProcess(["dev"], env, tmp_path).start()

    def post_task() -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['http']}/tasks",
            data=orjson.dumps({"task_id": "dev-task-1", "kind": "wav"}),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)

    def recovered() -> bool:
        url = f"http://127.0.0.1:{ports['reconciler']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return ('reconciler_tasks_closed_total{by="polling",kind="wav"} 1.0' in text)

    try:
        await asyncio.to_thread(wait_until_up, stack)
        assert "/tasks" in stack.output()
        assert await asyncio.to_thread(post_task) == 200
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(recovered):
            assert time.monotonic() < deadline, stack.output()[-3000:]
            await asyncio.sleep(0.3)
        assert provider.asked("dev-task-1")[0].path == "/api/v1/wav/record-info"
        stack.signal(signal.SIGINT)
        assert await asyncio.to_thread(stack.wait, 60) == 0
    finally:
        stack.stop()
        await provider.stop()
