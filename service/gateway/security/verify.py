"""Pure verification primitives for provider callbacks.

Every check takes already-extracted request data (query, headers, body bytes,
peer address) and returns either a success value or a :class:`Failure` with a
machine-readable :class:`Reason`. Nothing here raises on hostile input: header
values, query values and bodies may be arbitrary text or bytes.

Secrets are compared in constant time (``hmac.compare_digest``), and when
several secrets are configured (rotation) every one is compared so timing does
not reveal which one matched.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote_plus

from service.config.security import (
    IPNetwork,
    Scheme,
    decode_standard_base64,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

TOKEN_PARAM = "token"  # noqa: S105 - a parameter name, not a secret
PROVIDER_TIMESTAMP_HEADER = "X-Webhook-Timestamp"
PROVIDER_SIGNATURE_HEADER = "X-Webhook-Signature"
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
FORWARDED_FOR_HEADER = "X-Forwarded-For"

REDACTED = "REDACTED"
_REDACTED_PARAMS = frozenset({"token", "sig", "signature"})

_MAX_TIMESTAMP_DIGITS = 15  # seconds fit in 11; milliseconds (13) still parse, then fail as stale
_MAX_SIGNATURE_ENTRIES = 32
_MAX_FORWARDED_HOPS = 64
_MAX_ADDRESS_CHARS = 64
_SHA256_BYTES = 32


class Reason(StrEnum):
    """Why a check failed; stable strings for logs, metrics labels and responses."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 - reason codes, not secrets
    BAD_TOKEN = "bad_token"  # noqa: S105
    MISSING_SIGNATURE = "missing_signature"
    MALFORMED_SIGNATURE = "malformed_signature"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED_SIGNATURE = "expired_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    TASK_ID_UNREADABLE = "task_id_unreadable"
    SOURCE_NOT_ALLOWED = "source_not_allowed"


@dataclass(frozen=True, slots=True)
class Failure:
    """A refused request. ``status`` is the HTTP status the gateway should answer."""

    scheme: Scheme
    reason: Reason

    @property
    def status(self) -> int:
        return 403 if self.reason is Reason.SOURCE_NOT_ALLOWED else 401


@dataclass(frozen=True, slots=True)
class Ok:
    """A successful signed-URL check: the task reference carried by the URL."""

    task_ref: str


@dataclass(frozen=True, slots=True)
class TokenMatch:
    """A successful URL-token check: a non-secret identifier of the matching token."""

    token_id: str


def token_id(token: str) -> str:
    """Non-secret identifier of a token: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(_to_bytes(token)).hexdigest()[:8]


def _to_bytes(text: str) -> bytes:
    # surrogatepass: any str (including lone surrogates from hostile input) encodes.
    return text.encode("utf-8", "surrogatepass")


def _key_bytes(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else _to_bytes(key)


def _any_digest_matches(given: bytes, expected: Iterable[bytes]) -> bool:
    """Compare ``given`` with every expected value, without stopping at the first match."""
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(given, candidate)
    return matched


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup; blank or non-text values count as missing."""
    value: object = headers.get(name)
    if value is None:
        wanted = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == wanted:
                value = candidate
                break
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _query_value(query: Mapping[str, str], name: str) -> str | None:
    value: object = query.get(name)
    if not isinstance(value, str) or value == "":
        return None
    return value


