"""Callback verification: config, URL tokens, provider HMAC, Standard Webhooks, source IPs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from standardwebhooks.webhooks import Webhook
from yarl import URL

from service.config.env import ConfigError, Env
from service.gateway.security import (
    REDACTED,
    Failure,
    Reason,
    Scheme,
    SecurityConfig,
    Verified,
    Verifier,
    client_address,
    parse_standard_webhooks_secret,
    provider_signature,
    redact_query,
    sign_callback_url,
    standard_webhooks_signature,
    token_id,
    verify_provider_hmac,
    verify_standard_webhooks,
)
from tests.harness.fakes import FakeClock

NOW = 1_758_044_664.0
TS = str(int(NOW))


def _token() -> str:
    return secrets.token_urlsafe(24)


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _verifier(environ: dict[str, str], clock: FakeClock | None = None) -> Verifier:
    return Verifier(SecurityConfig.from_env(Env(environ)), clock or FakeClock(NOW))


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


# --- configuration ----------------------------------------------------------------


def test_fail_closed_when_no_scheme_is_configured() -> None:
    """AUTH_MODE=verify with nothing configured raises, naming AUTH_MODE and every option."""
    with pytest.raises(ConfigError) as info:
        SecurityConfig.from_env(Env({}))
    assert info.value.name == "AUTH_MODE"
    for variable in ("CALLBACK_TOKENS", "CALLBACK_URL_SIGNING_KEY", "PROVIDER_HMAC_KEY",
                     "STANDARD_WEBHOOKS_SECRETS", "ALLOWED_SOURCE_CIDRS"):
        assert variable in str(info.value)


def test_trusted_proxies_alone_do_not_count_as_a_scheme() -> None:
    """TRUSTED_PROXY_CIDRS authenticates nothing, so it does not satisfy fail-closed."""
    with pytest.raises(ConfigError, match="AUTH_MODE"):
        SecurityConfig.from_env(Env({"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}))


def test_auth_mode_none_accepts_everything() -> None:
    """AUTH_MODE=none needs no scheme and verify() passes any request."""
    verifier = _verifier({"AUTH_MODE": "none"})
    assert verifier.config.schemes == ()
    assert verifier.verify({}, {}, b"", None) == Verified(task_ref=None, token_id=None)
    assert verifier.check_source(None, {}) is None


def test_invalid_auth_mode_names_the_variable() -> None:
    """An unknown AUTH_MODE is a ConfigError naming AUTH_MODE."""
    with pytest.raises(ConfigError, match=r"^AUTH_MODE"):
        SecurityConfig.from_env(Env({"AUTH_MODE": "off", "CALLBACK_TOKENS": _token()}))


def test_defaults_for_limits() -> None:
    """Limits default to generous values when unset."""
    config = SecurityConfig.from_env(Env({"CALLBACK_TOKENS": _token()}))
    assert config.rate_limit_per_second == 100.0  # a failure budget: verified traffic is free
    assert config.rate_limit_burst == 1000
    assert config.body_read_timeout_seconds == 10.0
    assert config.max_in_flight == 512
    assert config.provider_hmac_tolerance_seconds == 1800
    assert config.standard_webhooks_tolerance_seconds == 300


@pytest.mark.parametrize(
    ("name", "value"),
    [("RATE_LIMIT_PER_SECOND", "0"), ("RATE_LIMIT_PER_SECOND", "nan"),
     ("RATE_LIMIT_BURST", "0"), ("BODY_READ_TIMEOUT_SECONDS", "inf"), ("MAX_IN_FLIGHT", "x"),
     ("PROVIDER_HMAC_TOLERANCE_SECONDS", "0")],
)
def test_bad_limits_name_the_variable(name: str, value: str) -> None:
    """Invalid numeric settings raise ConfigError naming the variable."""
    with pytest.raises(ConfigError) as info:
        SecurityConfig.from_env(Env({"CALLBACK_TOKENS": _token(), name: value}))
    assert info.value.name == name


def test_malformed_standard_webhooks_secret_names_variable_without_leaking_it() -> None:
    """A secret without whsec_ or with bad base64 names the variable, not the secret."""
    for bad in ("c2VjcmV0c2VjcmV0c2VjcmV0", "whsec_not*base64!!", "whsec_"):
        with pytest.raises(ConfigError) as info:
            SecurityConfig.from_env(Env({"STANDARD_WEBHOOKS_SECRETS": f"{_whsec()},{bad}"}))
        assert info.value.name == "STANDARD_WEBHOOKS_SECRETS"
        assert "entry 2" in str(info.value)
        if bad != "whsec_":
            assert bad.removeprefix("whsec_") not in str(info.value)


def test_unpadded_whsec_secret_is_accepted() -> None:
    """whsec_ secrets are accepted with or without base64 padding."""
    raw = secrets.token_bytes(25)
    encoded = base64.b64encode(raw).decode()
    assert parse_standard_webhooks_secret("whsec_" + encoded.rstrip("=")) == raw
    assert parse_standard_webhooks_secret("whsec_" + encoded) == raw


@pytest.mark.parametrize("name", ["ALLOWED_SOURCE_CIDRS", "TRUSTED_PROXY_CIDRS"])
def test_bad_cidr_names_the_variable(name: str) -> None:
    """Unparseable CIDRs or host bits set raise ConfigError naming the variable."""
    for bad in ("10.0.0.0/33", "not-an-ip", "10.0.0.1/8"):
        with pytest.raises(ConfigError) as info:
            SecurityConfig.from_env(Env({"CALLBACK_TOKENS": _token(), name: f"10.0.0.0/8,{bad}"}))
        assert info.value.name == name


@pytest.mark.parametrize("name", ["CALLBACK_TOKENS", "CALLBACK_URL_SIGNING_KEY"])
def test_short_generated_secrets_are_refused(name: str) -> None:
    """Tokens and URL signing keys shorter than 16 characters are refused (guessable)."""
    with pytest.raises(ConfigError) as info:
        SecurityConfig.from_env(Env({name: "short-secret"}))
    assert info.value.name == name
    assert "short-secret" not in str(info.value)


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    """CALLBACK_TOKENS_FILE etc. are read like the variables themselves."""
    token = _token()
    path = tmp_path / "tokens"
    path.write_text(f"{token}\n", encoding="utf-8")
    verifier = _verifier({"CALLBACK_TOKENS_FILE": str(path)})
    assert verifier.verify({"token": token}, {}, b"", None) == Verified(
        None, token_id(token), (Scheme.TOKEN,)
    )


def test_config_repr_hides_secrets() -> None:
    """repr(config) is safe to log: no token, key or secret appears in it."""
    values = {"CALLBACK_TOKENS": _token(), "CALLBACK_URL_SIGNING_KEY": _token(),
              "PROVIDER_HMAC_KEY": _token(), "STANDARD_WEBHOOKS_SECRETS": _whsec()}
    text = repr(SecurityConfig.from_env(Env(values)))
    for value in values.values():
        assert value not in text
        assert value.removeprefix("whsec_") not in text


# --- URL token --------------------------------------------------------------------


def test_missing_token_and_bad_token() -> None:
    """No ?token gives missing_token; a wrong one gives bad_token."""
    verifier = _verifier({"CALLBACK_TOKENS": _token()})
    assert verifier.verify({}, {}, b"", None) == Failure(Scheme.TOKEN, Reason.MISSING_TOKEN)
    assert verifier.verify({"token": ""}, {}, b"", None) == Failure(
        Scheme.TOKEN, Reason.MISSING_TOKEN
    )
    assert verifier.verify({"token": _token()}, {}, b"", None) == Failure(
        Scheme.TOKEN, Reason.BAD_TOKEN
    )


def test_token_id_is_short_sha256_prefix_not_the_secret() -> None:
    """token_id is the first 8 hex digits of sha256(token)."""
    token = _token()
    assert token_id(token) == hashlib.sha256(token.encode()).hexdigest()[:8]
    assert token_id(token) not in token


def test_rotated_tokens_overlap_then_old_is_refused() -> None:
    """Old and new tokens both work during the overlap; after the change only the new one."""
    old, new = _token(), _token()
    overlap = _verifier({"CALLBACK_TOKENS": f"{new}, {old}"})
    for token in (old, new):
        result = overlap.verify({"token": token}, {}, b"", None)
        assert isinstance(result, Verified)
        assert result.token_id == token_id(token)
    after = _verifier({"CALLBACK_TOKENS": new})
    assert isinstance(after.verify({"token": new}, {}, b"", None), Verified)
    assert after.verify({"token": old}, {}, b"", None) == Failure(Scheme.TOKEN, Reason.BAD_TOKEN)


def test_prefix_or_extension_of_a_token_is_refused() -> None:
    """Only the exact token matches: prefixes and extensions are bad_token."""
    token = _token()
    verifier = _verifier({"CALLBACK_TOKENS": token})
    for guess in (token[:-1], token + "x", " " + token):
        assert verifier.verify({"token": guess}, {}, b"", None) == Failure(
            Scheme.TOKEN, Reason.BAD_TOKEN
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://gw/cb?token=s3cr3t&ref=t1&sig=abc#frag",
         f"https://gw/cb?token={REDACTED}&ref=t1&sig={REDACTED}#frag"),
        ("/cb?ref=t1&token=s3cr3t", f"/cb?ref=t1&token={REDACTED}"),
        ("token=s3cr3t&exp=5", f"token={REDACTED}&exp=5"),
        ("?%74oken=s3cr3t", f"?%74oken={REDACTED}"),
        ("?TOKEN=s3cr3t&signature=x", f"?TOKEN={REDACTED}&signature={REDACTED}"),
        ("https://gw/cb", "https://gw/cb"),
        ("/cb", "/cb"),
        ("", ""),
    ],
)
def test_redact_query_hides_token_and_sig(text: str, expected: str) -> None:
    """redact_query replaces token/sig values in URLs, paths and bare queries, keeping the rest."""
    assert redact_query(text) == expected


@settings(max_examples=300)
@given(text=st.text(alphabet=st.characters(exclude_categories=())))
def test_property_redact_query_never_raises(text: str) -> None:
    """redact_query accepts any text."""
    assert isinstance(redact_query(text), str)


@settings(max_examples=200)
@given(secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=40),
       prefix=st.sampled_from(["https://gw/cb?", "/cb?ref=x&", "", "?a=1&"]))
def test_property_redacted_url_never_contains_the_token(secret: str, prefix: str) -> None:
    """After redaction the token value is gone."""
    assert secret not in redact_query(f"{prefix}token={secret}&exp=1")


# --- provider HMAC ----------------------------------------------------------------


def _provider_headers(key: str, task_id: str, timestamp: str = TS) -> dict[str, str]:
    return {"X-Webhook-Timestamp": timestamp,
            "X-Webhook-Signature": provider_signature(key, task_id, timestamp)}


def test_provider_hmac_valid_signature_verifies() -> None:
    """base64(HMAC-SHA256(key, task_id + '.' + timestamp)) with a fresh timestamp passes."""
    key = _token()
    verifier = _verifier({"PROVIDER_HMAC_KEY": key})
    expected = base64.b64encode(
        hmac.new(key.encode(), f"task-9.{TS}".encode(), hashlib.sha256).digest()
    ).decode()
    headers = {"X-Webhook-Timestamp": TS, "X-Webhook-Signature": expected}
    assert verifier.verify({}, headers, b"{}", "task-9") == Verified(
        None, None, (Scheme.PROVIDER_HMAC,)
    )


def test_provider_hmac_accepts_urlsafe_and_unpadded_base64() -> None:
    """The signature may be standard or URL-safe base64, padded or not."""
    key = _token()
    verifier = _verifier({"PROVIDER_HMAC_KEY": key})
    for task_id in (f"task-{n}" for n in range(40)):
        standard = provider_signature(key, task_id, TS)
        urlsafe = standard.replace("+", "-").replace("/", "_")
        for signature in (standard, urlsafe, urlsafe.rstrip("=")):
            headers = {"X-Webhook-Timestamp": TS, "X-Webhook-Signature": signature}
            assert isinstance(verifier.verify({}, headers, b"", task_id), Verified)


def test_provider_hmac_wrong_signature_is_refused() -> None:
    """A signature by another key, or for another task id, is bad_signature."""
    verifier = _verifier({"PROVIDER_HMAC_KEY": _token()})
    bad = Failure(Scheme.PROVIDER_HMAC, Reason.BAD_SIGNATURE)
    assert verifier.verify({}, _provider_headers(_token(), "t1"), b"", "t1") == bad
    key = _token()
    other = _verifier({"PROVIDER_HMAC_KEY": key})
    assert other.verify({}, _provider_headers(key, "t1"), b"", "t2") == bad


def test_provider_hmac_missing_headers_are_missing_signature() -> None:
    """Either header absent or blank gives missing_signature."""
    key = _token()
    verifier = _verifier({"PROVIDER_HMAC_KEY": key})
    headers = _provider_headers(key, "t1")
    missing = Failure(Scheme.PROVIDER_HMAC, Reason.MISSING_SIGNATURE)
    for name in headers:
        assert verifier.verify({}, {k: v for k, v in headers.items() if k != name}, b"", "t1") \
            == missing
        assert verifier.verify({}, {**headers, name: "  "}, b"", "t1") == missing


def test_provider_hmac_stale_timestamp_both_directions() -> None:
    """A genuine signature outside +/-tolerance is stale_timestamp; at the edge it passes."""
    key = _token()
    clock = FakeClock(NOW)
    verifier = _verifier({"PROVIDER_HMAC_KEY": key, "PROVIDER_HMAC_TOLERANCE_SECONDS": "600"},
                         clock)
    headers = _provider_headers(key, "t1")
    stale = Failure(Scheme.PROVIDER_HMAC, Reason.STALE_TIMESTAMP)
    for offset, ok in ((600, True), (-600, True), (601, False), (-601, False), (86_400, False)):
        clock.now = NOW + offset
        result = verifier.verify({}, headers, b"", "t1")
        assert isinstance(result, Verified) if ok else result == stale


def test_provider_hmac_default_tolerance_is_30_minutes() -> None:
    """Without PROVIDER_HMAC_TOLERANCE_SECONDS, 1800 s old passes and 1801 s is stale."""
    key = _token()
    clock = FakeClock(NOW)
    verifier = _verifier({"PROVIDER_HMAC_KEY": key}, clock)
    headers = _provider_headers(key, "t1")
    clock.now = NOW + 1800
    assert isinstance(verifier.verify({}, headers, b"", "t1"), Verified)
    clock.now = NOW + 1801
    assert verifier.verify({}, headers, b"", "t1") == Failure(
        Scheme.PROVIDER_HMAC, Reason.STALE_TIMESTAMP
    )


def test_provider_hmac_unreadable_task_id() -> None:
    """A body whose task id could not be read (None or empty) fails with task_id_unreadable."""
    key = _token()
    verifier = _verifier({"PROVIDER_HMAC_KEY": key})
    headers = _provider_headers(key, "t1")
    for task_id in (None, ""):
        assert verifier.verify({}, headers, b"", task_id) == Failure(
            Scheme.PROVIDER_HMAC, Reason.TASK_ID_UNREADABLE
        )


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [("17580446.64", None), ("-1", None), ("1e9", None), ("", "x"), (None, "!!!!"),
     (None, "YWJj"), (None, "é")],
)
def test_provider_hmac_malformed_headers(timestamp: str | None, signature: str | None) -> None:
    """Non-integer timestamps and non-base64 or non-32-byte signatures are refused, no raise."""
    key = _token()
    headers = _provider_headers(key, "t1")
    if timestamp is not None:
        headers["X-Webhook-Timestamp"] = timestamp
    if signature is not None:
        headers["X-Webhook-Signature"] = signature
    result = verify_provider_hmac(headers, "t1", [key.encode()], NOW, 1800)
    assert result is not None
    assert result.reason in {Reason.MALFORMED_SIGNATURE, Reason.MISSING_SIGNATURE}


def test_provider_hmac_rotated_keys() -> None:
    """With two provider keys configured, signatures by either verify."""
    old, new = _token(), _token()
    verifier = _verifier({"PROVIDER_HMAC_KEY": f"{new},{old}"})
    for key in (old, new):
        assert isinstance(verifier.verify({}, _provider_headers(key, "t"), b"", "t"), Verified)


# --- Standard Webhooks ------------------------------------------------------------


def _sw_headers(secret: str, body: bytes, msg_id: str = "msg_2Kw", ts: str = TS) -> dict[str, str]:
    raw = parse_standard_webhooks_secret(secret)
    return {"webhook-id": msg_id, "webhook-timestamp": ts,
            "webhook-signature": standard_webhooks_signature(raw, msg_id, ts, body)}


def test_standard_webhooks_valid_signature_verifies() -> None:
    """A v1 signature over id.timestamp.body with the configured secret passes."""
    secret = _whsec()
    body = b'{"data":{"task_id":"t1"}}'
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret})
    assert verifier.verify({}, _sw_headers(secret, body), body, None) == Verified(
        None, None, (Scheme.STANDARD_WEBHOOKS,)
    )


def test_standard_webhooks_interoperates_with_reference_package() -> None:
    """Signatures made by the `standardwebhooks` package verify here (spec compatibility)."""
    secret = _whsec()
    body = '{"data":{"task_id":"t1","title":"Café"}}'
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(NOW, UTC), body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": TS, "webhook-signature": signature}
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret})
    assert isinstance(verifier.verify({}, headers, body.encode(), None), Verified)


def test_standard_webhooks_signature_over_other_body_is_refused() -> None:
    """A genuine signature does not transfer to a different body."""
    secret = _whsec()
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret})
    headers = _sw_headers(secret, b'{"code":200}')
    assert verifier.verify({}, headers, b'{"code":500}', None) == Failure(
        Scheme.STANDARD_WEBHOOKS, Reason.BAD_SIGNATURE
    )


def test_standard_webhooks_wrong_secret_or_id_is_refused() -> None:
    """A signature by another secret, or with the id changed, is bad_signature."""
    secret = _whsec()
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret})
    bad = Failure(Scheme.STANDARD_WEBHOOKS, Reason.BAD_SIGNATURE)
    assert verifier.verify({}, _sw_headers(_whsec(), b"x"), b"x", None) == bad
    assert verifier.verify({}, {**_sw_headers(secret, b"x"), "webhook-id": "msg_other"}, b"x",
                           None) == bad


def test_standard_webhooks_missing_headers() -> None:
    """Any of webhook-id/-timestamp/-signature absent gives missing_signature."""
    secret = _whsec()
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret})
    headers = _sw_headers(secret, b"x")
    for name in headers:
        assert verifier.verify({}, {k: v for k, v in headers.items() if k != name}, b"x", None) \
            == Failure(Scheme.STANDARD_WEBHOOKS, Reason.MISSING_SIGNATURE)


def test_standard_webhooks_expired_and_future_timestamps() -> None:
    """Outside +/-300 s a genuine signature is stale_timestamp; at 300 s it passes."""
    secret = _whsec()
    clock = FakeClock(NOW)
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret}, clock)
    headers = _sw_headers(secret, b"x")
    for offset, ok in ((300, True), (-300, True), (301, False), (-301, False)):
        clock.now = NOW + offset
        result = verifier.verify({}, headers, b"x", None)
        assert isinstance(result, Verified) if ok else result == Failure(
            Scheme.STANDARD_WEBHOOKS, Reason.STALE_TIMESTAMP
        )


def test_standard_webhooks_multiple_signatures_and_rotated_secrets() -> None:
    """Any v1 entry matching any configured secret passes; v1a entries are ignored."""
    old, new = _whsec(), _whsec()
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": f"{new},{old}"})
    stranger = _sw_headers(_whsec(), b"x")["webhook-signature"]
    for secret in (old, new):
        headers = _sw_headers(secret, b"x")
        headers["webhook-signature"] = f"v1a,AAAA {stranger} {headers['webhook-signature']}"
        assert isinstance(verifier.verify({}, headers, b"x", None), Verified)
    only_v1a = {**_sw_headers(new, b"x"), "webhook-signature": "v1a,AAAA"}
    assert verifier.verify({}, only_v1a, b"x", None) == Failure(
        Scheme.STANDARD_WEBHOOKS, Reason.BAD_SIGNATURE
    )


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,", "v1,not base64!", "v1,é", ",", "v1,a,b", " ".join(["v1,AAAA"] * 33)],
)
def test_standard_webhooks_garbage_signature_header_is_refused(signature: str) -> None:
    """Unparseable signature headers are refused without raising."""
    secret = _whsec()
    headers = {**_sw_headers(secret, b"x"), "webhook-signature": signature}
    result = verify_standard_webhooks(headers, b"x", [parse_standard_webhooks_secret(secret)], NOW)
    assert isinstance(result, Failure)
    assert result.reason in {Reason.MALFORMED_SIGNATURE, Reason.BAD_SIGNATURE}


def test_standard_webhooks_non_utf8_body_is_verified_as_bytes() -> None:
    """The signed content is the raw body bytes, even when they are not UTF-8."""
    secret = _whsec()
    body = b"\xff\xfe\x00binary"
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret})
    assert isinstance(verifier.verify({}, _sw_headers(secret, body), body, None), Verified)


def test_header_lookup_is_case_insensitive_for_dicts_and_multidicts() -> None:
    """Header names match case-insensitively, with plain dicts and aiohttp's CIMultiDictProxy."""
    secret = _whsec()
    verifier = _verifier({"STANDARD_WEBHOOKS_SECRETS": secret})
    headers = {k.title(): v for k, v in _sw_headers(secret, b"x").items()}
    assert isinstance(verifier.verify({}, headers, b"x", None), Verified)
    proxy = CIMultiDictProxy(CIMultiDict(headers))
    assert isinstance(verifier.verify({}, proxy, b"x", None), Verified)


