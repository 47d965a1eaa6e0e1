"""Running the project's own processes (``python -m service ...``) in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson

from tests.harness.paths import REPO


class ServiceProcess:
    """A ``python -m service <command>`` child with its stdout captured to a file."""

    def __init__(self, command: list[str], env: dict[str, str], log_dir: Path, *,
                 python: Path = Path(sys.executable), cwd: Path = REPO) -> None:
        self.command = command
        self.env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_dir / f"{command[0]}-{time.monotonic_ns()}.log"
        self.python = python
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "service", *self.command],
                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, admin_port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{admin_port}/readyz", timeout=1,
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready in {timeout}s:\n{self.output()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, object]]:
        return [orjson.loads(raw) for raw in self.log_path.read_bytes().splitlines()
                if raw.startswith(b"{")]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def run_command(command: list[str], env: dict[str, str],
                timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *command], cwd=REPO, capture_output=True, text=True,
        env={"PATH": os.environ.get("PATH", ""), **env}, timeout=timeout, check=False,
    )


def assert_configuration_error(command: list[str], env: dict[str, str], variable: str,
                               timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m service <command>`` refuses to start: exit code 2 and an error naming
    ``variable`` (the policy of every process); the result is returned for further checks."""
    result = run_command(command, env, timeout=timeout)
    assert result.returncode == 2
    assert f"configuration error: {variable}:" in result.stderr
    return result
