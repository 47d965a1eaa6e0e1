"""Per-task signed callback URLs: sign, verify, tamper, expire, rotate."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from service.gateway.security import (
    Failure,
    Ok,
    Reason,
    Scheme,
    sign_callback_url,
    valid_ref,
    verify_signed_query,
)

NOW = datetime(2025, 9, 16, 12, 0, tzinfo=UTC)
BASE = "https://gw.example.test/callbacks/music"


def _query(url: str) -> dict[str, str]:
    """Decode the query the way aiohttp does (via yarl)."""
    return dict(URL(url).query)


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


def test_valid_signed_url_verifies_and_returns_ref(key: bytes) -> None:
    """A freshly signed URL verifies and yields its task ref."""
    url = sign_callback_url(BASE, "task-123", key, now=NOW)
    assert verify_signed_query(_query(url), key, NOW + timedelta(hours=47)) == Ok("task-123")


def test_signature_is_unpadded_base64url_hmac_of_ref_dot_exp(key: bytes) -> None:
    """sig = base64url(HMAC-SHA256(key, f"{ref}.{exp}")) without padding; exp = now + 48 h."""
    query = _query(sign_callback_url(BASE, "task-123", key, now=NOW))
    exp = int((NOW + timedelta(hours=48)).timestamp())
    assert query["exp"] == str(exp)
    digest = hmac.new(key, f"task-123.{exp}".encode(), hashlib.sha256).digest()
    assert query["sig"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert "=" not in query["sig"]


def test_existing_query_params_are_kept_and_stale_signature_params_replaced(key: bytes) -> None:
    """Signing keeps e.g. ?token= and replaces any previous ref/exp/sig."""
    url = sign_callback_url(f"{BASE}?token=abc%2Bdef&ref=old&sig=old", "task-1", key, now=NOW)
    query = URL(url).query
    assert query.getall("token") == ["abc+def"]
    assert query.getall("ref") == ["task-1"]
    assert len(query.getall("sig")) == 1
    assert verify_signed_query(dict(query), key, NOW) == Ok("task-1")


@pytest.mark.parametrize("ref", ["a b+c&d=e", "täsk/ü?#", "x" * 128, "a.b.1234"])
def test_refs_with_special_characters_round_trip(key: bytes, ref: str) -> None:
    """Refs with spaces, '+', '&', '.', non-ASCII and max length survive URL encoding."""
    url = sign_callback_url(BASE, ref, key, now=NOW)
    assert verify_signed_query(_query(url), key, NOW) == Ok(ref)


def test_tampered_ref_is_refused(key: bytes) -> None:
    """Changing ref invalidates the signature."""
    query = _query(sign_callback_url(BASE, "task-1", key, now=NOW))
    query["ref"] = "task-2"
    assert verify_signed_query(query, key, NOW) == Failure(Scheme.SIGNED_URL, Reason.BAD_SIGNATURE)


def test_tampered_exp_is_refused(key: bytes) -> None:
    """Extending exp invalidates the signature (including a leading-zero re-spelling)."""
    query = _query(sign_callback_url(BASE, "task-1", key, now=NOW))
    for exp in (str(int(query["exp"]) + 3600), "0" + query["exp"]):
        tampered = {**query, "exp": exp}
        assert verify_signed_query(tampered, key, NOW) == Failure(
            Scheme.SIGNED_URL, Reason.BAD_SIGNATURE
        )


def test_expired_url_is_refused_with_expired_signature(key: bytes) -> None:
    """A genuine URL is valid strictly before exp and expired from exp on."""
    query = _query(sign_callback_url(BASE, "task-1", key, expires_in=timedelta(hours=1), now=NOW))
    exp = NOW + timedelta(hours=1)
    assert verify_signed_query(query, key, exp - timedelta(seconds=1)) == Ok("task-1")
    expired = Failure(Scheme.SIGNED_URL, Reason.EXPIRED_SIGNATURE)
    assert verify_signed_query(query, key, exp) == expired
    assert verify_signed_query(query, key, exp + timedelta(days=3)) == expired


def test_wrong_key_is_refused(key: bytes) -> None:
    """A URL signed with another key does not verify."""
    query = _query(sign_callback_url(BASE, "task-1", secrets.token_bytes(32), now=NOW))
    assert verify_signed_query(query, key, NOW) == Failure(Scheme.SIGNED_URL, Reason.BAD_SIGNATURE)


def test_expired_is_reported_only_for_genuine_signatures(key: bytes) -> None:
    """A forged, expired URL reports bad_signature, not expired_signature."""
    query = _query(sign_callback_url(BASE, "task-1", secrets.token_bytes(32), now=NOW))
    assert verify_signed_query(query, key, NOW + timedelta(days=5)) == Failure(
        Scheme.SIGNED_URL, Reason.BAD_SIGNATURE
    )


def test_rotation_accepts_any_listed_key(key: bytes) -> None:
    """During rotation URLs signed with the old or the new key verify; unlisted keys don't."""
    old, new = secrets.token_bytes(32), key
    for signer in (old, new):
        query = _query(sign_callback_url(BASE, "t", signer, now=NOW))
        assert verify_signed_query(query, (new, old), NOW) == Ok("t")
    old_query = _query(sign_callback_url(BASE, "t", old, now=NOW))
    assert verify_signed_query(old_query, (new,), NOW) == Failure(
        Scheme.SIGNED_URL, Reason.BAD_SIGNATURE
    )