# --- every configured scheme must pass ---------------------------------------------


def test_all_configured_schemes_must_pass() -> None:
    """With every scheme configured, each one missing fails and all together pass."""
    token, url_key, provider_key, whsec = _token(), _token(), _token(), _whsec()
    verifier = _verifier({"CALLBACK_TOKENS": token, "CALLBACK_URL_SIGNING_KEY": url_key,
                          "PROVIDER_HMAC_KEY": provider_key, "STANDARD_WEBHOOKS_SECRETS": whsec})
    url = sign_callback_url(f"https://gw/cb?token={token}", "ref-7", url_key,
                            now=datetime.fromtimestamp(NOW, UTC))
    query = dict(URL(url).query)
    body = b'{"data":{"task_id":"t1"}}'
    headers = {**_provider_headers(provider_key, "t1"), **_sw_headers(whsec, body)}
    assert verifier.verify(query, headers, body, "t1") == Verified(
        task_ref="ref-7", token_id=token_id(token),
        schemes=(Scheme.TOKEN, Scheme.SIGNED_URL, Scheme.PROVIDER_HMAC, Scheme.STANDARD_WEBHOOKS),
    )
    assert verifier.verify({k: v for k, v in query.items() if k != "token"}, headers, body,
                           "t1") == Failure(Scheme.TOKEN, Reason.MISSING_TOKEN)
    assert verifier.verify({"token": token}, headers, body, "t1") == Failure(
        Scheme.SIGNED_URL, Reason.MISSING_SIGNATURE
    )
    no_provider = {k: v for k, v in headers.items() if not k.startswith("X-")}
    assert verifier.verify(query, no_provider, body, "t1") == Failure(
        Scheme.PROVIDER_HMAC, Reason.MISSING_SIGNATURE
    )
    no_sw = {k: v for k, v in headers.items() if k.startswith("X-")}
    assert verifier.verify(query, no_sw, body, "t1") == Failure(
        Scheme.STANDARD_WEBHOOKS, Reason.MISSING_SIGNATURE
    )


