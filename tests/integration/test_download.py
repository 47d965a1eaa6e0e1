"""Archiver downloader against local aiohttp servers on 127.0.0.1 (no Kafka, no storage).

Safety net: the ``jail`` fixture (tests/integration/conftest.py), taken by every test here,
patches ``socket.socket.connect``/``connect_ex`` and ``socket.getaddrinfo``. Any attempt to
connect to a non-loopback address or to resolve a non-numeric name is recorded and fails
before reaching the OS, and the test errors at teardown. Refusal tests additionally assert
that no connection was attempted at all (``jail.connects`` empty, no aiohttp
``connection_create_end``/``request_headers_sent``),
and loopback refusals are checked against canary listeners that must accept nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from service.consumers.archiver import download as download_module
from service.consumers.archiver.download import (
    DownloadLimits,
    download_to_file,
    download_with_retries,
    make_session,
)
from service.consumers.archiver.netguard import (
    AddressPolicy,
    DownloadRefused,
    ForbiddenAddressError,
    GuardedConnector,
    GuardedResolver,
)
from tests.harness.fakes import FakeResolver
from tests.harness.loopback import Canary, Jail
from tests.harness.media_server import WAV, Handler, Servers, wav_handler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path
    from types import SimpleNamespace

LOOPBACK_OK = AddressPolicy(allow_loopback=True)  # test-only allowance
STRICT = AddressPolicy()
LIMITS = DownloadLimits(max_bytes=1 << 20, connect_timeout=2.0, total_timeout=5.0, read_timeout=5.0)

# Every test here runs in the network jail: no packet leaves loopback, no real name resolves.
pytestmark = pytest.mark.usefixtures("jail")


# --------------------------------------------------------------------------- helpers


class Probe:
    """aiohttp client trace recording connection creation and request sending."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.config = aiohttp.TraceConfig()
        self.config.on_connection_create_end.append(self._created)
        self.config.on_request_headers_sent.append(self._headers_sent)

    async def _created(
        self,
        _session: aiohttp.ClientSession,
        _ctx: SimpleNamespace,
        _params: aiohttp.TraceConnectionCreateEndParams,
    ) -> None:
        self.events.append("connection_created")

    async def _headers_sent(
        self,
        _session: aiohttp.ClientSession,
        _ctx: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        self.events.append(f"headers_sent {params.url}")


SessionFactory = Callable[..., aiohttp.ClientSession]


@pytest.fixture
async def sessions() -> AsyncIterator[SessionFactory]:
    made: list[aiohttp.ClientSession] = []

    def make(
        policy: AddressPolicy = LOOPBACK_OK,
        limits: DownloadLimits = LIMITS,
        resolver: AbstractResolver | None = None,
        probe: Probe | None = None,
    ) -> aiohttp.ClientSession:
        session = make_session(
            policy,
            limits,
            resolver if resolver is not None else FakeResolver(),
            trace_configs=[probe.config] if probe is not None else None,
        )
        made.append(session)
        return session

    yield make
    for session in made:
        await session.close()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_happy_path_downloads_real_wav(
    framing: str, servers: Servers, sessions: SessionFactory, tmp_path: Path, jail: Jail
) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(WAV), 10_000):
            await resp.write(WAV[start : start + 10_000])
        await resp.write_eof()
        return resp

    handler = wav_handler() if framing == "content-length" else chunked
    server = await servers.start({"/song.wav": handler})
    dest = tmp_path / "song.wav"

    result = await download_to_file(sessions(), server.at("/song.wav"), dest, LIMITS, LOOPBACK_OK)

    assert result.path == dest
    assert result.size == len(WAV) == dest.stat().st_size
    assert result.sha256 == hashlib.sha256(WAV).hexdigest()
    assert result.content_type == "audio/wav"
    assert result.final_url == server.at("/song.wav")
    assert result.attempts == 1
    assert dest.read_bytes() == WAV
    with wave.open(str(dest), "rb") as parsed:
        assert parsed.getnframes() == 2 * 22050
    assert leftovers(tmp_path) == ["song.wav"]
    assert {port for _, port in jail.connects} == {server.port}
    # The mode of any new file, not mkstemp's 0o600: the store may keep this very file.
    umask = os.umask(0o022)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask


