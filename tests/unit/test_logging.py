"""The log format every process writes: one JSON object per line on stdout.

Run in a child process: configuring logging is process-global (structlog and the stdlib
root logger), and stdout is what an aggregator reads.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import Any

import orjson

from tests.harness.paths import REPO

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

SCRIPT = textwrap.dedent("""
    import logging
    import structlog
    from service.observability.logging import configure_logging

    configure_logging("INFO", process="gateway")
    log = structlog.get_logger("service.edge.request")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id="req-1", task_id="task-9")
    log.debug("hidden_below_info")
    log.info("request", status=200, duration_ms=1.5, odd=object.__new__(type("Odd", (), {
        "__str__": lambda self: "odd-as-str"})))
    logging.getLogger("aiokafka.conn").info("hidden: library info is below WARNING")
    logging.getLogger("aiokafka.conn").warning("connection to %s lost", "127.0.0.1:9")
    structlog.contextvars.clear_contextvars()
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("unhandled_error")
""")


def run_script() -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          check=True, timeout=60)
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def test_every_line_is_json_with_event_level_timestamp_process_and_bound_context() -> None:
    request, library, error = run_script()

    assert request["event"] == "request"
    assert request["level"] == "info"
    assert request["process"] == "gateway"
    assert (request["request_id"], request["task_id"]) == ("req-1", "task-9")
    assert (request["status"], request["duration_ms"]) == (200, 1.5)
    assert request["odd"] == "odd-as-str"  # unknown types are rendered with str()
    assert RFC3339_UTC.match(request["timestamp"]), request["timestamp"]

    # Library loggers come out in the same shape, with their logger name.
    assert library["event"] == "connection to 127.0.0.1:9 lost"
    assert library["level"] == "warning"
    assert library["logger"] == "aiokafka.conn"
    assert library["process"] == "gateway"
    assert library["request_id"] == "req-1"
    assert RFC3339_UTC.match(library["timestamp"]), library["timestamp"]

    # Clearing the request context keeps the process; exceptions become structured.
    assert error["event"] == "unhandled_error"
    assert error["level"] == "error"
    assert error["process"] == "gateway"
    assert "request_id" not in error
    assert error["exception"][0]["exc_type"] == "ValueError"
    assert error["exception"][0]["exc_value"] == "boom"