def test_url_credentials_alone_prove_a_caller_only_when_every_url_scheme_passes() -> None:
    """The failure-budget bypass: the URL must carry every configured URL scheme."""
    token, url_key = _token(), _token()
    both = _verifier({"CALLBACK_TOKENS": token, "CALLBACK_URL_SIGNING_KEY": url_key})
    url = sign_callback_url(f"https://gw/cb?token={token}", "ref-7", url_key,
                            now=datetime.fromtimestamp(NOW, UTC))
    query = dict(URL(url).query)
    assert both.url_credentials_valid(query)
    assert not both.url_credentials_valid({"token": token})
    assert not both.url_credentials_valid({**query, "token": _token()})
    assert _verifier({"CALLBACK_TOKENS": token}).url_credentials_valid({"token": token})
    body_only = _verifier({"PROVIDER_HMAC_KEY": _token()})
    assert not body_only.url_credentials_valid({"token": token})  # needs the body: no bypass


def test_failure_status_codes() -> None:
    """source_not_allowed maps to 403; every other reason to 401."""
    for reason in Reason:
        expected = 403 if reason is Reason.SOURCE_NOT_ALLOWED else 401
        assert Failure(Scheme.TOKEN, reason).status == expected


# --- source addresses -------------------------------------------------------------

TRUSTED = (_net("10.0.0.0/8"), _net("fd00::/8"))