async def test_file_operations_run_off_the_event_loop(
    servers: Servers, sessions: SessionFactory, tmp_path: Path, jail: Jail,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Creating and renaming a file wait for the filesystem's journal (busy with the
    store's fsyncs): on the loop they would stall every other download and report."""
    threads: dict[str, set[str]] = {"create": set(), "replace": set()}
    real_open, real_replace = os.open, os.replace

    def spying_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".part"):
            threads["create"].add(threading.current_thread().name)
        return real_open(path, flags, *args, **kwargs)

    def spying_replace(source: Any, target: Any) -> None:
        threads["replace"].add(threading.current_thread().name)
        real_replace(source, target)

    monkeypatch.setattr(os, "open", spying_open)
    monkeypatch.setattr(os, "replace", spying_replace)
    server = await servers.start({"/song.wav": wav_handler()})
    dest = tmp_path / "song.wav"

    result = await download_to_file(sessions(), server.at("/song.wav"), dest, LIMITS, LOOPBACK_OK)

    assert result.size == len(WAV) == dest.stat().st_size
    loop_thread = threading.current_thread().name
    assert threads["create"]
    assert loop_thread not in threads["create"]
    assert threads["replace"]
    assert loop_thread not in threads["replace"]


def _count_part_writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often a download hands its bytes to a thread: ``write`` batches, ``finish``."""
    calls = {"write": 0, "finish": 0}
    for name in calls:
        real = getattr(download_module._PartFile, name)

        def counting(self: Any, *args: Any, _name: str = name, _real: Any = real) -> None:
            calls[_name] += 1
            _real(self, *args)

        monkeypatch.setattr(download_module._PartFile, name, counting)
    return calls


async def test_a_large_body_is_written_in_batches_not_per_read(
    servers: Servers, sessions: SessionFactory, tmp_path: Path, jail: Jail,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = os.urandom(2 * download_module.WRITE_BATCH + 12_345)

    async def dribbled(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(body), 8_000):  # about 330 network reads
            await resp.write(body[start : start + 8_000])
        await resp.write_eof()
        return resp

    calls = _count_part_writes(monkeypatch)
    server = await servers.start({"/song.mp3": dribbled})
    dest = tmp_path / "song.mp3"

    limits = dataclasses.replace(LIMITS, max_bytes=len(body))
    result = await download_to_file(sessions(), server.at("/song.mp3"), dest, limits, LOOPBACK_OK)

    assert dest.read_bytes() == body
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    # A batch goes once WRITE_BATCH bytes are held; the rest goes with the rename.
    assert calls["finish"] == 1
    assert 1 <= calls["write"] <= len(body) // download_module.WRITE_BATCH
    assert leftovers(tmp_path) == ["song.mp3"]


async def test_a_small_body_takes_one_thread_hop(
    servers: Servers, sessions: SessionFactory, tmp_path: Path, jail: Jail,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_part_writes(monkeypatch)
    server = await servers.start({"/song.wav": wav_handler()})
    await download_to_file(sessions(), server.at("/song.wav"), tmp_path / "song.wav", LIMITS,
                           LOOPBACK_OK)
    assert calls == {"write": 0, "finish": 1}


async def test_a_download_cancelled_midway_leaves_no_file(
    servers: Servers, sessions: SessionFactory, tmp_path: Path, jail: Jail,
) -> None:
    first_batch_sent = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(os.urandom(download_module.WRITE_BATCH + 1))
        first_batch_sent.set()
        await asyncio.sleep(30)
        return resp

    server = await servers.start({"/song.mp3": stalls})
    limits = dataclasses.replace(LIMITS, max_bytes=4 * download_module.WRITE_BATCH)
    download = asyncio.create_task(download_to_file(
        sessions(), server.at("/song.mp3"), tmp_path / "song.mp3", limits, LOOPBACK_OK))
    await first_batch_sent.wait()
    await asyncio.sleep(0.2)  # the first batch reaches its thread and the part file
    download.cancel()
    with pytest.raises(asyncio.CancelledError):
        await download
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("image/jpeg", "image/jpeg"),
        ("image/png", "image/png"),
        ("application/octet-stream", "application/octet-stream"),
        ("AUDIO/MPEG; charset=binary", "audio/mpeg"),
        ("audio/ogg; codecs=opus", "audio/ogg"),
    ],
)
async def test_accepted_content_types(
    header: str, expected: str, servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    server = await servers.start({"/f": wav_handler(header)})
    result = await download_to_file(
        sessions(), server.at("/f"), tmp_path / "f", LIMITS, LOOPBACK_OK
    )
    assert result.content_type == expected


async def test_missing_content_type_is_treated_as_octet_stream(
    servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(WAV)}\r\nConnection: close\r\n\r\n"
    server = await servers.start_raw(head.encode() + WAV)
    result = await download_to_file(
        sessions(), server.at("/x"), tmp_path / "x", LIMITS, LOOPBACK_OK
    )
    assert result.content_type == "application/octet-stream"
    assert result.sha256 == hashlib.sha256(WAV).hexdigest()


# --------------------------------------------------------------------------- content type


@pytest.mark.parametrize(
    "header",
    ["text/html; charset=utf-8", "application/json", "video/mp4", "audio", "audio/", "/wav"],
)
async def test_wrong_content_type_is_permanent(
    header: str, servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {header}\r\nContent-Length: {len(WAV)}\r\n"
        "Connection: close\r\n\r\n"
    )
    server = await servers.start_raw(head.encode() + WAV)
    with pytest.raises(DownloadRefused) as info:
        await download_to_file(sessions(), server.at("/x"), tmp_path / "x", LIMITS, LOOPBACK_OK)
    assert info.value.reason == "bad_content_type"
    assert not info.value.retryable
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- timeouts


async def test_slow_server_hits_total_timeout(
    servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    async def never_answers(request: web.Request) -> web.StreamResponse:
        await servers.release.wait()
        return web.Response(body=WAV, content_type="audio/wav")

    server = await servers.start({"/slow": never_answers})
    limits = DownloadLimits(connect_timeout=1.0, total_timeout=0.5, read_timeout=None)
    started = time.monotonic()
    with pytest.raises(DownloadRefused) as info:
        await download_to_file(
            sessions(limits=limits), server.at("/slow"), tmp_path / "s", limits, LOOPBACK_OK
        )
    assert info.value.reason == "timeout"
    assert info.value.retryable
    assert time.monotonic() - started < 3
    assert leftovers(tmp_path) == []


async def test_body_stalling_midway_times_out_and_leaves_no_partial_file(
    servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        resp.content_length = len(WAV)
        await resp.prepare(request)
        await resp.write(WAV[: len(WAV) // 2])
        await servers.release.wait()
        return resp

    server = await servers.start({"/stall": stalls})
    limits = DownloadLimits(connect_timeout=1.0, total_timeout=0.6, read_timeout=None)
    with pytest.raises(DownloadRefused) as info:
        await download_to_file(
            sessions(limits=limits), server.at("/stall"), tmp_path / "s", limits, LOOPBACK_OK
        )
    assert info.value.reason == "timeout"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- status + retries


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_retryable_status_then_ok_succeeds_on_attempt_two(
    status: int, servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(status=status, text="try again")
        return web.Response(body=WAV, content_type="audio/wav")

    server = await servers.start({"/f": flaky})
    result = await download_with_retries(
        sessions(),
        server.at("/f"),
        tmp_path / "f",
        LIMITS,
        LOOPBACK_OK,
        attempts=3,
        base_delay=0.01,
        max_delay=0.05,
    )
    assert result.attempts == 2
    assert len(server.hits) == 2
    assert result.sha256 == hashlib.sha256(WAV).hexdigest()
    assert leftovers(tmp_path) == ["f"]


async def test_retryable_status_exhausts_attempts(
    servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    async def down(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="down")

    server = await servers.start({"/f": down})
    with pytest.raises(DownloadRefused) as info:
        await download_with_retries(
            sessions(),
            server.at("/f"),
            tmp_path / "f",
            LIMITS,
            LOOPBACK_OK,
            attempts=3,
            base_delay=0.01,
            max_delay=0.02,
        )
    assert (info.value.reason, info.value.status, info.value.retryable) == (
        "http_status",
        503,
        True,
    )
    assert info.value.attempts == 3
    assert len(server.hits) == 3
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [404, 400, 403, 410])
async def test_client_error_is_permanent_single_attempt(
    status: int, servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    async def missing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="nope")

    server = await servers.start({"/f": missing})
    dest = tmp_path / "f"
    dest.write_bytes(b"previous version")
    with pytest.raises(DownloadRefused) as info:
        await download_with_retries(
            sessions(),
            server.at("/f"),
            dest,
            LIMITS,
            LOOPBACK_OK,
            attempts=5,
            base_delay=0.01,
            max_delay=0.02,
        )
    assert (info.value.reason, info.value.status, info.value.retryable) == (
        "http_status",
        status,
        False,
    )
    assert info.value.attempts == 1
    assert len(server.hits) == 1
    assert dest.read_bytes() == b"previous version"  # untouched on failure
    assert leftovers(tmp_path) == ["f"]


@pytest.mark.parametrize(
    ("retry_after", "max_delay", "min_gap", "max_gap"),
    [
        ("1", 5.0, 0.95, 3.0),  # honoured
        ("3600", 0.2, 0.15, 2.0),  # capped by max_delay
    ],
)
async def test_429_honours_retry_after(
    *,
    retry_after: str,
    max_delay: float,
    min_gap: float,
    max_gap: float,
    servers: Servers,
    sessions: SessionFactory,
    tmp_path: Path,
) -> None:
    calls = 0

    async def limited(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(status=429, headers={"Retry-After": retry_after})
        return web.Response(body=WAV, content_type="audio/wav")

    server = await servers.start({"/f": limited})
    result = await download_with_retries(
        sessions(),
        server.at("/f"),
        tmp_path / "f",
        LIMITS,
        LOOPBACK_OK,
        attempts=3,
        base_delay=0.001,
        max_delay=max_delay,
    )
    assert result.attempts == 2
    gap = server.hits[1][0] - server.hits[0][0]
    assert min_gap <= gap < max_gap


async def test_connection_refused_is_retryable_network_error(
    sessions: SessionFactory, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(DownloadRefused) as info:
        await download_with_retries(
            sessions(),
            f"http://127.0.0.1:{closed_port}/x",
            tmp_path / "x",
            LIMITS,
            LOOPBACK_OK,
            attempts=2,
            base_delay=0.01,
            max_delay=0.02,
        )
    assert (info.value.reason, info.value.retryable, info.value.attempts) == ("network", True, 2)


# --------------------------------------------------------------------------- size limits


@dataclass
class Sent:
    written: int = 0
    disconnected: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def firehose(sent: Sent, total: int, *, declare_length: bool) -> Handler:
    block = b"\0" * (64 * 1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        if declare_length:
            resp.content_length = total
        else:
            resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            while sent.written < total:
                await resp.write(block)
                sent.written += len(block)
        except (ConnectionError, asyncio.CancelledError):
            sent.disconnected = True
        finally:
            sent.finished.set()
        return resp

    return handler


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_oversize_body_is_refused_early(
    declare_length: bool, servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    total = 64 * 1024 * 1024
    sent = Sent()
    server = await servers.start({"/big": firehose(sent, total, declare_length=declare_length)})
    limits = DownloadLimits(max_bytes=256 * 1024, connect_timeout=2, total_timeout=10)

    with pytest.raises(DownloadRefused) as info:
        await download_to_file(
            sessions(limits=limits), server.at("/big"), tmp_path / "big", limits, LOOPBACK_OK
        )
    assert info.value.reason == "too_large"
    assert not info.value.retryable
    if declare_length:
        assert "Content-Length" in info.value.detail
    else:
        assert "stopped after" in info.value.detail
    await asyncio.wait_for(sent.finished.wait(), 10)
    assert sent.disconnected, "server should see the client drop the connection"
    assert sent.written < total
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- redirects


def redirect_chain(server_url: Callable[[], URL], length: int) -> Handler:
    statuses = [301, 302, 303, 307, 308]

    async def handler(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        if n >= length:
            return web.Response(body=WAV, content_type="audio/wav")
        target = n + 1
        forms = [
            f"/r/{target}",  # absolute path
            f"{target}",  # relative to /r/n
            f"{server_url()}/r/{target}",  # absolute URL
            f"//{server_url().raw_authority}/r/{target}",  # scheme-relative
        ]
        return _redirect(statuses[n % len(statuses)], forms[n % len(forms)])

    return handler


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


async def test_three_redirects_are_followed(
    servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    box: list[URL] = []
    server = await servers.start({"/r/{n}": redirect_chain(lambda: box[0], 3)})
    box.append(server.url)
    result = await download_to_file(
        sessions(), server.at("/r/0"), tmp_path / "r", LIMITS, LOOPBACK_OK
    )
    assert result.final_url == server.at("/r/3")
    assert [path for _, path in server.hits] == ["/r/0", "/r/1", "/r/2", "/r/3"]
    assert result.sha256 == hashlib.sha256(WAV).hexdigest()


async def test_fourth_redirect_is_refused(
    servers: Servers, sessions: SessionFactory, tmp_path: Path
) -> None:
    box: list[URL] = []
    server = await servers.start({"/r/{n}": redirect_chain(lambda: box[0], 10)})
    box.append(server.url)
    with pytest.raises(DownloadRefused) as info:
        await download_with_retries(
            sessions(),
            server.at("/r/0"),
            tmp_path / "r",
            LIMITS,
            LOOPBACK_OK,
            attempts=3,
            base_delay=0.01,
            max_delay=0.01,
        )
    assert info.value.reason == "http_status"
    assert not info.value.retryable
    assert info.value.attempts == 1
    assert "too many redirects" in info.value.detail
    # the 4th redirect answer was received but not followed
    assert [path for _, path in server.hits] == ["/r/0", "/r/1", "/r/2", "/r/3"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.wav",
        "ftp://example.com/x.wav",
        "gopher://127.0.0.1:70/_",
        "data:audio/wav;base64,UklGRg==",
    ],
)
async def test_redirect_to_forbidden_scheme(
    location: str, servers: Servers, sessions: SessionFactory, tmp_path: Path, jail: Jail
) -> None:
    async def bounce(request: web.Request) -> web.StreamResponse:
        return _redirect(302, location)

    server = await servers.start({"/f": bounce})
    with pytest.raises(DownloadRefused) as info:
        await download_to_file(sessions(), server.at("/f"), tmp_path / "f", LIMITS, LOOPBACK_OK)
    assert info.value.reason == "forbidden_scheme"
    assert not info.value.retryable
    assert len(server.hits) == 1
    assert set(jail.connects) == {("127.0.0.1", server.port)}


@pytest.mark.parametrize(
    ("location", "expected_lookups"),
    [
        ("http://evil.test:{port}/x.wav", ["evil.test"]),  # -> 10.0.0.5
        ("http://metadata.test/latest/meta-data/", ["metadata.test"]),  # -> 169.254.169.254
        ("http://both.test:{port}/x.wav", ["both.test"]),  # -> 192.168.1.1, fd00::1
        ("http://169.254.169.254/latest/meta-data/", []),
        ("http://10.0.0.5:{port}/x.wav", []),
        ("http://[::ffff:10.0.0.5]:{port}/x.wav", []),
        ("http://[fd00:ec2::254]/", []),
        ("http://0x7f.1:{port}/x.wav", []),  # non-canonical loopback: refused even if allowed
        ("http://2130706433:{port}/x.wav", []),
    ],
)
async def test_redirect_to_forbidden_address(
    *,
    location: str,
    expected_lookups: list[str],
    servers: Servers,
    sessions: SessionFactory,
    tmp_path: Path,
    jail: Jail,
) -> None:
    fake = FakeResolver(
        {
            "evil.test": ["10.0.0.5"],
            "metadata.test": ["169.254.169.254"],
            "both.test": ["192.168.1.1", "fd00::1"],
        }
    )
    holder: list[int] = []

    async def bounce(request: web.Request) -> web.StreamResponse:
        return _redirect(302, location.format(port=holder[0]))

    server = await servers.start({"/f": bounce})
    holder.append(server.port)
    probe = Probe()
    with pytest.raises(DownloadRefused) as info:
        await download_to_file(
            sessions(resolver=fake, probe=probe),
            server.at("/f"),
            tmp_path / "f",
            LIMITS,
            LOOPBACK_OK,
        )
    assert info.value.reason == "forbidden_address"
    assert not info.value.retryable
    assert "redirect" in info.value.detail
    assert fake.calls == expected_lookups
    assert len(server.hits) == 1
    assert set(jail.connects) == {("127.0.0.1", server.port)}
    assert probe.events == ["connection_created", f"headers_sent {server.at('/f')}"]


async def test_resolver_answer_is_filtered_to_allowed_addresses(
    servers: Servers, sessions: SessionFactory, tmp_path: Path, jail: Jail
) -> None:
    fake = FakeResolver({"media.test": ["10.0.0.5", "169.254.169.254", "127.0.0.1"]})
    server = await servers.start({"/f": wav_handler()})
    result = await download_to_file(
        sessions(resolver=fake),
        f"http://media.test:{server.port}/f",
        tmp_path / "f",
        LIMITS,
        LOOPBACK_OK,
    )
    assert result.sha256 == hashlib.sha256(WAV).hexdigest()
    assert set(jail.connects) == {("127.0.0.1", server.port)}


# --------------------------------------------------------------------------- refusals, no I/O

FORBIDDEN_RESOLUTIONS = [
    "10.0.0.5",
    "192.168.1.1",
    "172.16.5.4",
    "169.254.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "fd00::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "::",
    "::ffff:10.0.0.5",
    "::ffff:169.254.169.254",
    "::10.0.0.5",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::a00:5",
    "64:ff9b:1::a00:5",
    "2002:a00:5::1",
    "2002:a9fe:a9fe::1",
    "2001:0:a00:5::1",  # Teredo server 10.0.0.5
    "2001:0:808:808:0:0:5601:56fe",  # Teredo client 169.254.169.1 (inverted)
]


async def _expect_refused_without_io(
    session: aiohttp.ClientSession, url: str, dest: Path, policy: AddressPolicy
) -> None:
    with pytest.raises(ForbiddenAddressError):
        await download_to_file(session, url, dest, LIMITS, policy)
    # Straight through the session too: the connector enforces the policy on its own.
    with pytest.raises(ForbiddenAddressError):
        async with session.get(url):
            pass


@pytest.mark.parametrize("policy", [STRICT, LOOPBACK_OK], ids=["strict", "loopback-allowed"])
@pytest.mark.parametrize("address", FORBIDDEN_RESOLUTIONS)
async def test_name_resolving_to_forbidden_address_never_connects(
    address: str, policy: AddressPolicy, sessions: SessionFactory, tmp_path: Path, jail: Jail
) -> None:
    fake = FakeResolver({"evil.test": [address]})
    probe = Probe()
    session = sessions(policy=policy, resolver=fake, probe=probe)
    await _expect_refused_without_io(session, "http://evil.test:8080/a.wav", tmp_path / "a", policy)
    assert fake.calls == ["evil.test", "evil.test"]
    assert jail.connects == []
    assert probe.events == []
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/a.wav",
        "http://192.168.1.1/a.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/a.wav",
        "http://0.0.0.0:8080/a.wav",
        "http://[fd00::1]/a.wav",
        "http://[fe80::1]/a.wav",
        "http://[::ffff:10.0.0.5]/a.wav",
        "http://[64:ff9b::a9fe:a9fe]/a.wav",
        "http://[2002:a00:5::1]/a.wav",
        "http://[2001:0:a00:5::1]/a.wav",
        "http://0xa9.0xfe.0xa9.0xfe/a.wav",
        "http://167772165/a.wav",
    ],
)
@pytest.mark.parametrize("policy", [STRICT, LOOPBACK_OK], ids=["strict", "loopback-allowed"])
async def test_forbidden_ip_literal_never_connects(
    url: str, policy: AddressPolicy, sessions: SessionFactory, tmp_path: Path, jail: Jail
) -> None:
    fake = FakeResolver()
    probe = Probe()
    await _expect_refused_without_io(
        sessions(policy=policy, resolver=fake, probe=probe), url, tmp_path / "a", policy
    )
    assert fake.calls == []
    assert jail.connects == []
    assert probe.events == []


async def test_loopback_forms_never_reach_the_canary_when_not_allowed(
    canaries: dict[str, Canary], sessions: SessionFactory, tmp_path: Path, jail: Jail
) -> None:
    v4 = canaries["127.0.0.1"]
    p = v4.port
    urls = [
        f"http://127.0.0.1:{p}/",
        f"http://127.1:{p}/",
        f"http://2130706433:{p}/",
        f"http://0x7f.0.0.1:{p}/",
        f"http://0x7f.1:{p}/",
        f"http://0177.0.0.1:{p}/",
        f"http://127.0.0.1.:{p}/",
        f"http://0:{p}/",
        f"http://0.0.0.0:{p}/",
        f"http://[::ffff:127.0.0.1]:{p}/",
        f"http://[::ffff:7f00:1]:{p}/",
        f"http://localhost.test:{p}/",
        f"http://evil.test:{p}/",
    ]
    v6 = canaries.get("::1")
    if v6 is not None:
        urls += [f"http://[::1]:{v6.port}/", f"http://evil6.test:{v6.port}/"]
    fake = FakeResolver(
        {"localhost.test": ["127.0.0.1"], "evil.test": ["127.0.0.1", "::1"], "evil6.test": ["::1"]}
    )
    probe = Probe()
    session = sessions(policy=STRICT, resolver=fake, probe=probe)
    for url in urls:
        await _expect_refused_without_io(session, url, tmp_path / "x", STRICT)

    assert jail.connects == []
    assert probe.events == []
    assert all(c.accepted == 0 for c in canaries.values())
    # The canary is live: a deliberate connection is seen.
    _, writer = await asyncio.open_connection("127.0.0.1", p)
    writer.close()
    await asyncio.wait_for(v4.done.wait(), 5)
    assert v4.accepted == 1


# --------------------------------------------------------------------------- inner layers


async def _unfiltered_resolve(
    self: GuardedResolver, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
) -> list[ResolveResult]:
    """Simulates a broken resolver layer: passes every answer through unchecked."""
    inner = self._inner
    assert inner is not None
    return await inner.resolve(host, port, family)


async def test_socket_factory_refuses_before_connect_if_resolver_layer_fails(
    monkeypatch: pytest.MonkeyPatch,
    canaries: dict[str, Canary],
    sessions: SessionFactory,
    jail: Jail,
) -> None:
    monkeypatch.setattr(GuardedResolver, "resolve", _unfiltered_resolve)
    canary = canaries["127.0.0.1"]
    fake = FakeResolver({"evil.test": ["127.0.0.1"]})
    session = sessions(policy=STRICT, resolver=fake)
    with pytest.raises(ForbiddenAddressError, match=r"refusing to connect to 127\.0\.0\.1"):
        async with session.get(f"http://evil.test:{canary.port}/"):
            pass
    assert fake.calls == ["evil.test"]
    assert jail.connects == []
    assert canary.accepted == 0


async def test_peer_check_closes_before_sending_if_earlier_layers_fail(
    monkeypatch: pytest.MonkeyPatch,
    canaries: dict[str, Canary],
    sessions: SessionFactory,
    jail: Jail,
) -> None:
    def plain_socket(self: GuardedConnector, addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        return socket.socket(family=family, type=type_, proto=proto)

    monkeypatch.setattr(GuardedResolver, "resolve", _unfiltered_resolve)
    monkeypatch.setattr(GuardedConnector, "_open_checked_socket", plain_socket)
    canary = canaries["127.0.0.1"]
    probe = Probe()
    session = sessions(
        policy=STRICT, resolver=FakeResolver({"evil.test": ["127.0.0.1"]}), probe=probe
    )
    with pytest.raises(ForbiddenAddressError, match=r"connected peer 127\.0\.0\.1 is forbidden"):
        async with session.get(f"http://evil.test:{canary.port}/"):
            pass
    await asyncio.wait_for(canary.done.wait(), 5)
    assert canary.accepted == 1
    assert canary.received == [b""]  # closed before a single request byte was written
    assert "headers_sent" not in " ".join(probe.events)
    assert jail.connects == [("127.0.0.1", canary.port)]


# --------------------------------------------------------------------------- misc


async def test_initial_forbidden_scheme_is_refused_without_io(
    sessions: SessionFactory, tmp_path: Path, jail: Jail
) -> None:
    for url in ["file:///etc/passwd", "ftp://127.0.0.1/a.wav"]:
        with pytest.raises(DownloadRefused) as info:
            await download_to_file(sessions(), url, tmp_path / "a", LIMITS, LOOPBACK_OK)
        assert info.value.reason == "forbidden_scheme"
    assert jail.connects == []


async def test_unguarded_session_is_rejected(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(TypeError, match="make_session"):
            await download_to_file(plain, "http://127.0.0.1/", tmp_path / "a", LIMITS, LOOPBACK_OK)
