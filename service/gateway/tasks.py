"""``POST /tasks``: a task submitted to the provider, put on the tasks topic for the
reconciler (for services that prefer HTTP to producing the record themselves).

The body is ``{task_id, kind, submitted_at?, task_ref?}``
(``schemas/music.tasks.submitted.v1.schema.json``). The same guard as the callbacks
verifies the caller; the record goes the callbacks' way (``DurableSender``): 200 once
the broker acknowledged it or the spool fsynced it (``"spooled": true``), 503 with
``Retry-After`` when neither could, so the caller retries. A body that is not a valid
task is answered 400 and not kept: it is the caller's own request, not a callback that
would be lost. The record's value is the task with ``submitted_at`` filled in (the time
the gateway received it when absent) and ``task_ref`` from the body, else from the
per-task signed URL it came through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
import structlog

from service.config.gateway import GatewayConfig
from service.contracts.registry import TASKS_V1, SchemaError, SchemaRegistry
from service.core.records import envelope_headers
from service.core.timefmt import rfc3339
from service.gateway.ingest import DurableSender, Outcome, spooled, utc_now
from service.observability.tracing import kafka_header

ROUTE: Final = "/tasks"
TASK_TYPE: Final = "music.task.submitted"
_FIELDS: Final = ("task_id", "kind", "submitted_at", "task_ref")


@dataclass(frozen=True, slots=True)
class NotATask:
    """Why a body is no task: ``invalid_json``, ``not_an_object``, ``schema_violation``."""

    reason: str
    errors: tuple[SchemaError, ...]


Task = dict[str, Any]


def read_task(body: bytes, schemas: SchemaRegistry) -> Task | NotATask:
    """The task in ``body``, or why it is not one, with the failing paths."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return NotATask("invalid_json", (SchemaError("", str(exc)[:200]),))
    if not isinstance(document, dict):
        return NotATask("not_an_object", (SchemaError("", "the body must be a JSON object"),))
    errors = schemas.errors(TASKS_V1, document)
    if errors:
        return NotATask("schema_violation", tuple(errors))
    return document


def task_id_of(task: Task | NotATask) -> str | None:
    """The task id a valid task carries (verification by the provider HMAC needs it)."""
    return None if isinstance(task, NotATask) else str(task["task_id"])


class TaskIntake:
    def __init__(self, *, config: GatewayConfig, schemas: SchemaRegistry,
                 sender: DurableSender, clock: Callable[[], datetime] = utc_now) -> None:
        self._config = config
        self._sender = sender
        self._clock = clock
        self.schemas = schemas
        self._dataschema = schemas.schema_id(TASKS_V1)

    async def accept(self, task: Task | NotATask, *, task_ref: str | None,
                     traceparent: str | None) -> Outcome:
        if isinstance(task, NotATask):
            structlog.contextvars.bind_contextvars(reason=task.reason)
            return Outcome(400, {"error": task.reason,
                                 "message": "not a task; nothing was published",
                                 "errors": [error.as_dict() for error in task.errors]})
        received_at = self._clock()
        value = {name: task[name] for name in _FIELDS if name in task}
        value.setdefault("submitted_at", rfc3339(received_at))
        if task_ref is not None:
            value.setdefault("task_ref", task_ref)
        payload = orjson.dumps(value)
        task_id: str = value["task_id"]
        structlog.contextvars.bind_contextvars(task_id=task_id, kind=value["kind"])
        headers = envelope_headers(
            ce_id=hashlib.sha256(payload).hexdigest()[:32], source=ROUTE, ce_type=TASK_TYPE,
            time=received_at, subject=task_id, dataschema=self._dataschema)
        if traceparent is not None:
            headers.append(kafka_header(traceparent))
        sent = await self._sender.send("tasks", self._config.topics.tasks,
                                       key=task_id.encode(), value=payload, headers=headers)
        if isinstance(sent, Outcome):
            return sent
        return Outcome(200, {"status": "accepted", "task_id": task_id, **spooled(sent)})
