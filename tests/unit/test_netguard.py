"""Unit tests for the archiver's address policy and guarded resolver (no network at all)."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.consumers.archiver.netguard import (
    AddressPolicy,
    DownloadRefused,
    ForbiddenAddressError,
    ForbiddenSchemeError,
    GuardedResolver,
    address_refusal,
    parse_ip_literal,
)
from tests.harness.fakes import FakeResolver

if TYPE_CHECKING:
    from collections.abc import Callable

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

# --------------------------------------------------------------------------- address table

REFUSED = [
    # IPv4
    "0.0.0.0",
    "0.1.2.3",
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.5",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "192.0.0.9",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "198.19.255.255",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6
    "::",
    "::1",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",
    "3fff::1",
    "100::1",
    # embedded IPv4 forms of forbidden addresses
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.5",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "::10.0.0.5",
    "::8.8.8.8",  # IPv4-compatible is deprecated: refused whatever it embeds
    "64:ff9b::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::10.0.0.5",
    "64:ff9b:1::808:808",  # local-use NAT64 prefix: refused whatever it embeds
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::",
    "2002:c0a8:101::1",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "2001:0:a00:5::1",  # Teredo, server 10.0.0.5
    "2001:0:808:808:0:0:f7f7:f7f7",  # Teredo with global ends: still refused
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",
    "100.128.0.1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_addresses(address: str) -> None:
    assert address_refusal(address) is not None
    assert not AddressPolicy().is_allowed(address)
    with pytest.raises(ForbiddenAddressError) as info:
        AddressPolicy().check_address(address)
    assert info.value.reason == "forbidden_address"
    assert info.value.retryable is False


@pytest.mark.parametrize("address", ALLOWED)
def test_allowed_addresses(address: str) -> None:
    assert address_refusal(address) is None
    AddressPolicy().check_address(address)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("169.254.169.254", "metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("10.0.0.5", "RFC 1918"),
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
        ("2002:a00:5::1", "6to4 form of 10.0.0.5"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo client form of 10.0.0.1"),
        ("fd00::1", "unique local"),
    ],
)
def test_refusal_names_the_range(address: str, fragment: str) -> None:
    reason = address_refusal(address)
    assert reason is not None
    assert fragment in reason


def test_unparseable_address_is_refused() -> None:
    assert address_refusal("not-an-ip") is not None


# --------------------------------------------------------------------------- loopback switch


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1"])
def test_allow_loopback_permits_loopback_only(address: str) -> None:
    assert AddressPolicy(allow_loopback=True).is_allowed(address)
    assert not AddressPolicy().is_allowed(address)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.5",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",  # the allowance is for 127.0.0.0/8 and ::1 as such only
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
    ],
)
def test_allow_loopback_keeps_everything_else_refused(address: str) -> None:
    assert not AddressPolicy(allow_loopback=True).is_allowed(address)


# --------------------------------------------------------------------------- host spellings


@pytest.mark.parametrize(
    ("host", "means"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("127.0.0.01", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("167772165", "10.0.0.5"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
    ],
)
def test_ip_literal_spellings_are_normalised_like_inet_aton(host: str, means: str) -> None:
    parsed = parse_ip_literal(host)
    assert parsed is not None
    assert parsed[0] == ipaddress.ip_address(means)
    with pytest.raises(ForbiddenAddressError):
        AddressPolicy().check_host(host)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "0177.0.0.1"])
def test_non_canonical_loopback_spellings_refused_even_with_loopback_allowed(host: str) -> None:
    with pytest.raises(ForbiddenAddressError, match="non-canonical"):
        AddressPolicy(allow_loopback=True).check_host(host)


def test_non_canonical_spelling_of_a_global_address_is_refused_too() -> None:
    # 134744072 == 8.8.8.8: allowed by the address policy, but never a legitimate spelling.
    with pytest.raises(ForbiddenAddressError, match=r"non-canonical.*8\.8\.8\.8"):
        AddressPolicy().check_host("134744072")


@pytest.mark.parametrize("host", ["08.1.1.1", "1.2.3.4294967296", "example.0x", "a.b.123"])
def test_hosts_ending_in_a_number_that_is_not_ipv4_are_refused(host: str) -> None:
    with pytest.raises(ForbiddenAddressError):
        AddressPolicy().check_host(host)


@pytest.mark.parametrize("host", ["", "1.2.3.4 x", "evil.test\n", "a\x00b"])
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(ForbiddenAddressError):
        AddressPolicy().check_host(host)


@pytest.mark.parametrize("host", ["example.com", "cdn.example.org", "cafe.be", "xn--bcher-kva.de"])
def test_host_names_pass_the_host_check(host: str) -> None:
    assert parse_ip_literal(host) is None
    assert AddressPolicy().check_host(host) is None


def test_canonical_global_literal_is_returned() -> None:
    assert AddressPolicy().check_host("8.8.8.8") == V4("8.8.8.8")


# --------------------------------------------------------------------------- URL / scheme


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.mp3",
        "gopher://example.com/",
        "data:audio/wav;base64,AAAA",
        "javascript:alert(1)",
        "ws://example.com/",
        "unix:///var/run/docker.sock",
    ],
)
def test_forbidden_schemes(url: str) -> None:
    with pytest.raises(ForbiddenSchemeError) as info:
        AddressPolicy().check_url(url)
    assert info.value.reason == "forbidden_scheme"
    assert info.value.retryable is False


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http:///no-host",
    ],
)
def test_forbidden_url_hosts(url: str) -> None:
    with pytest.raises(ForbiddenAddressError):
        AddressPolicy().check_url(url)


def test_check_url_accepts_http_and_https_and_drops_fragment() -> None:
    policy = AddressPolicy()
    assert (
        str(policy.check_url("HTTPS://CDN.Example.com/a.mp3#x")) == "https://cdn.example.com/a.mp3"
    )
    assert policy.check_url("http://8.8.8.8:8080/a").port == 8080


def test_allowed_hosts_is_exact_and_case_insensitive() -> None:
    policy = AddressPolicy(allowed_hosts=frozenset({"CDN.Example.com"}))
    assert policy.check_host("cdn.example.com") is None
    assert policy.check_host("cdn.example.com.") is None
    policy.check_url("https://CDN.EXAMPLE.COM/song.mp3")
    for host in ["example.com", "evil.cdn.example.com", "cdn.example.com.evil.test", "8.8.8.8"]:
        with pytest.raises(ForbiddenAddressError, match="allow-list"):
            policy.check_host(host)


def test_refusal_reason_validation() -> None:
    with pytest.raises(ValueError, match="unknown refusal reason"):
        DownloadRefused("nope", "x")  # type: ignore[arg-type]
    assert DownloadRefused("timeout", "x").retryable
    assert DownloadRefused("network", "x").retryable
    assert not DownloadRefused("too_large", "x").retryable
    assert DownloadRefused("http_status", "x", retryable=True, status=503).retryable
    assert str(DownloadRefused("too_large", "big")) == "too_large: big"


# --------------------------------------------------------------------------- hypothesis
# Embedding helpers written independently of netguard (plain bit arithmetic per the RFCs).


def mapped(v4: V4) -> V6:
    return V6((0xFFFF << 32) | int(v4))


def compat(v4: V4) -> V6:
    return V6(int(v4))


def nat64(v4: V4) -> V6:
    return V6((0x0064FF9B << 96) | int(v4))


def nat64_local(v4: V4) -> V6:
    return V6((0x0064FF9B0001 << 80) | int(v4))


def nat64_local_48(v4: V4) -> V6:
    # RFC 6052 /48 layout: v4 bits 0..15 at 48..63, bits 16..31 at 72..87 ('u' octet skipped).
    value = int(v4)
    return V6((0x0064FF9B0001 << 80) | ((value >> 16) << 64) | ((value & 0xFFFF) << 40))


def six_to_four(v4: V4) -> V6:
    return V6((0x2002 << 112) | (int(v4) << 80) | 0x1)


def teredo_server(v4: V4) -> V6:
    client = int(V4("8.8.4.4")) ^ 0xFFFFFFFF
    return V6((0x20010000 << 96) | (int(v4) << 64) | (0x8000 << 48) | (0xFFFF << 32) | client)


def teredo_client(v4: V4) -> V6:
    server = int(V4("8.8.8.8"))
    return V6((0x20010000 << 96) | (server << 64) | (int(v4) ^ 0xFFFFFFFF))


EMBEDDINGS: list[Callable[[V4], V6]] = [
    mapped,
    compat,
    nat64,
    nat64_local,
    nat64_local_48,
    six_to_four,
    teredo_server,
    teredo_client,
]

FORBIDDEN_V4_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]

forbidden_v4 = st.one_of(
    st.one_of(*(st.ip_addresses(network=net) for net in FORBIDDEN_V4_NETWORKS)),
    st.ip_addresses(v=4).filter(
        lambda a: a.is_private or a.is_loopback or a.is_link_local or not a.is_global
    ),
)
global_v4 = st.one_of(
    st.ip_addresses(network="8.8.0.0/16"),
    st.ip_addresses(network="1.1.0.0/16"),
    st.ip_addresses(network="93.184.0.0/16"),
)


@settings(max_examples=300)
@given(v4=forbidden_v4, allow_loopback=st.booleans())
def test_forbidden_ipv4_refused_plain_and_in_every_embedded_form(
    v4: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool
) -> None:
    assert isinstance(v4, V4)
    policy = AddressPolicy(allow_loopback=allow_loopback)
    if not (allow_loopback and v4.is_loopback):
        assert not policy.is_allowed(v4)
    for embed in EMBEDDINGS:
        address = embed(v4)
        if allow_loopback and address == V6("::1"):
            continue  # "IPv4-compatible 0.0.0.1" *is* ::1, which the test allowance permits
        assert not policy.is_allowed(address), (embed.__name__, v4, address)
        assert not policy.is_allowed(str(address))


@settings(max_examples=300)
@given(v4=global_v4)
def test_global_ipv4_allowed_plain_and_through_global_translators(
    v4: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert isinstance(v4, V4)
    policy = AddressPolicy()
    assert policy.is_allowed(v4)
    assert policy.check_host(str(v4)) == v4
    # Forms that reach the same global IPv4 address are allowed ...
    for embed in (mapped, nat64, six_to_four):
        assert policy.is_allowed(embed(v4)), (embed.__name__, v4)
    # ... deprecated / local-use / tunnel forms are not, whatever they carry.
    for embed in (compat, nat64_local, teredo_client):
        assert not policy.is_allowed(embed(v4)), (embed.__name__, v4)


@given(value=st.integers(min_value=0, max_value=2**32 - 1))
def test_decimal_spelling_of_any_ipv4_is_never_accepted(value: int) -> None:
    with pytest.raises(ForbiddenAddressError):
        AddressPolicy().check_host(str(value))
    parsed = parse_ip_literal(str(value))
    assert parsed is not None
    assert parsed[0] == V4(value)


# --------------------------------------------------------------------------- resolver


async def test_resolver_drops_forbidden_answers() -> None:
    fake = FakeResolver({"mixed.test": ["10.0.0.5", "8.8.8.8", "169.254.169.254", "2001:4860::1"]})
    resolver = GuardedResolver(AddressPolicy(), inner=fake)
    answers = await resolver.resolve("mixed.test", 443, socket.AF_UNSPEC)
    assert [a["host"] for a in answers] == ["8.8.8.8", "2001:4860::1"]
    assert fake.calls == ["mixed.test"]
    await resolver.close()
    assert fake.closed


@pytest.mark.parametrize(
    "ips",
    [
        ["10.0.0.5"],
        ["127.0.0.1", "::1"],
        ["169.254.169.254", "fd00::1"],
        ["::ffff:10.0.0.5", "64:ff9b::a9fe:a9fe", "2002:a00:5::1"],
        [],
    ],
)
async def test_resolver_refuses_when_nothing_is_left(ips: list[str]) -> None:
    resolver = GuardedResolver(AddressPolicy(), inner=FakeResolver({"evil.test": ips}))
    with pytest.raises(ForbiddenAddressError, match=r"evil\.test"):
        await resolver.resolve("evil.test", 80)


@pytest.mark.parametrize("host", ["127.1", "0x7f.1", "2130706433", "10.0.0.5", "::1"])
async def test_resolver_never_passes_ip_literals_to_the_inner_resolver(host: str) -> None:
    fake = FakeResolver({})
    with pytest.raises(ForbiddenAddressError):
        await GuardedResolver(AddressPolicy(), inner=fake).resolve(host, 80)
    assert fake.calls == []


async def test_resolver_answers_allowed_literals_itself() -> None:
    fake = FakeResolver({})
    answers = await GuardedResolver(AddressPolicy(allow_loopback=True), inner=fake).resolve(
        "127.0.0.1", 8080
    )
    assert [(a["host"], a["port"]) for a in answers] == [("127.0.0.1", 8080)]
    assert fake.calls == []


async def test_resolver_checks_allow_list_before_resolving() -> None:
    fake = FakeResolver({"other.test": ["8.8.8.8"], "cdn.test": ["8.8.4.4"]})
    resolver = GuardedResolver(AddressPolicy(allowed_hosts=frozenset({"cdn.test"})), inner=fake)
    with pytest.raises(ForbiddenAddressError, match="allow-list"):
        await resolver.resolve("other.test", 443)
    assert fake.calls == []
    assert [a["host"] for a in await resolver.resolve("CDN.test", 443)] == ["8.8.4.4"]