def _parse_timestamp(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_TIMESTAMP_DIGITS:
        return None
    return int(text)


# --- 1. URL token -----------------------------------------------------------------


class TokenChecker:
    """``?token=<secret>`` against one or more configured tokens (rotation)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("at least one token is required")
        self._digests = tuple(hashlib.sha256(_to_bytes(t)).digest() for t in tokens)
        self._ids = tuple(token_id(t) for t in tokens)

    def check(self, query: Mapping[str, str]) -> TokenMatch | Failure:
        given = _query_value(query, TOKEN_PARAM)
        if given is None:
            return Failure(Scheme.TOKEN, Reason.MISSING_TOKEN)
        # Hashing first makes every comparison the same length, so neither the
        # content nor the length of a configured token leaks through timing.
        given_digest = hashlib.sha256(_to_bytes(given)).digest()
        results = [hmac.compare_digest(given_digest, d) for d in self._digests]
        for index, ok in enumerate(results):
            if ok:
                return TokenMatch(self._ids[index])
        return Failure(Scheme.TOKEN, Reason.BAD_TOKEN)


def redact_query(url_or_query: str) -> str:
    """Replace the values of ``token``, ``sig`` and ``signature`` parameters with REDACTED.

    Accepts a full URL, a path with a query (``/cb?token=...``) or a bare query
    (``token=...&ref=...``, with or without a leading ``?``). Other parameters and
    the fragment are kept verbatim. Never raises.
    """
    head, hash_sign, fragment = url_or_query.partition("#")
    if "?" in head:
        prefix, _, query = head.partition("?")
        prefix += "?"
    elif "://" in head or head.startswith("/") or "=" not in head:
        return url_or_query
    else:
        prefix, query = "", head
    parts = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        if equals and _param_name(name) in _REDACTED_PARAMS:
            parts.append(f"{name}={REDACTED}")
        else:
            parts.append(part)
    return f"{prefix}{'&'.join(parts)}{hash_sign}{fragment}"


def _param_name(raw: str) -> str:
    # Lone surrogates would make unquote raise: replace them first.
    text = raw.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return unquote_plus(text).strip().lower()


# --- 3. Provider HMAC -------------------------------------------------------------


def _decode_any_base64(text: str) -> bytes | None:
    """Standard or URL-safe base64, padded or not; None when not base64."""
    if not text.isascii():
        return None
    normalized = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    normalized += "=" * (-len(normalized) % 4)
    try:
        return base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError):
        return None


def provider_signature(key: bytes | str, task_id: str, timestamp: str) -> str:
    """The provider's ``X-Webhook-Signature`` value: base64(HMAC-SHA256(key, id.ts))."""
    digest = _mac(_key_bytes(key), _to_bytes(f"{task_id}.{timestamp}"))
    return base64.b64encode(digest).decode("ascii")


def verify_provider_hmac(
    headers: Mapping[str, str],
    task_id: str | None,
    keys: Sequence[bytes],
    now: float,
    tolerance_seconds: float,
) -> Failure | None:
    """Check ``X-Webhook-Signature`` over ``task_id + "." + X-Webhook-Timestamp``.

    The signature is checked before the timestamp, so ``stale_timestamp`` is only
    reported for a genuine (replayed or delayed) signature.
    """
    scheme = Scheme.PROVIDER_HMAC
    timestamp_text = header(headers, PROVIDER_TIMESTAMP_HEADER)
    signature_text = header(headers, PROVIDER_SIGNATURE_HEADER)
    if timestamp_text is None or signature_text is None:
        return Failure(scheme, Reason.MISSING_SIGNATURE)
    if not isinstance(task_id, str) or not task_id:
        return Failure(scheme, Reason.TASK_ID_UNREADABLE)
    timestamp = _parse_timestamp(timestamp_text)
    given = _decode_any_base64(signature_text)
    if timestamp is None or given is None or len(given) != _SHA256_BYTES:
        return Failure(scheme, Reason.MALFORMED_SIGNATURE)
    message = _to_bytes(f"{task_id}.{timestamp_text}")
    if not _any_digest_matches(given, (_mac(key, message) for key in keys)):
        return Failure(scheme, Reason.BAD_SIGNATURE)
    if abs(now - timestamp) > tolerance_seconds:
        return Failure(scheme, Reason.STALE_TIMESTAMP)
    return None


# --- 4. Standard Webhooks ---------------------------------------------------------


def standard_webhooks_signature(secret: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """One ``webhook-signature`` entry, ``v1,<base64>``, for the decoded secret."""
    digest = _mac(secret, _to_bytes(f"{msg_id}.{timestamp}.") + body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_standard_webhooks(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[bytes],
    now: float,
    tolerance_seconds: float = 300,
) -> Failure | None:
    """Standard Webhooks (standardwebhooks.com) symmetric ``v1`` signatures.

    ``secrets`` are the decoded (raw) keys, several during rotation. Entries of
    other versions (e.g. ``v1a`` asymmetric) are ignored. Not the ``standardwebhooks``
    package: it takes one secret, reads the wall clock itself, and raises
    non-verification errors (ValueError, binascii.Error, UnicodeDecodeError) on
    malformed headers or non-UTF-8 bodies.
    """
    scheme = Scheme.STANDARD_WEBHOOKS
    msg_id = header(headers, STANDARD_ID_HEADER)
    timestamp_text = header(headers, STANDARD_TIMESTAMP_HEADER)
    signature_text = header(headers, STANDARD_SIGNATURE_HEADER)
    if msg_id is None or timestamp_text is None or signature_text is None:
        return Failure(scheme, Reason.MISSING_SIGNATURE)
    timestamp = _parse_timestamp(timestamp_text)
    entries = signature_text.split()
    if timestamp is None or len(entries) > _MAX_SIGNATURE_ENTRIES:
        return Failure(scheme, Reason.MALFORMED_SIGNATURE)
    given: list[bytes] = []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma:
            return Failure(scheme, Reason.MALFORMED_SIGNATURE)
        if version != "v1":
            continue
        decoded = decode_standard_base64(encoded)
        if decoded is None:
            return Failure(scheme, Reason.MALFORMED_SIGNATURE)
        given.append(decoded)
    if not given:  # only other versions (e.g. v1a): nothing this verifier can accept
        return Failure(scheme, Reason.BAD_SIGNATURE)
    message = _to_bytes(f"{msg_id}.{timestamp_text}.") + body
    expected = [_mac(secret, message) for secret in secrets]
    matched = False
    for signature in given:
        matched |= _any_digest_matches(signature, expected)
    if not matched:
        return Failure(scheme, Reason.BAD_SIGNATURE)
    if abs(now - timestamp) > tolerance_seconds:
        return Failure(scheme, Reason.STALE_TIMESTAMP)
    return None


# --- 5. Source address ------------------------------------------------------------


# Cached: each request parses its peer's address (and the rate limiter keys by it), and
# ipaddress objects are slow to build; bounded, so arbitrary peers cannot grow it.
@functools.lru_cache(maxsize=4096)
def parse_address(text: str | None) -> IPAddress | None:
    """An IP from a peer or forwarded hop (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``).

    IPv4-mapped IPv6 addresses become IPv4. None for anything unparseable.
    """
    if not isinstance(text, str):
        return None
    value = text.strip()
    if not value or len(value) > _MAX_ADDRESS_CHARS:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit()):
            return None
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
        if not (port.isascii() and port.isdigit()):
            return None
    else:
        host = value
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_any(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None,
    xff: str | None,
    trusted: Sequence[IPNetwork],
) -> IPAddress | None:
    """The client's address: the TCP peer, unless the peer is a trusted proxy.

    Behind trusted proxies ``X-Forwarded-For`` is walked from the right (the entry
    the nearest proxy appended), skipping trusted proxies, and the first untrusted
    hop is the client. Entries left of it are client-supplied and never honoured.
    If every hop is trusted, the leftmost one is returned. None when the peer or a
    hop that must be read is unparseable (callers fail closed). Never raises.
    """
    current = parse_address(peer)
    if current is None or not _in_any(current, trusted):
        return current
    if not isinstance(xff, str) or not xff.strip():
        return current
    hops = xff.split(",")
    for hop in reversed(hops[-_MAX_FORWARDED_HOPS:]):
        current = parse_address(hop)
        if current is None:
            return None
        if not _in_any(current, trusted):
            return current
    if len(hops) > _MAX_FORWARDED_HOPS:
        return None
    return current


def forwarded_for(headers: Mapping[str, str]) -> str | None:
    """All ``X-Forwarded-For`` values joined in order (multidict-aware)."""
    getall = getattr(headers, "getall", None)
    if callable(getall):
        try:
            values = getall(FORWARDED_FOR_HEADER, [])
        except (KeyError, TypeError):
            values = []
        texts = [v for v in values if isinstance(v, str)]
        return ",".join(texts) if texts else None
    return header(headers, FORWARDED_FOR_HEADER)


def source_allowed(address: IPAddress | None, allowed: Sequence[IPNetwork]) -> bool:
    return address is not None and _in_any(address, allowed)
