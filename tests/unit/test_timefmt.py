"""RFC 3339 timestamps the event schema accepts, whatever the year."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.core.timefmt import parse_create_time, rfc3339

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")  # the schema's


@pytest.mark.parametrize(("moment", "expected"), [
    (datetime(2025, 1, 1, tzinfo=UTC), "2025-01-01T00:00:00Z"),
    (datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), "2025-01-01T00:00:00.123456Z"),
    (datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), "0999-12-31T23:59:59Z"),
    (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
])
def test_years_are_four_digits(moment: datetime, expected: str) -> None:
    assert rfc3339(moment) == expected
    assert TIMESTAMP.match(expected)


def test_an_epoch_before_year_1000_still_matches_the_schema() -> None:
    created = parse_create_time(-30610224001, UTC)  # found by hypothesis: year 999
    assert created is not None
    assert TIMESTAMP.match(created)


@pytest.mark.parametrize(("given", "expected"), [
    ("2025-01-01 08:00:00", "2025-01-01T00:00:00Z"),  # the provider's form, in its zone
    ("2025-1-1 8:00:00", "2025-01-01T00:00:00Z"),  # unpadded: not ISO 8601, still read
    ("2025-01-01T08:00:00", "2025-01-01T00:00:00Z"),
    ("2025-01-01T08:00:00+08:00", "2025-01-01T00:00:00Z"),  # its own zone wins
    ("2025-01-01T00:00:00.5Z", "2025-01-01T00:00:00.500000Z"),
    (1735689600000, "2025-01-01T00:00:00Z"),  # epoch milliseconds
    ("1735689600", "2025-01-01T00:00:00Z"),  # epoch seconds as digits
    ("yesterday", None),
    ("2025-13-01 00:00:00", None),
    ("", None),
])
def test_create_time_forms_in_the_provider_zone(given: object, expected: str | None) -> None:
    assert parse_create_time(given, timezone(timedelta(hours=8))) == expected
