"""A TCP proxy on loopback that a test can cut and restore: a network partition on demand.

It runs its own event loop in a thread, so it keeps forwarding while the test's
loop (or a blocking harness call such as ``KafkaBroker.start``) is busy.

* ``cut()``: every connection, open or new, is black-holed: bytes are read and
  dropped, nothing is answered, nothing is closed (what a partition looks like:
  requests time out, no reset arrives).
* ``restore()``: black-holed connections are reset (as TCP would find out once
  the path is back) and new connections are forwarded again.

Only loopback: it listens on 127.0.0.1 and connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

LOOPBACK = "127.0.0.1"
_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, listen_port: int, upstream_port: int) -> None:
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._cut = False
        self._connections: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.listen_port}"

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._set_cut(cut=True))

    def restore(self) -> None:
        self._call(self._set_cut(cut=False))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.listen_port,
                                                  reuse_address=True)

    async def _set_cut(self, *, cut: bool) -> None:
        was_cut, self._cut = self._cut, cut
        if was_cut and not cut:
            for writer in list(self._connections):
                writer.transport.abort()
            self._connections.clear()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._connections.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            if not self._cut:
                upstream = await asyncio.open_connection(LOOPBACK, self.upstream_port)
                self._connections.add(upstream[1])
            if upstream is None:
                await self._blackhole(reader)
                return
            up_reader, up_writer = upstream
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except OSError:
            pass
        finally:
            for side in (writer, upstream[1] if upstream else None):
                if side is not None:
                    self._connections.discard(side)
                    side.transport.abort()

    async def _blackhole(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(_CHUNK):
            pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                if self._cut:
                    continue  # dropped on the floor, like packets on a cut link
                writer.write(data)
                await writer.drain()
        writer.transport.abort()  # one side ended: end the other (no half-open pairs)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