def test_forged_xff_from_untrusted_peer_is_ignored() -> None:
    """An untrusted peer's own X-Forwarded-For is not honoured: the peer is the client."""
    assert client_address("203.0.113.9", "198.51.100.1", TRUSTED) == ipaddress.ip_address(
        "203.0.113.9"
    )


def test_forged_leftmost_xff_behind_trusted_proxy_is_ignored() -> None:
    """Behind a proxy, the client-supplied leftmost entry is skipped for the real hop."""
    xff = "198.51.100.1, 203.0.113.9"  # client forged the first, the proxy appended the second
    assert client_address("10.0.0.5", xff, TRUSTED) == ipaddress.ip_address("203.0.113.9")


def test_xff_chain_through_several_trusted_proxies() -> None:
    """Trusted proxies are skipped from the right until the first untrusted hop."""
    xff = "1.1.1.1, 203.0.113.9, 10.1.1.1, fd00::7"
    assert client_address("10.0.0.5", xff, TRUSTED) == ipaddress.ip_address("203.0.113.9")


def test_all_hops_trusted_returns_leftmost() -> None:
    """When every hop is trusted (internal caller), the leftmost trusted hop is the client."""
    assert client_address("10.0.0.5", "10.9.9.9, 10.1.1.1", TRUSTED) == ipaddress.ip_address(
        "10.9.9.9"
    )
    assert client_address("10.0.0.5", None, TRUSTED) == ipaddress.ip_address("10.0.0.5")


