"""The admin listener every process serves on its own ADMIN_PORT.

``/healthz`` says the process is alive, ``/readyz`` asks the process's named
readiness checks in order (its clients are started and reachable) and answers
503 with the first failing check and its reason, ``/metrics`` renders
the process's Prometheus registry. Kept off the public callback port so the
callback host never exposes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Returns None when ready, else a short machine-readable reason.
ReadinessCheck = Callable[[], Awaitable[str | None]]

READINESS_KEY: Final[web.AppKey[Mapping[str, ReadinessCheck]]] = web.AppKey("readiness")
REGISTRY_KEY: Final = web.AppKey("registry", CollectorRegistry)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    for name, check in request.app[READINESS_KEY].items():
        reason = await check()
        if reason is not None:
            return web.json_response({"status": "not_ready", "check": name, "reason": reason},
                                     status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """The registry in the text format; ``?name[]=<sample name>`` (repeatable, as
    Prometheus' scrape ``params`` and prometheus_client's own exposition take it) renders
    only those: a cheap way to watch one counter often."""
    registry = request.app[REGISTRY_KEY]
    names = request.query.getall("name[]", [])
    body = generate_latest(registry.restricted_registry(names) if names else registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


def create_admin_app(registry: CollectorRegistry,
                     checks: Mapping[str, ReadinessCheck]) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[READINESS_KEY] = checks
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
