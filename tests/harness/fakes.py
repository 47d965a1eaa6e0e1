"""Test doubles for what the service takes injected: a clock and a DNS resolver.

:class:`FakeResolver` maps fake host names to fixed addresses and never consults real DNS:
it lets a test point a name at a forbidden address (private, metadata, loopback) and prove
the guard refuses it without a single packet leaving loopback.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class FakeClock:
    """A clock (``() -> seconds``) that moves only when the test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []
        self.families: list[socket.AddressFamily] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
    ) -> list[ResolveResult]:
        self.calls.append(host)
        self.families.append(family)
        host = host.lower()  # DNS names are case-insensitive
        if host not in self.answers:
            raise OSError(f"fake resolver: unknown host {host} (family {family})")
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for ip in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True
