"""Asking the provider: ``GET <base>/<record-info path>?taskId=<task id>``.

The API key travels in ``Authorization: Bearer`` on every request and nowhere else: it
is not logged, not put in exceptions we raise, and redirects are not followed (a
redirect could carry the header to another host). The provider reports refusals either
as the HTTP status or, with HTTP 200, as the envelope's ``code``; both are read the same
way. What comes back is classified for the caller:

* ``answer``: code 200 and a readable answer (``provider-api.record-info.v1``);
* ``throttled``: 429, 430 (call frequency too high), 455 (maintenance): back off;
* ``provider_error``: 5xx: back off;
* ``rejected``: any other code (401 bad key, 404 unknown task, a redirect, ...);
* ``network``: no answer (connection refused or reset, timeout);
* ``unreadable``: not JSON, too large, or not the answer's shape.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
import orjson
import structlog
from aiohttp import hdrs

from service.contracts.registry import RECORD_INFO_V1, SchemaRegistry

log = structlog.get_logger(__name__)

THROTTLING_CODES: Final = frozenset({429, 430, 455})
# Provider codes reported as such in reconciler_provider_errors_total; any other is "other".
KNOWN_CODES: Final = frozenset({400, 401, 402, 403, 404, 405, 408, 409, 413, 422, 429, 430,
                                455, 500, 501, 502, 503, 504, 505, 531})
ERROR_CODE_LABELS: Final = (*(str(code) for code in sorted(KNOWN_CODES)), "other", "timeout",
                            "network")
USER_AGENT: Final = "music-callback-gateway-reconciler/1"

Outcome = Literal["answer", "throttled", "provider_error", "rejected", "network", "unreadable"]


@dataclass(frozen=True, slots=True)
class Fetched:
    outcome: Outcome
    code: int | None = None  # the provider's code (HTTP status, else the envelope's)
    document: dict[str, Any] | None = None
    retry_after: float | None = None
    detail: str = ""  # for the log line: an exception type, a schema error; never a header

    @property
    def error_label(self) -> str:
        """The ``code`` label of reconciler_provider_errors_total."""
        if self.code is None:
            return "timeout" if self.detail == "TimeoutError" else "network"
        return str(self.code) if self.code in KNOWN_CODES else "other"


def classify(code: int) -> Outcome:
    if code == 200:
        return "answer"
    if code in THROTTLING_CODES:
        return "throttled"
    return "provider_error" if 500 <= code < 600 else "rejected"


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delay-seconds or an HTTP date; None when absent or odd."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


class RecordInfoClient:
    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, api_key: str,
                 max_answer_bytes: int, schemas: SchemaRegistry) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._authorization = f"Bearer {api_key}"
        self._max_bytes = max_answer_bytes
        self._codec = schemas

    async def fetch(self, path: str, task_id: str) -> Fetched:
        """Ask about one task; never raises for what the provider or the network does."""
        headers = {hdrs.AUTHORIZATION: self._authorization, hdrs.ACCEPT: "application/json",
                   hdrs.USER_AGENT: USER_AGENT}
        try:
            async with self._session.get(self._base_url + path, params={"taskId": task_id},
                                         headers=headers, allow_redirects=False) as response:
                retry_after = retry_after_seconds(response.headers.get(hdrs.RETRY_AFTER))
                # The HTTP exchange, for troubleshooting (the "poll" line says the outcome);
                # never the request headers: they carry the key.
                log.debug("provider_response", path=path, status=response.status,
                          content_length=response.content_length, retry_after=retry_after)
                if response.status != 200:
                    return Fetched(classify(response.status), response.status,
                                   retry_after=retry_after)
                body = await self._read(response)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Fetched("network", detail=type(exc).__name__)
        if body is None:
            return Fetched("unreadable", 200, detail=f"answer over {self._max_bytes} bytes")
        return self._read_answer(body, retry_after)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes | None:
        if response.content_length is not None and response.content_length > self._max_bytes:
            return None
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self._max_bytes:
                return None
        return bytes(body)

    def _read_answer(self, body: bytes, retry_after: float | None) -> Fetched:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Fetched("unreadable", 200, detail="not JSON")
        if not isinstance(document, dict):
            return Fetched("unreadable", 200, detail="not a JSON object")
        code = document.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code != 200:
            return Fetched(classify(code), code, retry_after=retry_after)
        errors = self._codec.errors(RECORD_INFO_V1, document)
        if errors:
            return Fetched("unreadable", 200, detail=f"{errors[0].path}: {errors[0].message}")
        return Fetched("answer", 200, document=document)
