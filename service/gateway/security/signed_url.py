"""Per-task signed callback URLs: ``?ref=<task ref>&exp=<unix s>&sig=<mac>``.

``sig`` is base64url (no padding) of HMAC-SHA256(key, f"{ref}.{exp}"). ``exp`` is
digits only, so the last ``.`` of the signed text always separates ref from exp
and a ``ref`` containing dots cannot be confused with another (ref, exp) pair.

Rotation: sign with the newest key; verify against every key still accepted
(several keys may be passed; all are compared so timing does not tell which).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote_plus, urlencode, urlsplit, urlunsplit

from service.config.security import Scheme
from service.gateway.security.verify import Failure, Ok, Reason

REF_PARAM = "ref"
EXP_PARAM = "exp"
SIG_PARAM = "sig"
DEFAULT_EXPIRES_IN = timedelta(hours=48)
MAX_REF_CHARS = 128
_MAX_EXP_DIGITS = 15

Key = bytes | str


def valid_ref(ref: object) -> bool:
    """1..128 printable characters (no control, format or line-separator characters)."""
    return isinstance(ref, str) and 1 <= len(ref) <= MAX_REF_CHARS and ref.isprintable()


def _key_bytes(key: Key) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")


def url_signature(key: Key, ref: str, exp: int | str) -> str:
    """base64url(HMAC-SHA256(key, f"{ref}.{exp}")) without padding."""
    message = f"{ref}.{exp}".encode("utf-8", "surrogatepass")
    digest = hmac.new(_key_bytes(key), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_callback_url(
    base_url: str,
    task_ref: str,
    key: Key,
    expires_in: timedelta = DEFAULT_EXPIRES_IN,
    now: datetime | None = None,
) -> str:
    """``base_url`` with ``ref``, ``exp`` and ``sig`` added to its query.

    Existing query parameters (e.g. ``token``) are kept verbatim; existing
    ``ref``/``exp``/``sig`` parameters are replaced. Raises ValueError for an invalid
    ref, an empty key, a non-positive lifetime or a naive ``now``.
    """
    if not valid_ref(task_ref):
        raise ValueError(f"task_ref must be 1..{MAX_REF_CHARS} printable characters")
    if not key:
        raise ValueError("signing key must not be empty")
    if expires_in <= timedelta(0):
        raise ValueError("expires_in must be positive")
    current = datetime.now(UTC) if now is None else now
    if current.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    exp = math.floor(current.timestamp() + expires_in.total_seconds())
    parts = urlsplit(base_url)
    kept = [
        piece
        for piece in parts.query.split("&")
        if piece and unquote_plus(piece.partition("=")[0]) not in {REF_PARAM, EXP_PARAM, SIG_PARAM}
    ]
    sig = url_signature(key, task_ref, exp)
    added = urlencode(
        [(REF_PARAM, task_ref), (EXP_PARAM, str(exp)), (SIG_PARAM, sig)],
        quote_via=quote,
        safe="",
    )
    query = "&".join([*kept, added])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def verify_signed_query(
    query: Mapping[str, str],
    key: Key | Sequence[Key],
    now: datetime,
) -> Ok | Failure:
    """Check ``ref``/``exp``/``sig`` from a decoded query; never raises on hostile values.

    The signature is checked before expiry, so ``expired_signature`` means a
    genuine URL whose lifetime is over (e.g. a provider retry after 48 h).
    """
    keys: Sequence[Key] = (key,) if isinstance(key, bytes | str) else key
    if not keys:
        raise ValueError("at least one key is required")
    scheme = Scheme.SIGNED_URL
    ref: object = query.get(REF_PARAM)
    exp_text: object = query.get(EXP_PARAM)
    sig: object = query.get(SIG_PARAM)
    if not (isinstance(ref, str) and isinstance(exp_text, str) and isinstance(sig, str)):
        return Failure(scheme, Reason.MISSING_SIGNATURE)
    if not (ref and exp_text and sig):
        return Failure(scheme, Reason.MISSING_SIGNATURE)
    if (
        not valid_ref(ref)
        or not (exp_text.isascii() and exp_text.isdigit())
        or len(exp_text) > _MAX_EXP_DIGITS
    ):
        return Failure(scheme, Reason.MALFORMED_SIGNATURE)
    given = sig.encode("utf-8", "surrogatepass")
    matched = False
    for candidate in keys:
        expected = url_signature(candidate, ref, exp_text).encode("ascii")
        matched |= hmac.compare_digest(given, expected)
    if not matched:
        return Failure(scheme, Reason.BAD_SIGNATURE)
    if int(exp_text) <= now.timestamp():
        return Failure(scheme, Reason.EXPIRED_SIGNATURE)
    return Ok(ref)
