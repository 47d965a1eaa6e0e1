"""Loopback-only networking for tests: free ports, the network jail, canary listeners.

The jail (:func:`confine_to_loopback`, the ``jail`` fixture of tests/integration/conftest.py)
patches ``socket.socket.connect``/``connect_ex`` and ``socket.getaddrinfo``: a connect to a
non-loopback address or a lookup of a non-numeric name is recorded and refused before it
reaches the OS. Canaries are listeners on loopback that a refusal test expects nobody to reach.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@dataclass
class Jail:
    """What the patched socket functions saw: every connect, and what they refused."""

    connects: list[tuple[str, int]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


def confine_to_loopback(monkeypatch: pytest.MonkeyPatch) -> Jail:
    """Patch the socket module (undone with ``monkeypatch``) so nothing leaves loopback."""
    state = Jail()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: Any) -> None:
        if isinstance(address, tuple):
            host = str(address[0])
            state.connects.append((host, int(address[1])))
            if not is_loopback(host):
                state.blocked.append(f"connect {address!r}")
                raise PermissionError(errno.EACCES, f"test jail: non-loopback {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None:
            name = host.decode() if isinstance(host, bytes) else str(host)
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                state.blocked.append(f"getaddrinfo {name!r}")
                raise socket.gaierror(
                    socket.EAI_NONAME, f"test jail: no DNS for {name!r}"
                ) from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return state


@dataclass
class Canary:
    """A loopback listener that must accept nothing; what it did accept is recorded."""

    port: int
    accepted: int = 0
    received: list[bytes] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def start_canary(host: str) -> tuple[Canary, asyncio.Server]:
    canary = Canary(port=0)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        canary.accepted += 1
        try:
            data = await asyncio.wait_for(reader.read(65536), 3)
        except TimeoutError:
            data = b"<no EOF>"
        canary.received.append(data)
        writer.close()
        canary.done.set()

    server = await asyncio.start_server(on_connection, host, 0)
    canary.port = server.sockets[0].getsockname()[1]
    return canary, server
