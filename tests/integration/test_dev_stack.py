"""``python -m service dev`` (what ``make run`` starts) on the embedded Tansu broker."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

from tests.harness.examples import example_bytes
from tests.harness.loopback import free_port
from tests.harness.processes import ServiceProcess


def test_dev_stack_accepts_the_documented_callback_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "gateway", "archiver", "metrics", "broker")}
    env = {
        "HTTP_PORT": str(ports["http"]),
        "DEV_GATEWAY_ADMIN_PORT": str(ports["gateway"]),
        "DEV_ARCHIVER_ADMIN_PORT": str(ports["archiver"]),
        "DEV_METRICS_ADMIN_PORT": str(ports["metrics"]),
        "DEV_BROKER_PORT": str(ports["broker"]),
        "DEV_DATA_DIR": str(tmp_path / "data"),
    }
    stack = ServiceProcess(["dev"], env, tmp_path).start()
    try:
        deadline = time.monotonic() + 90
        while "The local stack is up." not in stack.output():
            assert stack.process is not None
            assert stack.process.poll() is None, stack.output()[-3000:]
            assert time.monotonic() < deadline, stack.output()[-3000:]
            time.sleep(0.2)
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
