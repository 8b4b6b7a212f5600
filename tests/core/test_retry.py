"""Backoff with jitter and Retry-After, and the retry loop with a sleep that only records."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ProviderError
from core.retry import RETRY_AFTER_CAP_S, RetryPolicy, backoff_delay, call_with_retries

pytestmark = pytest.mark.anyio

NO_JITTER = RetryPolicy(max_attempts=5, base_s=0.5, max_s=4.0, jitter=False)


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def test_exponential_without_jitter() -> None:
    assert [backoff_delay(NO_JITTER, a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_huge_attempt_numbers_stay_capped() -> None:
    assert backoff_delay(NO_JITTER, 10_000) == 4.0


@given(attempt=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_full_jitter_stays_within_the_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base_s=0.5, max_s=30.0)
    cap = min(30.0, 0.5 * 2 ** (attempt - 1))
    delay = backoff_delay(policy, attempt, None, random.Random(seed))
    assert 0.0 <= delay <= cap


def test_jitter_spreads_the_waits() -> None:
    rng = random.Random(1)
    policy = RetryPolicy(base_s=1.0, max_s=30.0)
    delays = {round(backoff_delay(policy, 4, None, rng), 6) for _ in range(20)}
    assert len(delays) > 10


def test_retry_after_is_a_floor() -> None:
    assert backoff_delay(NO_JITTER, 1, retry_after=3.0) == 3.0
    assert backoff_delay(NO_JITTER, 4, retry_after=1.0) == 4.0  # backoff already longer


def test_retry_after_beyond_max_is_honoured_up_to_the_hard_cap() -> None:
    assert backoff_delay(NO_JITTER, 1, retry_after=60.0) == 60.0
    assert backoff_delay(NO_JITTER, 1, retry_after=10_000.0) == RETRY_AFTER_CAP_S


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="attempt counts from 1"):
        backoff_delay(NO_JITTER, 0)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def flaky(
    errors: list[ProviderError], result: str = "ok"
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, fn


async def test_success_first_time() -> None:
    sleep = Recorder()
    calls, fn = flaky([])
    assert await call_with_retries(fn, NO_JITTER, sleep=sleep) == ("ok", 0)
    assert sleep.delays == []
    assert len(calls) == 1


async def test_retries_then_succeeds_with_recorded_delays() -> None:
    sleep = Recorder()
    seen: list[tuple[int, str, float]] = []
    errors = [
        ProviderError("HTTP 503", status=503, retryable=True),
        ProviderError("HTTP 429", status=429, retryable=True, retry_after=2.5),
    ]
    calls, fn = flaky(errors)
    result = await call_with_retries(
        fn,
        NO_JITTER,
        on_retry=lambda attempt, err, delay: seen.append((attempt, str(err), delay)),
        sleep=sleep,
    )
    assert result == ("ok", 2)
    assert sleep.delays == [0.5, 2.5]
    assert seen == [(1, "HTTP 503", 0.5), (2, "HTTP 429", 2.5)]
    assert len(calls) == 3


async def test_never_retries_a_non_retryable_error() -> None:
    sleep = Recorder()
    calls, fn = flaky([ProviderError("HTTP 401", status=401, retryable=False)])
    with pytest.raises(ProviderError, match="HTTP 401"):
        await call_with_retries(fn, NO_JITTER, sleep=sleep)
    assert sleep.delays == []
    assert len(calls) == 1


async def test_stops_after_max_attempts_with_the_last_error() -> None:
    sleep = Recorder()
    errors = [ProviderError(f"fail {i}", retryable=True) for i in range(10)]
    calls, fn = flaky(errors)
    policy = RetryPolicy(max_attempts=3, base_s=0.1, max_s=1.0, jitter=False)
    with pytest.raises(ProviderError, match="fail 2"):
        await call_with_retries(fn, policy, sleep=sleep)
    assert len(calls) == 3
    assert sleep.delays == [0.1, 0.2]


async def test_single_attempt_policy_never_sleeps() -> None:
    sleep = Recorder()
    calls, fn = flaky([ProviderError("busy", retryable=True)])
    with pytest.raises(ProviderError):
        await call_with_retries(fn, RetryPolicy(max_attempts=1), sleep=sleep)
    assert sleep.delays == []
    assert len(calls) == 1


async def test_retry_after_past_the_cap_fails_at_once() -> None:
    sleep = Recorder()
    calls, fn = flaky([ProviderError("quota", status=429, retryable=True, retry_after=3600)])
    with pytest.raises(ProviderError, match="quota"):
        await call_with_retries(fn, NO_JITTER, sleep=sleep)
    assert sleep.delays == []
    assert len(calls) == 1


async def test_other_exceptions_pass_through() -> None:
    sleep = Recorder()

    async def fn() -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await call_with_retries(fn, NO_JITTER, sleep=sleep)
    assert sleep.delays == []


async def test_cancellation_during_the_wait_is_not_swallowed() -> None:
    calls, fn = flaky([ProviderError("busy", retryable=True)] * 5)
    policy = RetryPolicy(max_attempts=5, base_s=10.0, max_s=10.0, jitter=False)
    with anyio.move_on_after(0.05) as scope:
        await call_with_retries(fn, policy)
    assert scope.cancelled_caught
    assert len(calls) == 1


async def test_a_throttled_call_keeps_going_while_the_server_says_when_to_come_back() -> None:
    sleep = Recorder()
    throttled = [ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.2)] * 10
    calls, fn = flaky(throttled)
    policy = RetryPolicy(max_attempts=2, base_s=0.1, max_s=1.0, jitter=False)
    assert await call_with_retries(fn, policy, sleep=sleep) == ("ok", 10)
    assert sleep.delays == [0.2] * 10  # the server's word, not a growing backoff
    assert len(calls) == 11


async def test_429s_without_retry_after_and_other_failures_still_count() -> None:
    sleep = Recorder()
    errors = [
        ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.2),
        ProviderError("HTTP 503", status=503, retryable=True),
        ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.2),
        ProviderError("HTTP 429 bare", status=429, retryable=True),
    ]
    calls, fn = flaky(errors)
    policy = RetryPolicy(max_attempts=2, base_s=0.1, max_s=1.0, jitter=False)
    with pytest.raises(ProviderError, match="HTTP 429 bare"):
        await call_with_retries(fn, policy, sleep=sleep)
    assert len(calls) == 4
    assert sleep.delays == [0.2, 0.1, 0.2]