def test_unparseable_hop_to_be_read_fails_closed() -> None:
    """Garbage where the client hop should be gives None (not a guess); none raise."""
    assert client_address("10.0.0.5", "203.0.113.9, garbage", TRUSTED) is None
    assert client_address("10.0.0.5", "unknown", TRUSTED) is None
    assert client_address(None, "1.2.3.4", TRUSTED) is None
    assert client_address("not-an-ip", None, TRUSTED) is None


def test_address_forms_ports_brackets_and_mapped_ipv4() -> None:
    """Ports, [IPv6]:port and IPv4-mapped IPv6 are normalised."""
    assert client_address("10.0.0.5", "203.0.113.9:5555", TRUSTED) == ipaddress.ip_address(
        "203.0.113.9"
    )
    assert client_address("10.0.0.5", "[2001:db8::1]:443", TRUSTED) == ipaddress.ip_address(
        "2001:db8::1"
    )
    assert client_address("::ffff:10.0.0.5", "203.0.113.9", TRUSTED) == ipaddress.ip_address(
        "203.0.113.9"
    )


def test_check_source_allow_list() -> None:
    """Allowed sources pass; others (and unknown peers) get source_not_allowed (403)."""
    verifier = _verifier({"ALLOWED_SOURCE_CIDRS": "203.0.113.0/24, 2001:db8::/32",
                          "TRUSTED_PROXY_CIDRS": "10.0.0.0/8"})
    refused = Failure(Scheme.SOURCE_IP, Reason.SOURCE_NOT_ALLOWED)
    assert verifier.check_source("203.0.113.9", {}) is None
    assert verifier.check_source("2001:db8::5", {}) is None
    assert verifier.check_source("198.51.100.1", {}) == refused
    assert verifier.check_source(None, {}) == refused
    # A disallowed client cannot get in by forging XFF, directly or behind the proxy.
    assert verifier.check_source("198.51.100.1", {"X-Forwarded-For": "203.0.113.9"}) == refused
    assert verifier.check_source(
        "10.0.0.5", {"x-forwarded-for": "203.0.113.9, 198.51.100.1"}
    ) == refused
    assert verifier.check_source("10.0.0.5", {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}) \
        is None
    assert refused.status == 403


