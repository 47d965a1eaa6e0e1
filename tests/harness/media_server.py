"""Local HTTP servers on 127.0.0.1 that serve real media (a WAV and a PNG made here).

The ``servers`` fixture of tests/integration/conftest.py hands out a :class:`Servers`;
:class:`Media` puts routes on one of them and counts hits per path.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import time
import wave
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_wav(seconds: float = 2.0, rate: int = 22050) -> bytes:
    """A real mono 16-bit PCM WAV: a 440 Hz tone."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        frames += struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return buf.getvalue()


def make_png(width: int = 16, height: int = 16) -> bytes:
    """A real RGB PNG (a gradient)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 16 % 256, y * 16 % 256, 128))
        for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


WAV = make_wav()
PNG = make_png()


def wav_handler(content_type: str = "audio/wav", body: bytes = WAV) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


def png_handler() -> Handler:
    return wav_handler("image/png", PNG)


@dataclass
class Server:
    url: URL
    hits: list[tuple[float, str]]

    @property
    def port(self) -> int:
        port = self.url.port
        assert port is not None
        return port

    def at(self, path: str) -> str:
        return f"{self.url}{path}"


class Servers:
    """Starts servers on 127.0.0.1:0; :meth:`close` (the fixture's teardown) stops them all."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.raw: list[asyncio.Server] = []
        self.release = asyncio.Event()  # set at teardown: lets stalled handlers finish

    async def start(self, routes: dict[str, Handler]) -> Server:
        hits: list[tuple[float, str]] = []

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            hits.append((time.monotonic(), request.path_qs))
            return await handler(request)

        app = web.Application(middlewares=[record])
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return Server(URL(f"http://127.0.0.1:{port}"), hits)

    async def start_raw(self, response: bytes) -> Server:
        """A hand-written HTTP/1.1 server answering every request with ``response``."""
        hits: list[tuple[float, str]] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            hits.append((time.monotonic(), head.split(b" ", 2)[1].decode()))
            writer.write(response)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.raw.append(server)
        port = server.sockets[0].getsockname()[1]
        return Server(URL(f"http://127.0.0.1:{port}"), hits)

    async def close(self) -> None:
        self.release.set()
        for runner in self.runners:
            await runner.cleanup()
        for server in self.raw:
            server.close()
            await server.wait_closed()


class Media:
    """Route handlers for the local file server, with per-path hit counts."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.hits: Counter[str] = Counter()
        self.server: Server | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return self.server.at(path)

    async def start(self, routes: dict[str, Handler]) -> Media:
        def counted(path: str, handler: Handler) -> Handler:
            async def wrapped(request: web.Request) -> web.StreamResponse:
                self.hits[path] += 1
                return await handler(request)
            return wrapped

        self.server = await self.servers.start({p: counted(p, h) for p, h in routes.items()})
        return self
