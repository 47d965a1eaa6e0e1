"""The one retry-with-backoff helper (service/retry.py): waits, retries, stop, what propagates."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import structlog

from service.retry import RECONNECT, Backoff, retry_until_stopped

FAST = Backoff(first=0.001, cap=0.004)


def test_backoff_doubles_up_to_its_cap_with_jitter_below_each_step() -> None:
    backoff = Backoff(first=0.5, cap=10.0)
    for failures, step in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (40, 10.0)]:
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(0.5 * step <= d < step for d in delays), (failures, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.1 * step  # jittered, not one fixed wait


def test_backoff_stays_finite_after_any_number_of_failures() -> None:
    assert Backoff(first=0.5, cap=math.inf).delay(100_000) < math.inf
    assert RECONNECT.delay(100_000) < RECONNECT.cap


async def test_retries_the_listed_errors_until_the_call_succeeds() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionRefusedError
        return "connected"

    with structlog.testing.capture_logs() as logs:
        result = await retry_until_stopped(flaky, retry_on=(OSError,),
                                           failure_event="connect_failed", backoff=FAST)
    assert (result, calls) == ("connected", 4)
    failures = [line for line in logs if line["event"] == "connect_failed"]
    assert [line["attempt"] for line in failures] == [1, 2, 3]
    assert {line["error"] for line in failures} == {"ConnectionRefusedError"}
    assert all(line["log_level"] == "warning" for line in failures)


async def test_an_error_not_listed_propagates_at_once() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retry_until_stopped(broken, retry_on=(OSError,), failure_event="x", backoff=FAST)
    assert calls == 1


async def test_stopped_before_the_first_attempt_makes_none() -> None:
    async def never_called() -> int:
        raise AssertionError("attempted although stopped")

    assert await retry_until_stopped(never_called, retry_on=(OSError,), failure_event="x",
                                     stopped=lambda: True) is None


async def test_a_stop_during_a_long_wait_ends_it_within_a_fraction_of_a_second() -> None:
    stop = asyncio.Event()
    calls = 0

    async def down() -> str:
        nonlocal calls
        calls += 1
        raise OSError("broker unreachable")

    asyncio.get_running_loop().call_later(0.2, stop.set)
    started = time.monotonic()
    result = await retry_until_stopped(down, retry_on=(OSError,), failure_event="x",
                                       stopped=stop.is_set, backoff=Backoff(first=30, cap=30))
    assert result is None
    assert calls == 1  # no attempt after the stop
    assert time.monotonic() - started < 2.0  # not the 15-30 s wait
