"""Child processes of the benchmark: pinned to one core, their output in a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

from tests.bench.tools import REPO

SERVER_CPU: Final = "0"  # every contender
LOADGEN_CPU: Final = "1" if (os.cpu_count() or 1) > 1 else "0"  # wrk, loadgen, py-spy
READY_TIMEOUT_S: Final = 60.0


class BenchError(RuntimeError):
    """A contender or a phase could not be measured (the message says why)."""


def child_env(**extra: str) -> dict[str, str]:
    """A minimal environment: PATH and HOME from ours, unbuffered Python (as deployed)."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env["PYTHONUNBUFFERED"] = "1"  # deploy/Dockerfile sets it for the service
    env.update(extra)
    return env


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv]


def status_field(pid: int, name: str) -> float:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """``utime + stime`` of ``/proc/<pid>/stat`` (all threads of the process), in seconds."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


class Pinned:
    """A child process pinned to one core, its output appended to a log file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path,
                 cpu: str = SERVER_CPU, cwd: Path = REPO) -> None:
        self.name = name
        self.argv = pinned(cpu, argv)
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Pinned:
        self._log = self.log_path.open("ab")  # append: truncating it later stays safe
        self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.process.returncode}:\n"
                             f"{self.tail()}")

    def tail(self, size: int = 3000) -> str:
        return self.log_path.read_bytes()[-size:].decode(errors="replace")

    def peak_rss_mib(self) -> float:
        return status_field(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the whole process (every thread) so far."""
        return cpu_seconds(self.pid)

    def rss_mib(self) -> float:
        return status_field(self.pid, "VmRSS")

    def wait_until(self, probe: Callable[[], bool], timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            if probe():
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready within {timeout}s:\n{self.tail()}")


def http_status(url: str, body: bytes | None = None, timeout: float = 5.0) -> int:
    """Status of a GET (or a POST of ``body``) to a loopback URL; 0 when nothing answers."""
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"benchmark traffic stays on loopback, not {url}")
    request = urllib.request.Request(  # noqa: S310 - http on loopback, checked above
        url, data=body, method="POST" if body else "GET",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - as above
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
