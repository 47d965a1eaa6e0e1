"""Callback security settings, read once from the environment; fails closed.

Secret fields are excluded from ``repr`` so the config can be logged. The verification
itself is the gateway's (``service.gateway.security``); the names of the schemes and the
decoding of Standard Webhooks secrets live here, where the settings are read.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from service.config.env import ConfigError, Env

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AUTH_MODES: tuple[Literal["verify"], Literal["none"]] = ("verify", "none")
MIN_GENERATED_SECRET_CHARS = 16
SCHEME_VARIABLES = (
    "CALLBACK_TOKENS",
    "CALLBACK_URL_SIGNING_KEY",
    "PROVIDER_HMAC_KEY",
    "STANDARD_WEBHOOKS_SECRETS",
    "ALLOWED_SOURCE_CIDRS",
)


class Scheme(StrEnum):
    """A way of verifying a callback (also the check that produced a verification result)."""

    SOURCE_IP = "source_ip"
    TOKEN = "token"  # noqa: S105 - a scheme name, not a secret
    SIGNED_URL = "signed_url"
    PROVIDER_HMAC = "provider_hmac"
    STANDARD_WEBHOOKS = "standard_webhooks"


def decode_standard_base64(text: str) -> bytes | None:
    """Strict standard base64 (the Standard Webhooks form); None when it is not."""
    if not text.isascii():
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_standard_webhooks_secret(secret: str) -> bytes:
    """Decode a ``whsec_<base64>`` secret; ValueError (without the secret) if malformed."""
    prefix = "whsec_"
    if not secret.startswith(prefix):
        raise ValueError("must start with 'whsec_'")
    encoded = secret[len(prefix):]
    decoded = decode_standard_base64(encoded + "=" * (-len(encoded) % 4))
    if decoded is None:
        raise ValueError("is not valid base64 after 'whsec_'")
    if not decoded:
        raise ValueError("is empty after 'whsec_'")
    return decoded


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    auth_mode: Literal["verify", "none"] = "verify"
    callback_tokens: tuple[str, ...] = field(default=(), repr=False)
    # First key signs new URLs; all keys verify (rotation).
    url_signing_keys: tuple[bytes, ...] = field(default=(), repr=False)
    provider_hmac_keys: tuple[bytes, ...] = field(default=(), repr=False)
    provider_hmac_tolerance_seconds: int = 1800
    # Decoded (raw) keys from the ``whsec_<base64>`` secrets.
    standard_webhooks_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    standard_webhooks_tolerance_seconds: int = 300
    allowed_source_cidrs: tuple[IPNetwork, ...] = ()
    trusted_proxy_cidrs: tuple[IPNetwork, ...] = ()
    # Failure budget per source address: only requests that fail verification spend it.
    rate_limit_per_second: float = 100.0
    rate_limit_burst: int = 1000
    rate_limit_max_keys: int = 10_000
    body_read_timeout_seconds: float = 10.0
    max_in_flight: int = 512

    @property
    def url_signing_key(self) -> bytes | None:
        """The key to sign new callback URLs with (the first configured)."""
        return self.url_signing_keys[0] if self.url_signing_keys else None

    @property
    def schemes(self) -> tuple[Scheme, ...]:
        """Enabled schemes, for a start-up log line (no secrets)."""
        if self.auth_mode == "none":
            return (Scheme.SOURCE_IP,) if self.allowed_source_cidrs else ()
        enabled = [
            (Scheme.SOURCE_IP, bool(self.allowed_source_cidrs)),
            (Scheme.TOKEN, bool(self.callback_tokens)),
            (Scheme.SIGNED_URL, bool(self.url_signing_keys)),
            (Scheme.PROVIDER_HMAC, bool(self.provider_hmac_keys)),
            (Scheme.STANDARD_WEBHOOKS, bool(self.standard_webhooks_secrets)),
        ]
        return tuple(scheme for scheme, on in enabled if on)

    @classmethod
    def from_env(cls, env: Env) -> SecurityConfig:
        defaults = cls()
        chosen = env.choice("AUTH_MODE", defaults.auth_mode, AUTH_MODES)
        auth_mode: Literal["verify", "none"] = "none" if chosen == "none" else "verify"
        tokens = _generated_secrets(env, "CALLBACK_TOKENS")
        signing_keys = tuple(
            key.encode("utf-8", "surrogateescape")
            for key in _generated_secrets(env, "CALLBACK_URL_SIGNING_KEY")
        )
        provider_keys = tuple(
            key.encode("utf-8", "surrogateescape") for key in env.secret_list("PROVIDER_HMAC_KEY")
        )
        webhook_secrets = _standard_webhooks_secrets(env, "STANDARD_WEBHOOKS_SECRETS")
        allowed = _networks(env, "ALLOWED_SOURCE_CIDRS")
        trusted = _networks(env, "TRUSTED_PROXY_CIDRS")
        if auth_mode == "verify" and not (
            tokens or signing_keys or provider_keys or webhook_secrets or allowed
        ):
            raise ConfigError(
                "AUTH_MODE",
                "is 'verify' but no callback authentication is configured; set at least one of "
                f"{', '.join(SCHEME_VARIABLES)} (or AUTH_MODE=none for local development only)",
            )
        return cls(
            auth_mode=auth_mode,
            callback_tokens=tokens,
            url_signing_keys=signing_keys,
            provider_hmac_keys=provider_keys,
            provider_hmac_tolerance_seconds=env.integer(
                "PROVIDER_HMAC_TOLERANCE_SECONDS", defaults.provider_hmac_tolerance_seconds,
                minimum=1, maximum=86_400
            ),
            standard_webhooks_secrets=webhook_secrets,
            allowed_source_cidrs=allowed,
            trusted_proxy_cidrs=trusted,
            rate_limit_per_second=_positive_float(env, "RATE_LIMIT_PER_SECOND",
                                                  defaults.rate_limit_per_second),
            rate_limit_burst=env.integer("RATE_LIMIT_BURST", defaults.rate_limit_burst, minimum=1),
            rate_limit_max_keys=env.integer("RATE_LIMIT_MAX_KEYS", defaults.rate_limit_max_keys,
                                            minimum=1),
            body_read_timeout_seconds=_positive_float(env, "BODY_READ_TIMEOUT_SECONDS",
                                                      defaults.body_read_timeout_seconds),
            max_in_flight=env.integer("MAX_IN_FLIGHT", defaults.max_in_flight, minimum=1),
        )


def _generated_secrets(env: Env, name: str) -> tuple[str, ...]:
    """Secrets we generate ourselves: refuse short (guessable) ones."""
    values = env.secret_list(name)
    for index, value in enumerate(values, start=1):
        if len(value) < MIN_GENERATED_SECRET_CHARS:
            raise ConfigError(
                name,
                f"entry {index} is shorter than {MIN_GENERATED_SECRET_CHARS} characters; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
    return values


def _standard_webhooks_secrets(env: Env, name: str) -> tuple[bytes, ...]:
    decoded = []
    for index, value in enumerate(env.secret_list(name), start=1):
        try:
            decoded.append(parse_standard_webhooks_secret(value))
        except ValueError as exc:
            # The message describes the problem, never the secret itself.
            raise ConfigError(name, f"entry {index} {exc}") from None
    return tuple(decoded)


def _networks(env: Env, name: str) -> tuple[IPNetwork, ...]:
    networks = []
    for value in env.text_list(name):
        try:
            networks.append(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise ConfigError(name, f"{value!r} is not a CIDR ({exc})") from None
    return tuple(networks)


def _positive_float(env: Env, name: str, default: float) -> float:
    value = env.number(name, default)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(name, f"must be a positive number, got {value}")
    return value