def test_check_source_joins_repeated_xff_headers_in_order() -> None:
    """Several X-Forwarded-For headers are read as one list, last header rightmost."""
    verifier = _verifier({"ALLOWED_SOURCE_CIDRS": "203.0.113.0/24",
                          "TRUSTED_PROXY_CIDRS": "10.0.0.0/8"})
    headers = CIMultiDict([("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "10.2.2.2")])
    assert verifier.check_source("10.0.0.5", CIMultiDictProxy(headers)) is None
    forged = CIMultiDict([("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "198.51.100.1")])
    assert verifier.check_source("10.0.0.5", CIMultiDictProxy(forged)) is not None


# --- property tests ---------------------------------------------------------------

# Include lone surrogates: aiohttp can hand those over for undecodable bytes.
_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)
_header_names = st.sampled_from([
    "webhook-id", "webhook-timestamp", "webhook-signature", "X-Webhook-Timestamp",
    "X-Webhook-Signature", "X-Forwarded-For", "WEBHOOK-SIGNATURE",
]) | _text
_timestamps = st.integers(-(10**20), 10**20).map(str) | _text


_ONE_SCHEME_EACH = [
    {"CALLBACK_TOKENS": _token()},
    {"CALLBACK_URL_SIGNING_KEY": _token()},
    {"PROVIDER_HMAC_KEY": _token()},
    {"STANDARD_WEBHOOKS_SECRETS": _whsec()},
    {"ALLOWED_SOURCE_CIDRS": "203.0.113.0/24", "TRUSTED_PROXY_CIDRS": "10.0.0.0/8",
     "CALLBACK_TOKENS": _token()},
]
# One verifier per scheme, so garbage reaches every scheme (not only the first configured).
VERIFIERS = [_verifier(environ) for environ in _ONE_SCHEME_EACH]


@settings(max_examples=400)
@given(
    query=st.dictionaries(st.sampled_from(["token", "ref", "exp", "sig"]) | _text, _text),
    headers=st.dictionaries(_header_names, _text | _timestamps),
    body=st.binary(max_size=300),
    task_id=st.none() | _text,
    peer=st.none() | _text | st.ip_addresses().map(str),
)
def test_property_arbitrary_requests_never_raise_nor_verify(
    query: dict[str, str], headers: dict[str, str], body: bytes, task_id: str | None,
    peer: str | None,
) -> None:
    """Arbitrary queries, headers, bodies, task ids and peers never raise and never verify."""
    for verifier in VERIFIERS:
        assert isinstance(verifier.verify(query, headers, body, task_id), Failure)
        result = verifier.check_source(peer, headers)
        assert result is None or result.reason is Reason.SOURCE_NOT_ALLOWED
    proxy = CIMultiDictProxy(CIMultiDict(headers))
    assert isinstance(VERIFIERS[3].verify(query, proxy, body, task_id), Failure)


@settings(max_examples=400)
@given(peer=st.none() | _text | st.ip_addresses().map(str), xff=st.none() | _text |
       st.lists(st.ip_addresses().map(str) | _text, max_size=80).map(", ".join))
def test_property_client_address_never_raises(peer: str | None, xff: str | None) -> None:
    """client_address accepts any peer and X-Forwarded-For text."""
    client_address(peer, xff, TRUSTED)


@settings(max_examples=300)
@given(task_id=st.text(min_size=1, max_size=100), signature=_text, timestamp=_timestamps)
def test_property_random_provider_signature_never_verifies(
    task_id: str, signature: str, timestamp: str
) -> None:
    """A guessed provider signature never verifies."""
    headers = {"X-Webhook-Timestamp": timestamp, "X-Webhook-Signature": signature}
    assert verify_provider_hmac(headers, task_id, [secrets.token_bytes(32)], NOW, 1800) is not None


@settings(max_examples=300)
@given(msg_id=_text, signature=_text, timestamp=_timestamps, body=st.binary(max_size=200))
def test_property_random_standard_signature_never_verifies(
    msg_id: str, signature: str, timestamp: str, body: bytes
) -> None:
    """A guessed Standard Webhooks signature never verifies."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    assert verify_standard_webhooks(headers, body, [secrets.token_bytes(32)], NOW) is not None


@settings(max_examples=300)
@given(key=st.text(min_size=1, max_size=64), task_id=st.text(min_size=1, max_size=100),
       skew=st.integers(-1800, 1800))
def test_property_correct_provider_signature_always_verifies(
    key: str, task_id: str, skew: int
) -> None:
    """With any key and task id, the correct provider signature within tolerance verifies."""
    timestamp = str(int(NOW) + skew)
    headers = {"X-Webhook-Timestamp": timestamp,
               "X-Webhook-Signature": provider_signature(key, task_id, timestamp)}
    key_bytes = key.encode("utf-8", "surrogatepass")
    assert verify_provider_hmac(headers, task_id, [key_bytes], NOW, 1800) is None


_header_safe = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60
)


@settings(max_examples=300)
@given(secret=st.binary(min_size=1, max_size=64), msg_id=_header_safe, body=st.binary(),
       skew=st.integers(-300, 300))
def test_property_correct_standard_signature_always_verifies(
    secret: bytes, msg_id: str, body: bytes, skew: int
) -> None:
    """With any secret, id and body, the correct v1 signature within 300 s verifies."""
    timestamp = str(int(NOW) + skew)
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp,
               "webhook-signature": standard_webhooks_signature(secret, msg_id, timestamp, body)}
    assert verify_standard_webhooks(headers, body, [secret], NOW) is None


@settings(max_examples=200)
@given(token=st.text(min_size=16, max_size=64).filter(lambda t: "," not in t and t.strip() == t))
def test_property_configured_token_always_verifies(token: str) -> None:
    """Any configured token (no commas or surrounding spaces) verifies and nothing else does."""
    verifier = Verifier(SecurityConfig(callback_tokens=(token,)), FakeClock(NOW))
    assert verifier.verify({"token": token}, {}, b"", None) == Verified(
        None, token_id(token), (Scheme.TOKEN,)
    )
    assert isinstance(verifier.verify({"token": token + "x"}, {}, b"", None), Failure)
