"""Network guard for the archiver's downloads: which URLs and peer addresses may be fetched.

The URLs come from untrusted webhook payloads, so every hop is checked in layers, each of
which fails closed on its own:

1. ``AddressPolicy.check_url`` - scheme (http/https only), host allow-list, and IP-literal
   hosts in any spelling the OS would accept (``127.1``, ``2130706433``, ``0x7f.1``,
   ``0177.0.0.1``, ``127.0.0.1.``): non-canonical IPv4 spellings are always refused, canonical
   literals go through the address policy. aiohttp never calls a resolver for IP literals,
   so this check is the one that covers them.
2. ``GuardedResolver`` - wraps the real (or an injected) resolver and drops every forbidden
   address from its answer; raises ``ForbiddenAddressError`` when nothing is left.
3. ``GuardedConnector`` - a ``TCPConnector`` that re-runs the URL check in ``connect()``,
   checks the exact socket address right before ``connect(2)`` (via aiohttp's public
   ``socket_factory`` hook, so no packet leaves for a forbidden address), and after the
   connection is established checks ``peername`` of the transport; a forbidden or unknown
   peer closes the connection before any request byte is written.
"""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, get_args

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RefusalReason = Literal[
    "forbidden_address",
    "forbidden_scheme",
    "too_large",
    "bad_content_type",
    "http_status",
    "timeout",
    "network",
]
REFUSAL_REASONS: Final[frozenset[str]] = frozenset(get_args(RefusalReason))
_RETRYABLE_BY_DEFAULT: Final[frozenset[str]] = frozenset({"timeout", "network"})

ALLOWED_SCHEMES: Final[frozenset[str]] = frozenset({"http", "https"})


