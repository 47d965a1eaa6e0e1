"""aiohttp plumbing for the callback port: JSON errors, request context, bounded bodies."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
import structlog
from aiohttp import web

from service.gateway.metrics import GatewayMetrics

log = structlog.get_logger("service.gateway.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REQUEST_ID_HEADER: Final = "X-Request-Id"
_CHUNK: Final = 64 * 1024

_HTTP_REASONS: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


def json_answer(body: dict[str, Any], *, status: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response rendered by orjson (aiohttp's ``json_response`` uses ``json``)."""
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def json_error(
    status: int, reason: str, message: str, *, headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    return json_answer({"error": reason, "message": message, **extra}, status=status,
                       headers=headers)


class RefusedError(Exception):
    """A request the guard refused: its answer is ready; the error middleware sends it."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(f"refused with {response.status}")
        self.response = response


class BodyTimeoutError(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"body not received within {seconds}s")
        self.seconds = seconds


async def read_body(request: web.Request, limit: int, deadline: float) -> bytes:
    """Read at most ``limit`` bytes within ``deadline`` seconds.

    A larger Content-Length is refused before reading; a client that dribbles its
    body is cut at the deadline so it cannot hold a connection and a slot.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(limit)
    content = request.content
    if content.is_eof():  # the whole body came with the headers (nearly every callback)
        body = await content.read()
        if len(body) > limit:  # a chunked body has no Content-Length to refuse early
            raise BodyTooLargeError(limit)
        return body
    buffer = bytearray()
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_chunked(_CHUNK):
                buffer += chunk
                if len(buffer) > limit:
                    raise BodyTooLargeError(limit)
    except TimeoutError:
        raise BodyTimeoutError(deadline) from None
    return bytes(buffer)


def _request_id(request: web.Request) -> str:
    supplied = request.headers.get(_REQUEST_ID_HEADER, "")
    if 0 < len(supplied) <= 64 and supplied.replace("-", "").isalnum():
        return supplied
    return secrets.token_hex(16)  # what uuid4().hex gives, without building a UUID


def make_request_middleware(metrics: GatewayMetrics) -> Any:
    """One canonical log line per request, request metrics and JSON for every error."""

    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = _request_id(request)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        route = request.match_info.route.resource.canonical if (
            request.match_info.route.resource is not None) else "unmatched"
        started = time.perf_counter()
        response = await _json_errors(request, handler)
        elapsed = time.perf_counter() - started
        response.headers[_REQUEST_ID_HEADER] = request_id
        metrics.answered(route, response.status, elapsed)
        # Path only: the query may carry a secret token and is never logged.
        log.info(
            "request", method=request.method, path=request.path, status=response.status,
            duration_ms=round(elapsed * 1000, 3), peer=request.remote,
            body_bytes=request.content_length,
        )
        return response

    return request_context


async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RefusedError as exc:
        return exc.response
    except BodyTooLargeError as exc:
        response = json_error(413, "body_too_large", f"the body exceeds {exc.limit} bytes",
                              limit=exc.limit)
        response.force_close()  # the rest of the body is not read
        return response
    except BodyTimeoutError as exc:
        response = json_error(408, "body_timeout", f"the body did not arrive within "
                              f"{exc.seconds}s")
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return json_error(exc.status, _HTTP_REASONS.get(exc.status, "http_error"),
                          exc.reason, headers=headers)
    except Exception:
        log.exception("unhandled_error")
        return json_error(500, "internal_error", "unexpected error; nothing was published")
