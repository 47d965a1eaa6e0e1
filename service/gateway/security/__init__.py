"""Callback verification and abuse limits for the public webhook endpoint.

``Verifier`` is the single entry point the gateway middleware uses:

* ``check_source(peer, headers)`` before reading the body (403 on failure);
* ``verify(query, headers, body, task_id)`` after reading and parsing the body
  (401 on failure). Every configured scheme must pass.

``RateLimiter`` and ``client_address`` are independent helpers for abuse limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from service.config.security import (
    IPNetwork,
    Scheme,
    SecurityConfig,
    parse_standard_webhooks_secret,
)
from service.gateway.security.ratelimit import RateLimiter, address_key
from service.gateway.security.signed_url import (
    sign_callback_url,
    url_signature,
    valid_ref,
    verify_signed_query,
)
from service.gateway.security.verify import (
    REDACTED,
    Failure,
    IPAddress,
    Ok,
    Reason,
    TokenChecker,
    TokenMatch,
    client_address,
    forwarded_for,
    provider_signature,
    redact_query,
    source_allowed,
    standard_webhooks_signature,
    token_id,
    verify_provider_hmac,
    verify_standard_webhooks,
)

__all__ = [
    "REDACTED",
    "Failure",
    "IPAddress",
    "IPNetwork",
    "Ok",
    "RateLimiter",
    "Reason",
    "Scheme",
    "SecurityConfig",
    "TokenChecker",
    "TokenMatch",
    "Verified",
    "Verifier",
    "address_key",
    "client_address",
    "forwarded_for",
    "parse_standard_webhooks_secret",
    "provider_signature",
    "redact_query",
    "sign_callback_url",
    "source_allowed",
    "standard_webhooks_signature",
    "token_id",
    "url_signature",
    "valid_ref",
    "verify_provider_hmac",
    "verify_signed_query",
    "verify_standard_webhooks",
]


@dataclass(frozen=True, slots=True)
class Verified:
    """Every configured scheme passed.

    ``task_ref`` comes from a signed URL (None without signed URLs); ``token_id``
    identifies the matching URL token without revealing it (None without tokens).
    """

    task_ref: str | None
    token_id: str | None
    schemes: tuple[Scheme, ...] = ()


class Verifier:
    """Applies the configured schemes; ``clock`` returns wall-clock unix seconds."""

    def __init__(self, config: SecurityConfig, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._tokens = TokenChecker(config.callback_tokens) if config.callback_tokens else None

    @property
    def config(self) -> SecurityConfig:
        return self._config

    def client_address(self, peer: str | None, headers: Mapping[str, str]) -> IPAddress | None:
        """The client address per ``TRUSTED_PROXY_CIDRS`` (also the rate-limit key)."""
        return client_address(peer, forwarded_for(headers), self._config.trusted_proxy_cidrs)

    def check_source(self, peer: str | None, headers: Mapping[str, str]) -> Failure | None:
        """Allow-list check (403); None when allowed or no allow-list is configured.

        Applies in both auth modes: an explicit allow-list is always honoured.
        """
        allowed = self._config.allowed_source_cidrs
        if not allowed:
            return None
        if source_allowed(self.client_address(peer, headers), allowed):
            return None
        return Failure(Scheme.SOURCE_IP, Reason.SOURCE_NOT_ALLOWED)

    def url_credentials_valid(self, query: Mapping[str, str]) -> bool:
        """True when the URL alone proves the caller: a URL scheme (token, signed URL) is
        configured and every configured one passes. Cheap: no body needed."""
        config = self._config
        if self._tokens is None and not config.url_signing_keys:
            return False
        if self._tokens is not None and isinstance(self._tokens.check(query), Failure):
            return False
        if config.url_signing_keys:
            moment = datetime.fromtimestamp(self._clock(), UTC)
            return not isinstance(
                verify_signed_query(query, config.url_signing_keys, moment), Failure)
        return True

    def verify(
        self,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        task_id: str | None,
    ) -> Verified | Failure:
        """Run every configured scheme; the first failure is returned (401).

        Order: URL token, signed URL, provider HMAC, Standard Webhooks.
        ``task_id`` is the provider task id read from the parsed body (None if it
        could not be read); only provider HMAC uses it.
        """
        config = self._config
        if config.auth_mode == "none":
            return Verified(task_ref=None, token_id=None)
        now = self._clock()
        passed: list[Scheme] = []
        matched_token: str | None = None
        task_ref: str | None = None
        if self._tokens is not None:
            token_result = self._tokens.check(query)
            if isinstance(token_result, Failure):
                return token_result
            matched_token = token_result.token_id
            passed.append(Scheme.TOKEN)
        if config.url_signing_keys:
            signed = verify_signed_query(
                query, config.url_signing_keys, datetime.fromtimestamp(now, UTC)
            )
            if isinstance(signed, Failure):
                return signed
            task_ref = signed.task_ref
            passed.append(Scheme.SIGNED_URL)
        if config.provider_hmac_keys:
            failure = verify_provider_hmac(
                headers, task_id, config.provider_hmac_keys, now,
                config.provider_hmac_tolerance_seconds,
            )
            if failure is not None:
                return failure
            passed.append(Scheme.PROVIDER_HMAC)
        if config.standard_webhooks_secrets:
            failure = verify_standard_webhooks(
                headers, body, config.standard_webhooks_secrets, now,
                config.standard_webhooks_tolerance_seconds,
            )
            if failure is not None:
                return failure
            passed.append(Scheme.STANDARD_WEBHOOKS)
        return Verified(task_ref=task_ref, token_id=matched_token, schemes=tuple(passed))
