"""Guarded, streaming downloads of archiver media (audio, images, video).

Pure I/O: no Kafka, no storage, no metrics - the caller measures. Every failure surfaces as a
``DownloadRefused`` with a ``reason`` and a ``retryable`` flag:

- ``forbidden_scheme`` / ``forbidden_address``: the URL or any redirect hop (permanent);
- ``too_large``: declared Content-Length or streamed bytes above ``max_bytes`` (permanent);
- ``bad_content_type``: not one of the limits' ``media_types`` (``audio/*``, ``image/*``,
  ...) nor application/octet-stream (permanent); a missing Content-Type is treated as
  application/octet-stream (RFC 9110 section 8.3);
- ``http_status``: 5xx, 408 and 429 are retryable (``retry_after`` parsed from a
  delay-seconds ``Retry-After``), other non-2xx and redirect problems are permanent;
- ``timeout`` and ``network``: retryable.

Local file-system errors (e.g. a missing destination directory) are not refusals and
propagate as ``OSError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

import aiohttp
from aiohttp import hdrs
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from yarl import URL

from service.config.archiver import DEFAULT_MAX_BYTES
from service.consumers.archiver.netguard import (
    AddressPolicy,
    DownloadRefused,
    GuardedConnector,
)
from service.storage.filesystem import create_beside

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiohttp.abc import AbstractResolver

CHUNK_SIZE: Final = 64 * 1024
#: Bytes a download holds before handing them to a thread to write (per download in flight).
WRITE_BATCH: Final = 1024 * 1024
USER_AGENT: Final = "music-callback-gateway-archiver/0.1"

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
DEFAULT_MEDIA_TYPES: Final = frozenset({"audio", "image"})
_OCTET_STREAM: Final = "application/octet-stream"
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_DELAY_SECONDS: Final = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """Bounds for one download.

    ``total_timeout`` bounds a whole ``download_to_file`` call (all redirect hops and the
    body); ``connect_timeout`` bounds DNS + TCP/TLS connect per hop; ``read_timeout`` (None to
    disable) bounds each wait for data from the server. ``media_types`` are the accepted
    top-level types (``audio`` accepts ``audio/*``); application/octet-stream always is.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = 3
    connect_timeout: float = 10.0
    total_timeout: float = 120.0
    read_timeout: float | None = 30.0
    media_types: frozenset[str] = DEFAULT_MEDIA_TYPES

    def __post_init__(self) -> None:
        if self.max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        if self.connect_timeout <= 0 or self.total_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        if self.read_timeout is not None and self.read_timeout <= 0:
            raise ValueError("read_timeout must be > 0 or None")


@dataclass(frozen=True, slots=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str
    content_type: str
    final_url: str
    attempts: int = 1


def make_session(
    policy: AddressPolicy,
    limits: DownloadLimits,
    resolver: AbstractResolver | None = None,
    *,
    trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """A session whose connector enforces ``policy``; call it inside the running loop.

    ``resolver`` is the inner resolver (default: aiohttp's ``DefaultResolver``); it is always
    wrapped in a ``GuardedResolver``. Environment proxies are ignored, cookies are not kept
    across hops, and ``Accept-Encoding: identity`` is requested. ``trace_configs`` lets the
    caller measure (aiohttp client tracing).
    """
    connector = GuardedConnector(policy, resolver=resolver)
    timeout = aiohttp.ClientTimeout(
        total=limits.total_timeout,
        connect=limits.connect_timeout,
        sock_connect=limits.connect_timeout,
        sock_read=limits.read_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={hdrs.ACCEPT_ENCODING: "identity", hdrs.USER_AGENT: USER_AGENT},
        trace_configs=list(trace_configs) if trace_configs is not None else None,
    )


def _parse_retry_after(value: str | None) -> float | None:
    """Delay-seconds form only; the HTTP-date form is ignored (backoff applies instead)."""
    if value is None:
        return None
    value = value.strip()
    return float(value) if _DELAY_SECONDS.fullmatch(value) else None


def _status_refusal(resp: aiohttp.ClientResponse, url: URL) -> DownloadRefused | None:
    status = resp.status
    if 200 <= status < 300:
        return None
    retryable = 500 <= status < 600 or status in (408, 429)
    retry_after = _parse_retry_after(resp.headers.get(hdrs.RETRY_AFTER)) if retryable else None
    reason_phrase = f" {resp.reason}" if resp.reason else ""
    return DownloadRefused(
        "http_status",
        f"HTTP {status}{reason_phrase} from {url}",
        retryable=retryable,
        status=status,
        retry_after=retry_after,
    )


def _accepted_content_type(resp: aiohttp.ClientResponse, media_types: frozenset[str]) -> str:
    raw = resp.headers.get(hdrs.CONTENT_TYPE)
    if raw is None or not raw.strip():
        return _OCTET_STREAM
    media = raw.split(";", 1)[0].strip().lower()
    main, slash, sub = media.partition("/")
    well_formed = bool(slash) and bool(_TOKEN.fullmatch(main)) and bool(_TOKEN.fullmatch(sub))
    if well_formed and (main in media_types or media == _OCTET_STREAM):
        return media
    accepted = ", ".join(f"{name}/*" for name in sorted(media_types))
    raise DownloadRefused(
        "bad_content_type", f"content type {raw!r} is not {accepted} or {_OCTET_STREAM}",
    )


def _next_hop(current: URL, resp: aiohttp.ClientResponse, policy: AddressPolicy) -> URL:
    locations = resp.headers.getall(hdrs.LOCATION, [])
    if len(locations) != 1 or not locations[0].strip():
        raise DownloadRefused(
            "http_status",
            f"redirect {resp.status} from {current} without a single Location header",
            status=resp.status,
        )
    location = locations[0].strip()
    try:
        target = current.join(URL(location))
    except (ValueError, TypeError) as exc:
        raise DownloadRefused(
            "http_status",
            f"redirect {resp.status} from {current} has a malformed Location {location!r}",
            status=resp.status,
        ) from exc
    try:
        return policy.check_url(target)
    except DownloadRefused as exc:
        _add_context(exc, f"redirect from {current} to {location!r}")
        raise


def _add_context(exc: DownloadRefused, context: str) -> None:
    exc.detail = f"{context}: {exc.detail}"
    exc.args = (exc.reason, exc.detail)


def _create_part(dest: Path) -> tuple[BinaryIO, Path]:
    """A new file beside ``dest`` with the mode any new file gets (not mkstemp's 0o600):
    the store may keep this very file as the archived object."""
    fd, part = create_beside(dest, ".part")
    return os.fdopen(fd, "wb"), part


class _PartFile:
    """The temporary file a download streams into: made on the first write, renamed to
    ``dest`` when finished, removed when not. ``write`` and ``finish`` run in a thread;
    the lock lets ``discard`` (on the loop, when the download fails or is cancelled) wait
    for a write in flight rather than race it and leave a file behind."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._part: tuple[BinaryIO, Path] | None = None  # open until finished or discarded
        self._lock = threading.Lock()

    def write(self, hasher: hashlib._Hash, chunks: list[bytes]) -> None:
        with self._lock:
            self._write(hasher, chunks)

    def finish(self, hasher: hashlib._Hash, chunks: list[bytes]) -> None:
        with self._lock:
            file, path = self._write(hasher, chunks)
            file.close()
            os.replace(path, self.dest)
            self._part = None

    def _write(self, hasher: hashlib._Hash, chunks: list[bytes]) -> tuple[BinaryIO, Path]:
        if self._part is None:
            self._part = _create_part(self.dest)
        file = self._part[0]
        for chunk in chunks:
            file.write(chunk)
            hasher.update(chunk)
        return self._part

    def discard(self) -> None:
        """Close and remove the part file, if one is left (none once finished)."""
        with self._lock:
            if self._part is None:
                return
            file, path = self._part
            self._part = None
            file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


async def _stream_to_file(
    resp: aiohttp.ClientResponse, dest: Path, limits: DownloadLimits
) -> tuple[int, str]:
    """Stream the body to a temp file next to ``dest``, then rename it into place.

    Every file operation runs off the event loop: creating, closing, renaming (and in the
    processor, removing) a file waits for the directory and the filesystem's journal,
    which the store's fsyncs keep busy; done on the loop they held it for a fifth of its
    time under load (make bench, py-spy). The network's chunks go to the thread in
    batches of :data:`WRITE_BATCH` bytes, not one hop per read (a 4 MB song was about 60
    hops); a file that fits in one batch is created, written and renamed in one hop.
    """
    part = _PartFile(dest)
    hasher = hashlib.sha256()
    size = 0
    batch: list[bytes] = []
    batched = 0
    try:
        async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
            size += len(chunk)
            if size > limits.max_bytes:
                resp.close()  # stop reading now: drop the connection, do not drain it
                raise DownloadRefused(
                    "too_large",
                    f"body exceeds {limits.max_bytes} bytes (stopped after {size})",
                )
            batch.append(chunk)
            batched += len(chunk)
            if batched >= WRITE_BATCH:
                await asyncio.to_thread(part.write, hasher, batch)
                batch, batched = [], 0
        await asyncio.to_thread(part.finish, hasher, batch)
    finally:
        # Synchronous on purpose: must also run while the task is being cancelled.
        part.discard()
    return size, hasher.hexdigest()


async def _fetch(
    session: aiohttp.ClientSession,
    url: URL,
    dest: Path,
    limits: DownloadLimits,
    policy: AddressPolicy,
) -> DownloadResult:
    current = url
    redirects = 0
    while True:
        try:
            resp = await session.get(current, allow_redirects=False)
        except DownloadRefused as exc:
            # Refused while connecting (resolver / connector guard) on a redirect hop.
            if redirects:
                _add_context(exc, f"redirect hop {redirects} to {current}")
            raise
        async with resp:
            if resp.status in _REDIRECT_STATUSES:
                if redirects >= limits.max_redirects:
                    raise DownloadRefused(
                        "http_status",
                        f"too many redirects: {current} answered {resp.status} after "
                        f"{redirects} redirects (limit {limits.max_redirects})",
                        status=resp.status,
                    )
                current = _next_hop(current, resp, policy)
                redirects += 1
                continue
            try:
                return await _read_final(resp, current, dest, limits)
            except BaseException:
                resp.close()  # never return a half-read connection to the pool
                raise


async def _read_final(
    resp: aiohttp.ClientResponse, url: URL, dest: Path, limits: DownloadLimits
) -> DownloadResult:
    refusal = _status_refusal(resp, url)
    if refusal is not None:
        raise refusal
    content_type = _accepted_content_type(resp, limits.media_types)
    declared = resp.content_length
    if declared is not None and declared > limits.max_bytes:
        raise DownloadRefused(
            "too_large", f"Content-Length {declared} exceeds {limits.max_bytes} bytes"
        )
    size, sha256 = await _stream_to_file(resp, dest, limits)
    return DownloadResult(
        path=dest, size=size, sha256=sha256, content_type=content_type, final_url=str(url)
    )


async def download_to_file(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    limits: DownloadLimits,
    policy: AddressPolicy,
) -> DownloadResult:
    """Download ``url`` to ``dest`` (one attempt), following at most ``max_redirects``.

    ``session`` must come from ``make_session`` (its connector enforces the policy at connect
    time; ``policy`` here is applied to every hop's URL as well). ``dest`` is only written on
    success (atomic rename of a temp file in the same directory); a failed attempt leaves no
    partial file behind.
    """
    if not isinstance(session.connector, GuardedConnector):
        raise TypeError("download_to_file needs a session from make_session()")
    start = policy.check_url(url)
    try:
        async with asyncio.timeout(limits.total_timeout):
            return await _fetch(session, start, dest, limits, policy)
    except TimeoutError as exc:
        kind = type(exc).__name__
        raise DownloadRefused(
            "timeout", f"{kind} after at most {limits.total_timeout}s fetching {start}"
        ) from exc
    except aiohttp.InvalidURL as exc:
        raise DownloadRefused(
            "forbidden_address", f"invalid URL while fetching {start}: {exc}", retryable=False
        ) from exc
    except aiohttp.ClientError as exc:
        raise DownloadRefused("network", f"{type(exc).__name__} fetching {start}: {exc}") from exc


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DownloadRefused) and exc.retryable


async def download_with_retries(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    limits: DownloadLimits,
    policy: AddressPolicy,
    *,
    attempts: int,
    base_delay: float,
    max_delay: float,
) -> DownloadResult:
    """``download_to_file`` with up to ``attempts`` tries for retryable refusals.

    Waits use exponential backoff with full jitter (uniform in ``[0, min(max_delay,
    base_delay * 2**(n-1))]``); a ``Retry-After`` of N seconds replaces that wait with
    ``min(N, max_delay)``. The result's / final exception's ``attempts`` is the number made.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    if base_delay < 0 or max_delay < 0:
        raise ValueError("delays must be >= 0")
    backoff = wait_random_exponential(multiplier=base_delay, max=max_delay)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, DownloadRefused) and exc.retry_after is not None:
            return min(exc.retry_after, max_delay)
        return float(backoff(state))

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait,
        retry=retry_if_exception(_is_retryable),
        reraise=True,
    )
    made = 0
    try:
        async for attempt in retrying:
            with attempt:
                made = attempt.retry_state.attempt_number
                result = await download_to_file(session, url, dest, limits, policy)
                return dataclasses.replace(result, attempts=made)
    except DownloadRefused as exc:
        exc.attempts = made
        raise
    raise RuntimeError("retry loop ended without an outcome")  # pragma: no cover