class DownloadRefused(Exception):  # noqa: N818 - the name is the archiver's contract
    """A download that was refused or failed, classified for the caller.

    ``retryable`` defaults to True for ``timeout`` and ``network`` and False otherwise;
    ``http_status`` refusals set it per status. ``attempts`` is how many attempts were made
    (1 for a single ``download_to_file``; set by ``download_with_retries`` on the final one).
    """

    reason: RefusalReason
    detail: str
    retryable: bool
    status: int | None
    retry_after: float | None
    attempts: int

    def __init__(
        self,
        reason: RefusalReason,
        detail: str,
        *,
        retryable: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        self.retryable = reason in _RETRYABLE_BY_DEFAULT if retryable is None else retryable
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class ForbiddenAddressError(DownloadRefused):
    """The host or the address it resolves/connects to is not allowed (permanent)."""

    def __init__(self, detail: str) -> None:
        super().__init__("forbidden_address", detail, retryable=False)


class ForbiddenSchemeError(DownloadRefused):
    """The URL scheme is not http or https (permanent)."""

    def __init__(self, detail: str) -> None:
        super().__init__("forbidden_scheme", detail, retryable=False)


# --------------------------------------------------------------------------- address policy

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order; the first match names the refusal. ``is_global`` is the catch-all after.
_FORBIDDEN_V4: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_V4("0.0.0.0/8"), "'this network' 0.0.0.0/8 (incl. unspecified)"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("169.254.169.254/32"), "link-local cloud metadata endpoint"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT (RFC 6598)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (_V4("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_V4("198.18.0.0/15"), "benchmarking (RFC 2544)"),
    (_V4("192.88.99.0/24"), "deprecated 6to4 relay anycast"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "limited broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_LOOPBACK_V4: Final = _V4("127.0.0.0/8")
_LOOPBACK_V6: Final = ipaddress.IPv6Address("::1")

_MAPPED: Final = _V6("::ffff:0:0/96")
_COMPAT: Final = _V6("::/96")
_NAT64: Final = _V6("64:ff9b::/96")
_NAT64_LOCAL: Final = _V6("64:ff9b:1::/48")
_SIX_TO_FOUR: Final = _V6("2002::/16")
_TEREDO: Final = _V6("2001::/32")

_FORBIDDEN_V6: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("fc00::/7"), "unique local address (ULA)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("2001:2::/48"), "benchmarking"),
    (_V6("2001::/23"), "IETF protocol assignments"),
    (_V6("::/8"), "reserved"),
)


def _v4_refusal(addr: ipaddress.IPv4Address, *, allow_loopback: bool) -> str | None:
    if addr in _LOOPBACK_V4:
        return None if allow_loopback else "loopback"
    for network, label in _FORBIDDEN_V4:
        if addr in network:
            return label
    # Belt and braces: whatever the table missed but ipaddress knows about.
    if (
        addr.is_private
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    ):
        return "not globally routable"
    return None


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """Every IPv4 address an IPv6 address carries, labelled by the embedding form."""
    value = int(addr)
    low32 = value & 0xFFFFFFFF
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if addr in _MAPPED:
        found.append(("IPv4-mapped", ipaddress.IPv4Address(low32)))
    if addr in _COMPAT:
        found.append(("IPv4-compatible", ipaddress.IPv4Address(low32)))
    if addr in _NAT64:
        found.append(("NAT64", ipaddress.IPv4Address(low32)))
    if addr in _NAT64_LOCAL:
        # /96 layout; other RFC 6052 layouts are possible in this prefix, but the whole
        # local-use /48 is refused anyway, so this is only for a precise detail.
        found.append(("NAT64 local-use", ipaddress.IPv4Address(low32)))
    if addr in _SIX_TO_FOUR:
        found.append(("6to4", ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)))
    if addr in _TEREDO:
        found.append(("Teredo server", ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF)))
        found.append(("Teredo client", ipaddress.IPv4Address(~value & 0xFFFFFFFF)))
    return found


def _v6_refusal(addr: ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    if addr.scope_id:
        return "IPv6 address with a zone id"
    if addr.is_unspecified:
        return "unspecified"
    if addr == _LOOPBACK_V6:
        return None if allow_loopback else "loopback"
    # Embedded IPv4 is checked without the loopback allowance: that allowance is for the
    # plain test addresses 127.0.0.0/8 and ::1 only.
    for form, inner in embedded_ipv4(addr):
        reason = _v4_refusal(inner, allow_loopback=False)
        if reason is not None:
            return f"{form} form of {inner} ({reason})"
    if addr in _COMPAT:
        return "deprecated IPv4-compatible address"
    if addr in _NAT64_LOCAL:
        return "local-use NAT64 prefix (RFC 8215)"
    if addr in _TEREDO:
        return "Teredo tunnel address"
    if addr in _MAPPED or addr in _NAT64 or addr in _SIX_TO_FOUR:
        # The embedded IPv4 (the address actually reached) is globally routable.
        return None
    if addr.is_loopback:
        return "loopback"
    for network, label in _FORBIDDEN_V6:
        if addr in network:
            return label
    if (
        addr.is_link_local
        or addr.is_site_local
        or addr.is_multicast
        or addr.is_private
        or addr.is_reserved
        or not addr.is_global
    ):
        return "not globally routable"
    return None


def address_refusal(address: IPAddress | str, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be contacted, or None if it may.

    ``allow_loopback`` (tests only) permits 127.0.0.0/8 and ::1 and nothing else.
    """
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return f"unparseable address {address!r}"
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_refusal(address, allow_loopback=allow_loopback)
    return _v6_refusal(address, allow_loopback=allow_loopback)


_NUMERIC_LABEL: Final = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


def parse_ip_literal(host: str) -> tuple[IPAddress, bool] | None:
    """Interpret ``host`` the way the OS resolver would if it is an IP literal.

    Returns ``(address, canonical)`` for IP literals, where ``canonical`` is False for the
    legacy IPv4 spellings ``inet_aton`` accepts (``127.1``, ``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``, trailing dots ...); None for a host name. Raises ``ValueError`` for a host
    that is neither: malformed IPv6, or ending in a numeric label that is not a valid IPv4
    address (the WHATWG URL rule; such hosts are never legitimate DNS names).
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        return ipaddress.IPv6Address(host), True  # ValueError if malformed
    try:
        return ipaddress.IPv4Address(host), True
    except ValueError:
        pass
    candidate = host.rstrip(".")
    try:
        packed = socket.inet_aton(candidate)
    except (OSError, ValueError):
        packed = None
    if packed is not None:
        return ipaddress.IPv4Address(packed), False
    if _NUMERIC_LABEL.fullmatch(candidate.rsplit(".", 1)[-1]):
        raise ValueError(f"host {host!r} ends in a number but is not an IPv4 address")
    return None


def _normalise_hostname(host: str) -> str:
    return host.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which hosts and addresses downloads may reach.

    ``allow_loopback`` is a TEST-ONLY switch permitting 127.0.0.0/8 and ::1 (never private,
    link-local or metadata addresses). ``allowed_hosts``, when given, is an allow-list of host
    names (ASCII/punycode, exact match, case-insensitive, trailing dot ignored); any other
    host is refused. Allowed hosts must still resolve to allowed addresses.
    """

    allow_loopback: bool = False
    allowed_hosts: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.allowed_hosts is not None:
            normalised = frozenset(_normalise_hostname(h) for h in self.allowed_hosts)
            object.__setattr__(self, "allowed_hosts", normalised)

    def refusal_reason(self, address: IPAddress | str) -> str | None:
        """Why ``address`` is forbidden under this policy, or None if it is allowed."""
        return address_refusal(address, allow_loopback=self.allow_loopback)

    def is_allowed(self, address: IPAddress | str) -> bool:
        return self.refusal_reason(address) is None

    def check_address(self, address: IPAddress | str) -> None:
        """Raise ``ForbiddenAddressError`` unless ``address`` is allowed."""
        reason = self.refusal_reason(address)
        if reason is not None:
            raise ForbiddenAddressError(f"address {address} is forbidden: {reason}")

    def check_host(self, host: str) -> IPAddress | None:
        """Check a URL host; return its address if it is an IP literal, else None.

        Raises ``ForbiddenAddressError`` for hosts outside the allow-list, malformed or
        non-canonical numeric hosts, and forbidden IP literals.
        """
        if not host or any(c.isspace() or not c.isprintable() for c in host):
            raise ForbiddenAddressError(f"malformed host {host!r}")
        if self.allowed_hosts is not None:
            bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if _normalise_hostname(bare) not in self.allowed_hosts:
                raise ForbiddenAddressError(f"host {host!r} is not in the allow-list")
        try:
            literal = parse_ip_literal(host)
        except ValueError as exc:
            raise ForbiddenAddressError(str(exc)) from exc
        if literal is None:
            return None
        address, canonical = literal
        reason = self.refusal_reason(address)
        if not canonical:
            meaning = f"means {address}" + (f", {reason}" if reason else "")
            raise ForbiddenAddressError(f"non-canonical IPv4 literal {host!r} ({meaning})")
        if reason is not None:
            raise ForbiddenAddressError(f"address {address} is forbidden: {reason}")
        return address

    def check_url(self, url: str | URL) -> URL:
        """Check scheme and host of ``url``; return it parsed, without fragment."""
        if isinstance(url, str):
            try:
                url = URL(url)
            except (ValueError, TypeError) as exc:
                raise ForbiddenAddressError(f"malformed URL {url!r}: {exc}") from exc
        scheme = url.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise ForbiddenSchemeError(f"scheme {scheme!r} is not allowed (http/https only)")
        host = url.raw_host
        if not host:
            raise ForbiddenAddressError(f"URL {str(url)!r} has no host")
        self.check_host(host)
        return url.with_fragment(None)


# --------------------------------------------------------------------------- aiohttp layer


class GuardedResolver(AbstractResolver):
    """Resolver that returns only addresses the policy allows.

    ``inner`` defaults to aiohttp's ``DefaultResolver`` (created lazily, inside the loop);
    tests inject a fake one. Host names are checked against the allow-list before the inner
    resolver is asked, and IP-literal hosts in any spelling are answered (or refused) here
    without reaching it.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    @property
    def policy(self) -> AddressPolicy:
        return self._policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        literal = self._policy.check_host(host)
        if literal is not None:
            literal_family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [
                ResolveResult(
                    hostname=host,
                    host=str(literal),
                    port=port,
                    family=literal_family,
                    proto=0,
                    flags=0,
                )
            ]
        if self._inner is None:
            self._inner = DefaultResolver()
        answers = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for answer in answers:
            reason = self._policy.refusal_reason(answer["host"])
            if reason is None:
                allowed.append(answer)
            else:
                refused.append(f"{answer['host']} ({reason})")
        if not allowed:
            detail = "; ".join(refused) if refused else "no addresses"
            raise ForbiddenAddressError(f"{host!r} resolves only to forbidden addresses: {detail}")
        return allowed

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


# Refusals noted by the socket factory during one ``GuardedConnector.connect`` call. A list
# (mutated, never rebound) so happy-eyeballs tasks, which run in copied contexts, share it.
_SOCKET_REFUSALS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "archiver_socket_refusals", default=None
)


class _RefusedSocketError(PermissionError):
    """Raised by the socket factory: aiohttp treats it as one failed connect attempt."""


class GuardedConnector(aiohttp.TCPConnector):
    """``TCPConnector`` enforcing an ``AddressPolicy`` at resolve, connect and peer level.

    Proxies are refused outright (a proxy would make the forbidden connection for us).
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: AbstractResolver | None = None,
        limit: int = 100,
        limit_per_host: int = 0,
        use_dns_cache: bool = True,
        ttl_dns_cache: int | None = 10,
    ) -> None:
        self._policy = policy
        super().__init__(
            resolver=GuardedResolver(policy, inner=resolver),
            socket_factory=self._open_checked_socket,
            limit=limit,
            limit_per_host=limit_per_host,
            use_dns_cache=use_dns_cache,
            ttl_dns_cache=ttl_dns_cache,
        )

    @property
    def policy(self) -> AddressPolicy:
        return self._policy

    def _open_checked_socket(self, addr_info: AddrInfoType) -> socket.socket:
        """aiohttp ``socket_factory``: last check of the exact address before ``connect()``."""
        family, type_, proto, _, sockaddr = addr_info
        reason = self._policy.refusal_reason(str(sockaddr[0]))
        if reason is not None:
            message = f"refusing to connect to {sockaddr[0]}: {reason}"
            refusals = _SOCKET_REFUSALS.get()
            if refusals is not None:
                refusals.append(message)
            raise _RefusedSocketError(errno.EACCES, message)
        return socket.socket(family=family, type=type_, proto=proto)

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        if req.proxy is not None:
            raise ForbiddenAddressError("proxies are not allowed for archiver downloads")
        self._policy.check_url(req.url)
        refusals: list[str] = []
        token = _SOCKET_REFUSALS.set(refusals)
        try:
            conn = await super().connect(req, traces, timeout)
        except aiohttp.ClientConnectorError as exc:
            if refusals:
                raise ForbiddenAddressError("; ".join(refusals)) from exc
            raise
        finally:
            _SOCKET_REFUSALS.reset(token)
        self._verify_peer(conn)
        return conn

    def _verify_peer(self, conn: Connection) -> None:
        """Fail closed unless the connected peer is an allowed address (nothing sent yet)."""
        transport = conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        host = peer[0] if isinstance(peer, tuple) and peer else None
        if not isinstance(host, str):
            conn.close()
            raise ForbiddenAddressError("cannot determine the connected peer address")
        reason = self._policy.refusal_reason(host)
        if reason is not None:
            conn.close()
            raise ForbiddenAddressError(f"connected peer {host} is forbidden: {reason}")
