"""A fake provider API on loopback: the record-info endpoints, answering from a script.

Every task has a list of replies served one per request (the last one repeats), built
from the record-info examples in ``tests/examples/provider-api.record-info.v1`` with the
task id put in. A window function can override every answer for a while (throttling,
maintenance). Every request is recorded with its arrival time, path, task id and
whether it carried the right key.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

from service.core.kinds import KINDS
from tests.harness.paths import EXAMPLES

RECORD_INFO_EXAMPLES: Final = EXAMPLES / "provider-api.record-info.v1"
RECORD_INFO_PATHS: Final = frozenset(kind.record_info.path for kind in KINDS
                                     if kind.record_info is not None)


@dataclass(frozen=True)
class Reply:
    body: dict[str, Any] | None = None  # None: cut the connection without an answer
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() on arrival
    path: str
    task_id: str
    authorized: bool


def answer(example: str, task_id: str, **data: Any) -> Reply:
    """A record-info example as the answer about ``task_id``; ``data`` overrides fields."""
    document: dict[str, Any] = orjson.loads((RECORD_INFO_EXAMPLES / example).read_bytes())
    document = copy.deepcopy(document)
    body = document.get("data")
    if isinstance(body, dict):
        body["taskId"] = task_id
        if isinstance(body.get("response"), dict) and "taskId" in body["response"]:
            body["response"]["taskId"] = task_id
        body.update(data)
    return Reply(document)


def pending(task_id: str) -> Reply:
    return answer("generate-pending.json", task_id)


def refusal(code: int, *, in_body: bool = False, retry_after: str | None = None) -> Reply:
    """The provider refusing a request: as the HTTP status, or (``in_body``) as the
    envelope's code with HTTP 200, as several of its endpoints do."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"code": code, "msg": f"refused with {code}", "data": None}
    return Reply(body, 200 if in_body else code, headers)


class FakeProvider:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[Seen] = []
        self.window: Callable[[float], Reply | None] | None = None  # overrides by time
        self.default: Callable[[str], Reply] = pending
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def script(self, task_id: str, *replies: Reply) -> None:
        self.scripts[task_id] = list(replies)

    def asked(self, task_id: str | None = None) -> list[Seen]:
        return [seen for seen in self.requests if task_id is None or seen.task_id == task_id]

    async def start(self) -> str:
        app = web.Application()
        for path in sorted(RECORD_INFO_PATHS):
            app.router.add_get(path, self._record_info)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record_info(self, request: web.Request) -> web.StreamResponse:
        task_id = request.query.get("taskId", "")
        authorized = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        now = time.monotonic()
        self.requests.append(Seen(now, request.path, task_id, authorized))
        if not authorized:
            return web.json_response({"code": 401, "msg": "unauthorized", "data": None},
                                     status=401)
        reply = self.window(now) if self.window is not None else None
        if reply is None:
            script = self.scripts.get(task_id)
            reply = (script.pop(0) if len(script) > 1 else script[0]) if script \
                else self.default(task_id)
        if reply.body is None:
            assert request.transport is not None
            request.transport.abort()  # no answer at all
            return web.Response()
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)
