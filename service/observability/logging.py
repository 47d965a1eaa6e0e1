"""structlog in its production shape: JSON via orjson, contextvars, one line per event.

Our own lines take structlog's native path: the filtering bound logger drops disabled
levels before any work, the processors build the event dict, orjson renders it to bytes
and ``BytesLogger`` writes them to stdout, without going through the stdlib ``logging``
module (a ``LogRecord``, a handler and a formatter per line cost about as much as the
rest of the line). Library loggers (aiokafka, aiohttp) still come out as the same JSON
lines through one stdlib handler, with their logger name added.

Every line carries ``event``, ``level``, ``timestamp`` (RFC 3339, UTC, microseconds),
``process`` and the context bound with ``structlog.contextvars``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, BinaryIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Library chatter (connection retries, access logs) stays at WARNING: our own canonical
# lines already say what happened to each request or message.
_NOISY_LIBRARIES = ("aiokafka", "aiohttp.access", "kafka")


def _dumps(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def _dumps_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class UtcTimestamper:
    """Adds ``timestamp`` like ``2025-01-01T00:00:00.000123Z``.

    The date and time of day are formatted once per second and reused, the microseconds
    appended: a fraction of ``datetime.now(UTC).isoformat()``'s cost on every line.
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


class _AddProcess:
    """Adds ``process`` to every line; a processor, so clearing the context keeps it."""

    __slots__ = ("_process",)

    def __init__(self, process: str) -> None:
        self._process = process

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("process", self._process)
        return event_dict


class _BinaryLineHandler(logging.Handler):
    """Writes each formatted record as one UTF-8 line to a binary stream."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._stream.write(self.format(record).encode() + b"\n")
            self._stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the process down
            self.handleError(record)


def configure_logging(level: str, *, process: str, stream: BinaryIO | None = None) -> None:
    """Configure structlog and the stdlib root logger; lines go to ``stream`` (stdout)."""
    output = stream if stream is not None else sys.stdout.buffer
    numeric_level: int = logging.getLevelName(level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _AddProcess(process),
        structlog.processors.add_log_level,
        UtcTimestamper(),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.BytesLoggerFactory(output),
        cache_logger_on_first_use=True,
    )
    handler = _BinaryLineHandler(output)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_dumps_text),
        ],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for noisy in _NOISY_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric_level))
