"""Time parsing and RFC 3339 formatting (pure)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, tzinfo
from typing import Final

# Epoch values below this are read as seconds, above as milliseconds: 1e11 seconds
# is the year 5138, 1e11 milliseconds is 1973, so the two ranges cannot be confused
# for any plausible creation time.
_MILLIS_THRESHOLD: Final = 100_000_000_000


def rfc3339(moment: datetime) -> str:
    """``2025-01-01T00:00:00.123456Z``: UTC, microseconds only when non-zero."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    # isoformat, not strftime: strftime("%Y") does not pad years before 1000 (RFC 3339
    # needs four digits); isoformat pads, leaves out zero microseconds, and is C (this is
    # on every request's path).
    return utc.replace(tzinfo=None).isoformat() + "Z"


def epoch_seconds(value: object) -> float | None:
    """An RFC 3339 / ISO 8601 timestamp (ours: ``received_at``, ``created_at``, ``ce_time``)
    as epoch seconds; a naive time is read as UTC; anything else is None."""
    if not isinstance(value, str):
        return None
    moment = _parse_iso(value, UTC)
    return None if moment is None else moment.timestamp()


def parse_create_time(value: object, provider_tz: tzinfo) -> str | None:
    """See :func:`_parse_create_time`; the common scalar forms are cached (the tracks
    of one task, and its stages, carry the same few creation times)."""
    if type(value) in _CACHEABLE:
        return _parse_create_time_cached(value, provider_tz)
    return _parse_create_time(value, provider_tz)


def _parse_create_time(value: object, provider_tz: tzinfo) -> str | None:
    """The provider's ``createTime`` in any known form, as RFC 3339 UTC, or None.

    Known forms: ``"2025-01-01 00:00:00"`` (no zone: read in the provider's zone),
    an integer of epoch milliseconds (what real callbacks carry), the same as a
    digit string, and ISO 8601 with or without a zone. Anything else is None:
    a bad timestamp is not a reason to lose a callback.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return _from_epoch(float(text))
    # The provider's "2025-01-01 00:00:00" is ISO 8601 with a space for the T, which
    # fromisoformat reads (in C, twenty times faster than strptime); a zone-less time is
    # read in the provider's zone.
    moment = _parse_iso(text, provider_tz)
    if moment is None:  # unpadded fields ("2025-1-1 0:00:00"), which only strptime reads
        try:
            moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=provider_tz)
        except ValueError:
            return None
    return rfc3339(moment)


_CACHEABLE: Final = (str, int)
_parse_create_time_cached = functools.lru_cache(maxsize=1024)(_parse_create_time)


def _parse_iso(text: str, default_tz: tzinfo) -> datetime | None:
    """ISO 8601 with or without a zone (a zone-less time is read in ``default_tz``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=default_tz)


def _from_epoch(number: float) -> str | None:
    seconds = number / 1000 if number >= _MILLIS_THRESHOLD else number
    try:
        return rfc3339(datetime.fromtimestamp(seconds, tz=UTC))
    except (OverflowError, OSError, ValueError):
        return None
