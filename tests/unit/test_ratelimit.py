"""Token-bucket rate limiter with an injected clock."""

from __future__ import annotations

import ipaddress
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.gateway.security import RateLimiter, address_key
from tests.harness.fakes import FakeClock


def _drain(limiter: RateLimiter, key: str) -> int:
    allowed = 0
    while limiter.allow(key)[0]:
        allowed += 1
    return allowed


def test_burst_is_honoured_then_refused() -> None:
    """A new key may make exactly `burst` requests at once."""
    limiter = RateLimiter(rate=1, burst=5, clock=FakeClock())
    assert [limiter.allow("a")[0] for _ in range(6)] == [True] * 5 + [False]


def test_refills_at_the_configured_rate() -> None:
    """After draining, `rate * elapsed` requests are allowed again."""
    clock = FakeClock()
    limiter = RateLimiter(rate=5, burst=10, clock=clock)
    assert _drain(limiter, "a") == 10
    clock.advance(1.0)
    assert _drain(limiter, "a") == 5
    clock.advance(0.2)
    assert _drain(limiter, "a") == 1


def test_refill_is_capped_at_burst() -> None:
    """A long idle period never accumulates more than `burst` tokens."""
    clock = FakeClock()
    limiter = RateLimiter(rate=100, burst=3, clock=clock)
    _drain(limiter, "a")
    clock.advance(3600)
    assert _drain(limiter, "a") == 3


def test_retry_after_is_time_until_next_token() -> None:
    """Retry-After is 0 when allowed, else the seconds until one token refills."""
    clock = FakeClock()
    limiter = RateLimiter(rate=2, burst=1, clock=clock)
    assert limiter.allow("a") == (True, 0.0)
    allowed, retry_after = limiter.allow("a")
    assert not allowed
    assert retry_after == pytest.approx(0.5)
    clock.advance(0.2)
    allowed, retry_after = limiter.allow("a")
    assert not allowed
    assert retry_after == pytest.approx(0.3)
    clock.advance(0.3)
    assert limiter.allow("a")[0]


def test_retry_after_for_slow_rates_rounds_up_to_header_seconds() -> None:
    """With 0.1 req/s the wait is 10 s; math.ceil gives the Retry-After header value."""
    limiter = RateLimiter(rate=0.1, burst=1, clock=FakeClock())
    limiter.allow("a")
    assert math.ceil(limiter.allow("a")[1]) == 10


def test_refused_requests_do_not_consume_tokens() -> None:
    """Hammering while limited does not push the next allowed request further out."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    limiter.allow("a")
    for _ in range(100):
        limiter.allow("a")
    clock.advance(1.0)
    assert limiter.allow("a")[0]


def test_keys_are_independent() -> None:
    """One key's exhaustion does not limit another."""
    limiter = RateLimiter(rate=1, burst=2, clock=FakeClock())
    _drain(limiter, "a")
    assert limiter.allow("b") == (True, 0.0)


def test_keys_are_bounded_with_lru_eviction() -> None:
    """Beyond max_keys the least recently used key is forgotten; recent ones are kept."""
    limiter = RateLimiter(rate=0.001, burst=1, max_keys=3, clock=FakeClock())
    limiter.allow("hot")  # exhausted
    for index in range(1000):
        limiter.allow(f"k{index}")
        assert not limiter.allow("hot")[0], "recently used key must keep its state"
        assert len(limiter) <= 3
    assert len(limiter) == 3
    # "k0" was evicted long ago, so it comes back with a full bucket.
    assert limiter.allow("k0")[0]


def test_clock_going_backwards_adds_no_tokens() -> None:
    """A clock step backwards neither refills nor breaks the bucket."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    limiter.allow("a")
    clock.advance(-50)
    assert not limiter.allow("a")[0]
    clock.advance(1)
    assert limiter.allow("a")[0]


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"),
    [(0, 1, 1), (-1, 1, 1), (math.nan, 1, 1), (math.inf, 1, 1), (1, 0, 1), (1, 1, 0)],
)
def test_invalid_parameters_are_refused(rate: float, burst: int, max_keys: int) -> None:
    """Non-positive or non-finite rate, burst < 1 and max_keys < 1 raise ValueError."""
    with pytest.raises(ValueError, match="must"):
        RateLimiter(rate=rate, burst=burst, max_keys=max_keys)


def test_address_key_groups_ipv6_by_64_and_keeps_ipv4() -> None:
    """IPv6 clients are keyed by /64 (one host controls it); IPv4 by address."""
    a = ipaddress.ip_address("2001:db8:1:2::1")
    b = ipaddress.ip_address("2001:db8:1:2:ffff::9")
    assert address_key(a) == address_key(b) == "2001:db8:1:2::/64"
    assert address_key(ipaddress.ip_address("192.0.2.7")) == "192.0.2.7"


@settings(max_examples=200)
@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 50),
    steps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_property_allowed_never_exceeds_burst_plus_refill(
    rate: float, burst: int, steps: list[float]
) -> None:
    """Over any request pattern, allowed <= burst + rate * elapsed."""
    clock = FakeClock(0.0)
    limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
    allowed = 0
    for step in steps:
        clock.advance(step)
        allowed += limiter.allow("k")[0]
    assert allowed <= burst + rate * clock.now + 1e-6


def test_retry_after_peeks_without_taking_a_token() -> None:
    """The pre-body check asks; only failures pay."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    assert limiter.retry_after("a") == 0.0
    assert len(limiter) == 0  # asking creates no bucket
    limiter.charge("a")
    assert limiter.retry_after("a") == 0.0
    assert limiter.retry_after("a") == 0.0  # still one token: peeking took nothing
    limiter.charge("a")
    assert limiter.retry_after("a") == pytest.approx(1.0)
    clock.advance(0.25)
    assert limiter.retry_after("a") == pytest.approx(0.75)


def test_a_charge_costs_its_weight_and_never_goes_below_zero() -> None:
    """An expensive failure (a large body to verify) costs more; the debt is bounded."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=10, clock=clock)
    limiter.charge("a", cost=4)
    assert _drain(limiter, "a") == 6
    limiter.charge("b", cost=1000)
    clock.advance(1.0)
    assert limiter.retry_after("b") == 0.0  # one second refills one token, not -989 + 1