def test_str_key_equals_its_utf8_bytes(key: bytes) -> None:
    """A key given as text (from the environment) is its UTF-8 bytes."""
    text_key = secrets.token_urlsafe(32)
    query = _query(sign_callback_url(BASE, "t", text_key, now=NOW))
    assert verify_signed_query(query, text_key.encode(), NOW) == Ok("t")


@pytest.mark.parametrize("missing", ["ref", "exp", "sig"])
def test_missing_parameter_is_missing_signature(key: bytes, missing: str) -> None:
    """Any of ref/exp/sig absent or empty gives missing_signature."""
    query = _query(sign_callback_url(BASE, "t", key, now=NOW))
    failure = Failure(Scheme.SIGNED_URL, Reason.MISSING_SIGNATURE)
    without = {k: v for k, v in query.items() if k != missing}
    assert verify_signed_query(without, key, NOW) == failure
    assert verify_signed_query({**query, missing: ""}, key, NOW) == failure


@pytest.mark.parametrize(
    ("name", "value"),
    [("ref", "a\nb"), ("ref", "x" * 129), ("ref", "\x00"), ("exp", "-5"), ("exp", "1e9"),
     ("exp", "\uff11\uff12\uff13"), ("exp", "9" * 16)],
)
def test_malformed_ref_or_exp_is_malformed_signature(key: bytes, name: str, value: str) -> None:
    """Control characters, over-long refs and non-digit or huge exp are malformed."""
    query = _query(sign_callback_url(BASE, "t", key, now=NOW))
    assert verify_signed_query({**query, name: value}, key, NOW) == Failure(
        Scheme.SIGNED_URL, Reason.MALFORMED_SIGNATURE
    )


def test_sign_rejects_invalid_arguments(key: bytes) -> None:
    """Signing refuses bad refs, empty keys, non-positive lifetimes and naive datetimes."""
    with pytest.raises(ValueError, match="task_ref"):
        sign_callback_url(BASE, "", key, now=NOW)
    with pytest.raises(ValueError, match="task_ref"):
        sign_callback_url(BASE, "a\tb", key, now=NOW)
    with pytest.raises(ValueError, match="key"):
        sign_callback_url(BASE, "t", b"", now=NOW)
    with pytest.raises(ValueError, match="expires_in"):
        sign_callback_url(BASE, "t", key, expires_in=timedelta(0), now=NOW)
    with pytest.raises(ValueError, match="timezone"):
        sign_callback_url(BASE, "t", key, now=datetime(2025, 1, 1))  # noqa: DTZ001


def test_valid_ref_bounds() -> None:
    """Refs are 1..128 printable characters."""
    assert valid_ref("a")
    assert valid_ref("x" * 128)
    assert not valid_ref("")
    assert not valid_ref("x" * 129)
    assert not valid_ref("a\u200bb")  # zero-width space: a format character
    assert not valid_ref(None)


_refs = st.text(min_size=1, max_size=128).filter(valid_ref)
# Include lone surrogates: aiohttp can hand those over for undecodable bytes.
_any_text = st.text(alphabet=st.characters(exclude_categories=()))


@settings(max_examples=200)
@given(key=st.binary(min_size=1, max_size=64), ref=_refs, hours=st.integers(1, 24 * 30))
def test_property_correct_signature_always_verifies(key: bytes, ref: str, hours: int) -> None:
    """With any key and any valid ref, the URL we sign verifies until it expires."""
    url = sign_callback_url(BASE, ref, key, expires_in=timedelta(hours=hours), now=NOW)
    assert verify_signed_query(_query(url), key, NOW) == Ok(ref)


@settings(max_examples=300)
@given(query=st.dictionaries(st.sampled_from(["ref", "exp", "sig", "token", ""]) | _any_text,
                             _any_text))
def test_property_arbitrary_query_never_raises_nor_verifies(query: dict[str, str]) -> None:
    """Arbitrary query text never raises and never verifies."""
    result = verify_signed_query(query, b"k" * 32, NOW)
    assert isinstance(result, Failure)


@settings(max_examples=200)
@given(ref=_refs, exp=st.integers(0, 10**12), sig=_any_text)
def test_property_random_signature_never_verifies(ref: str, exp: int, sig: str) -> None:
    """A guessed sig for a well-formed ref/exp never verifies."""
    result = verify_signed_query({"ref": ref, "exp": str(exp), "sig": sig}, secrets.token_bytes(32),
                                 NOW)
    assert isinstance(result, Failure)
    assert result.reason in {Reason.BAD_SIGNATURE, Reason.MISSING_SIGNATURE}


def test_sign_url_command_mints_a_url_the_verifier_accepts() -> None:
    """``python -m service sign-url`` prints a URL carrying ref, exp and sig."""
    from urllib.parse import parse_qsl, urlsplit

    from tests.harness.processes import run_command

    key = secrets.token_urlsafe(32)
    result = run_command(["sign-url", "--task-ref", "order-7", "--base-url",
                          "https://hooks.example.test/callbacks/extend-music?token=t"],
                         {"CALLBACK_URL_SIGNING_KEY": key})
    assert result.returncode == 0, result.stderr
    query = dict(parse_qsl(urlsplit(result.stdout.strip()).query))
    assert query["token"] == "t"
    verified = verify_signed_query(query, key.encode(), datetime.now(UTC))
    assert isinstance(verified, Ok)
    assert verified.task_ref == "order-7"
    missing = run_command(["sign-url", "--task-ref", "x", "--base-url", "https://h.test/"], {})
    assert missing.returncode == 2
    assert "CALLBACK_URL_SIGNING_KEY" in missing.stderr
