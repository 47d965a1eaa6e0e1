"""``python -m service dev`` (what ``make run`` starts): the whole local stack.

An embedded Tansu broker on loopback (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a
cluster to use instead), the project's topics, then the gateway, the archiver
and the metrics consumer as child processes, each on its own admin port, and the
reconciler too when ``PROVIDER_API_KEY`` (or ``PROVIDER_API_KEY_FILE``) is set: it
needs the provider's API (``PROVIDER_API_BASE_URL``), which a local stack does not
otherwise talk to. It prints a working ``curl`` example and stops everything on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from service.config.devstack import DevStackSettings
from service.config.env import Env
from service.config.kafka import KafkaSettings
from service.devstack.tansu import TansuBroker
from service.kafka.topics import ensure_topics, project_topics

REPO: Final = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Child:
    name: str
    module: str
    admin_port: int


def _children(settings: DevStackSettings) -> list[Child]:
    candidates = [
        Child("gateway", "service.gateway.main", settings.gateway_admin_port),
        Child("archiver", "service.consumers.archiver.main", settings.archiver_admin_port),
        Child("metrics", "service.consumers.metrics.main", settings.metrics_admin_port),
    ]
    if settings.start_reconciler:
        candidates.append(Child("reconciler", "service.consumers.reconciler.main",
                                settings.reconciler_admin_port))
    return [child for child in candidates if importlib.util.find_spec(child.module) is not None]


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def run_dev_stack(env: Env) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())  # handlers only set a flag

    settings = DevStackSettings.from_env(env)
    data_dir = settings.data_dir
    archive_dir = data_dir / "archive"
    archive_dir.mkdir(parents=True, exist_ok=True)
    http_port = settings.http_port

    broker: TansuBroker | None = None
    bootstrap = settings.bootstrap_servers
    child_env = dict(os.environ)
    if bootstrap is None:
        broker = TansuBroker(port=settings.broker_port or None,
                             log_path=data_dir / "tansu.log").start()
        bootstrap = broker.bootstrap_servers
        child_env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"  # Tansu has no idempotent producer
        print(f"embedded Tansu broker on {bootstrap} (memory only; log: {broker.log_path})")
    else:
        print(f"using the Kafka cluster at {bootstrap}")
    child_env |= {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HTTP_HOST": child_env.get("HTTP_HOST", "127.0.0.1"),
        "ADMIN_HOST": child_env.get("ADMIN_HOST", "127.0.0.1"),
        "HTTP_PORT": str(http_port),
        "AUTH_MODE": child_env.get("AUTH_MODE", "none"),
        "ARCHIVE_STORAGE_URL": child_env.get("ARCHIVE_STORAGE_URL", archive_dir.as_uri()),
        # The gateway's spool: callbacks sent while the broker is down survive a restart.
        "SPOOL_DIR": child_env.get("SPOOL_DIR", str(data_dir / "spool")),
        "TOPIC_PARTITIONS": child_env.get("TOPIC_PARTITIONS", "3"),
        "PYTHONUNBUFFERED": "1",
    }
    processes: list[tuple[Child, subprocess.Popen[bytes]]] = []
    try:
        child_vars = Env(child_env)
        asyncio.run(ensure_topics(KafkaSettings.from_env(child_vars, client_id="music-dev"),
                                  project_topics(child_vars)))
        for child in _children(settings):
            process = subprocess.Popen(
                [sys.executable, "-m", "service", child.name], cwd=REPO,
                env=child_env | {"ADMIN_PORT": str(child.admin_port)},
            )
            processes.append((child, process))
        for child, process in processes:
            if not _wait_ready(child.admin_port, process, timeout=60):
                print(f"{child.name} did not become ready (see its log lines above)",
                      file=sys.stderr)
                return 1
        _print_banner(http_port, processes, archive_dir, auth_none=child_env["AUTH_MODE"] == "none")
        while not stop.is_set():
            if any(process.poll() is not None for _, process in processes):
                print("a child process exited; stopping the stack", file=sys.stderr)
                return 1
            stop.wait(0.5)
        return 0
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if broker is not None:
            broker.stop()


def _print_banner(http_port: int, processes: list[tuple[Child, subprocess.Popen[bytes]]],
                  archive_dir: Path, *, auth_none: bool) -> None:
    example = REPO / "tests" / "examples" / "provider.track-callback.v1"
    lines = [
        "",
        "The local stack is up.",
        f"  callbacks : http://127.0.0.1:{http_port}/callbacks/<kind> (extend-music, lyrics, ...)",
        *(f"  {child.name:<9} : http://127.0.0.1:{child.admin_port}/metrics  /healthz  /readyz"
          for child, _ in processes),
        f"  archive   : {archive_dir}",
        f"  spool     : {archive_dir.parent / 'spool'}",
        "",
        "Send the provider's documented example:",
        f"  curl -sS -X POST http://127.0.0.1:{http_port}/callbacks/extend-music \\",
        "       -H 'Content-Type: application/json' \\",
        f"       --data-binary @{example / 'documented-complete.json'}",
        "",
    ]
    if any(child.name == "reconciler" for child, _ in processes):
        lines.append(f"Tasks for the reconciler: POST http://127.0.0.1:{http_port}/tasks "
                     'with {"task_id": ..., "kind": ...}.')
    if auth_none:
        lines.append("AUTH_MODE=none: callbacks are not verified (local use only).")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)
