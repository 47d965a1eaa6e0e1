"""Who gets in: source checks, verification, a failure budget and the concurrency cap.

A verified callback is never refused for rate: the provider retries only three
times, and each 429 would burn one. Only traffic that *fails* is rate limited.

Order of the checks on the callback port, cheapest first:
1. concurrency cap (``MAX_IN_FLIGHT``): 503 with Retry-After instead of queueing
   (the only way a genuine callback can be shed, and rarely: the spool answers fast);
2. source allow-list (403), before any body byte is read;
3. failure budget per source address (429): a token bucket charged only by
   requests that do not verify (401, 403, 404, 405, 408, 413), one token plus one
   per 64 KiB read (the cost of verifying it). A source that has spent its budget
   is refused before its body is read, unless its URL alone proves it (a valid
   URL token or signed URL, checked without the body): so with URL credentials a
   genuine callback gets through even from an address that also floods garbage;
4. body read bounded in size (413) and time (``BODY_READ_TIMEOUT_SECONDS``, 408);
5. verification of every configured scheme (401) after the body is parsed,
   because the provider HMAC covers the task id inside it. Verified requests are
   never charged, whatever happens next (a 400 for a bad body is still kept).
Refusals publish nothing; they are logged (address, reason, size) and counted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final

import structlog
from aiohttp import web

from service.gateway.http import Handler, RefusedError, json_error
from service.gateway.metrics import GatewayMetrics
from service.gateway.security import (
    Failure,
    RateLimiter,
    Scheme,
    SecurityConfig,
    Verified,
    Verifier,
    address_key,
)

log = structlog.get_logger("service.gateway.guard")

_UNKNOWN_SOURCE: Final = "unknown"
_COST_UNIT_BYTES: Final = 64 * 1024
# Set on a request once every configured scheme passed: it is never charged or limited.
VERIFIED_KEY: Final = web.RequestKey("verified", bool)


class Guard:
    def __init__(self, config: SecurityConfig, metrics: GatewayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.verifier = Verifier(config)
        # A body whose task id cannot be read fails the provider HMAC; when a URL
        # token vouches for the caller, the body is still kept (as rejected).
        self._without_provider_hmac = (
            Verifier(dataclasses.replace(config, provider_hmac_keys=()))
            if config.provider_hmac_keys and config.callback_tokens else None
        )
        # Failure budget per source address (see the module docstring).
        self.by_source = RateLimiter(config.rate_limit_per_second, config.rate_limit_burst,
                                     config.rate_limit_max_keys)
        self.in_flight = 0

    def verify(self, request: web.Request, body: bytes, task_id: str | None) -> Verified:
        """The verified caller; a refusal raises ``RefusedError``, which the error
        middleware answers, so nothing after this line runs for a refused request."""
        headers: Mapping[str, str] = request.headers
        result = self.verifier.verify(request.query, headers, body, task_id)
        if (isinstance(result, Failure) and result.scheme is Scheme.PROVIDER_HMAC
                and task_id is None and self._without_provider_hmac is not None):
            # The token was checked first and passed; the body cannot carry the
            # provider's signature input, so it is kept as rejected, not dropped.
            result = self._without_provider_hmac.verify(request.query, headers, body, task_id)
        if isinstance(result, Failure):
            raise RefusedError(self.refuse(request, result.status, result.reason.value,
                                           body_bytes=len(body)))
        request[VERIFIED_KEY] = True
        return result

    def refuse(self, request: web.Request, status: int, reason: str,
               *, body_bytes: int | None = None) -> web.Response:
        self.metrics.auth_failures.labels(reason).inc()
        structlog.contextvars.bind_contextvars(refused=reason)
        log.info("request_refused", reason=reason, status=status, peer=request.remote,
                 body_bytes=body_bytes if body_bytes is not None else request.content_length)
        message = "the source is not allowed" if status == 403 else "verification failed"
        return json_error(status, reason, message)

    def limited(self, request: web.Request, scope: str, retry_after: float) -> web.Response:
        self.metrics.rate_limited.labels(scope).inc()
        structlog.contextvars.bind_contextvars(refused=f"rate_limited_{scope}")
        log.info("request_rate_limited", scope=scope, peer=request.remote)
        return json_error(429, "rate_limited", f"too many requests ({scope})",
                          headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


def make_guard_middleware(guard: Guard) -> Any:
    @web.middleware
    async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if guard.in_flight >= guard.config.max_in_flight:
            guard.metrics.rate_limited.labels("in_flight").inc()
            return json_error(503, "overloaded", "too many requests in flight; retry later",
                              headers={"Retry-After": "1"})
        failure = guard.verifier.check_source(request.remote, request.headers)
        if failure is not None:
            return guard.refuse(request, failure.status, failure.reason.value)
        address = guard.verifier.client_address(request.remote, request.headers)
        source = address_key(address) if address is not None else _UNKNOWN_SOURCE
        retry_after = guard.by_source.retry_after(source)
        if retry_after and not guard.verifier.url_credentials_valid(request.query):
            return guard.limited(request, "source", retry_after)
        guard.in_flight += 1
        try:
            response = await handler(request)
        except Exception:
            _charge_unless_verified(guard, request, source, 400)
            raise  # turned into a JSON error (413, 408, 404, 405, 500) outside this middleware
        finally:
            guard.in_flight -= 1
        _charge_unless_verified(guard, request, source, response.status)
        return response

    return guard_middleware


def _charge_unless_verified(guard: Guard, request: web.Request, source: str,
                            status: int) -> None:
    if request.get(VERIFIED_KEY) or not 400 <= status < 500:
        return
    guard.by_source.charge(source, 1 + (request.content_length or 0) // _COST_UNIT_BYTES)
