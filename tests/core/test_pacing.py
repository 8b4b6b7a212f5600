"""Pacing a provider to its rate limits, on a fake clock: the headers read, the pace they
ask for, a spent bucket holding every request, and one ceiling cut per throttle window."""

from __future__ import annotations

import datetime

import httpx2
import pytest

from core.engine import AdaptiveLimiter
from core.http import RateLimitInfo, parse_duration, read_rate_limits
from core.pacing import SAFETY, Pacer, ThrottleWindow
from core.sim.ratelimits import RateLimits, go_duration

pytestmark = pytest.mark.anyio


class Clock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# --- the headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("1.5s", 1.5), ("6m0s", 360.0), ("1h2m3s", 3723.0), ("7", 7.0)],
)
def test_reset_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1", "5 parsecs"])
def test_unreadable_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_openai_headers() -> None:
    headers = httpx2.Headers(
        {
            "x-ratelimit-limit-requests": "9000",
            "x-ratelimit-remaining-requests": "8999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-tokens": "999000",
            "x-ratelimit-reset-tokens": "1m0s",
        }
    )
    assert read_rate_limits(headers) == RateLimitInfo(9000, 8999, 0.006, 1_000_000, 999_000, 60)


def test_anthropic_headers() -> None:
    now = 1_700_000_000.0
    reset = (
        datetime.datetime.fromtimestamp(now + 2, datetime.UTC).isoformat().replace("+00:00", "Z")
    )
    headers = httpx2.Headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
    )
    info = read_rate_limits(headers, now=now)
    assert info is not None
    assert (info.requests_limit, info.requests_remaining) == (50, 0)
    assert info.requests_reset_s == pytest.approx(2.0)


def test_no_rate_limit_headers() -> None:
    assert read_rate_limits(httpx2.Headers({"content-type": "application/json"})) is None


def test_the_sims_headers_read_back() -> None:
    clock = Clock()
    limits = RateLimits(requests_per_minute=600, tokens_per_minute=60_000, clock=clock)
    assert limits.admit(50) is None
    info = read_rate_limits(httpx2.Headers([(k.decode(), v.decode()) for k, v in limits.headers()]))
    assert info is not None
    assert (info.requests_limit, info.requests_remaining) == (600, 9)  # a bucket of 1 s: 10
    assert (info.tokens_limit, info.tokens_remaining) == (60_000, 950)
    assert info.requests_reset_s == pytest.approx(0.1)


def test_go_durations_round_trip() -> None:
    for seconds in (0.02, 1.5, 360.0, 75.25):
        assert parse_duration(go_duration(seconds)) == pytest.approx(seconds)


# --- the sim's buckets ----------------------------------------------------------------------


def test_a_bucket_refuses_past_its_burst_and_says_how_long_to_wait() -> None:
    clock = Clock()
    limits = RateLimits(requests_per_minute=600, clock=clock)  # 10/s, a bucket of 10
    assert [limits.admit(1) for _ in range(10)] == [None] * 10
    wait = limits.admit(1)
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert limits.admit(1) is None


def test_tokens_are_limited_too_and_a_refused_request_takes_nothing() -> None:
    clock = Clock()
    limits = RateLimits(requests_per_minute=6000, tokens_per_minute=600, clock=clock)
    assert limits.admit(8) is None  # 10 tokens/s, a bucket of 10
    assert limits.admit(8) == pytest.approx(0.6)  # 2 left, 6 more needed
    assert limits.requests is not None and limits.requests.level == pytest.approx(99)


# --- the pace -------------------------------------------------------------------------------


async def test_no_headers_no_pace() -> None:
    clock = Clock()
    pacer = Pacer(8, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        await pacer.wait()
    assert clock.slept == []


async def test_plenty_left_is_not_paced() -> None:
    clock = Clock()
    pacer = Pacer(8, clock=clock, sleep=clock.sleep)
    pacer.observe(RateLimitInfo(requests_limit=600, requests_remaining=500))
    for _ in range(20):
        await pacer.wait()
    assert clock.slept == []


async def test_little_left_paces_requests_to_the_limit() -> None:
    clock = Clock()
    pacer = Pacer(8, clock=clock, sleep=clock.sleep)
    pacer.observe(RateLimitInfo(requests_limit=600, requests_remaining=5))
    start = clock.now
    for _ in range(11):
        await pacer.wait()
    # ten gaps at 10 requests/s, a little under the limit
    assert clock.now - start == pytest.approx(10 * 0.1 / SAFETY)


async def test_the_token_limit_paces_by_tokens_per_request() -> None:
    clock = Clock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    pacer.observe(
        RateLimitInfo(
            requests_limit=6000, requests_remaining=5000, tokens_limit=6000, tokens_remaining=100
        ),
        tokens=200,
    )
    assert pacer.interval == pytest.approx(200 * 60 / 6000 / SAFETY)  # 2 s a request


async def test_a_spent_bucket_holds_every_request_for_retry_after() -> None:
    clock = Clock()
    pacer = Pacer(8, clock=clock, sleep=clock.sleep)
    pacer.throttled(2.0, RateLimitInfo(requests_limit=600, requests_remaining=0))
    start = clock.now
    await pacer.wait()
    assert clock.now - start == pytest.approx(2.0)


async def test_a_429_without_a_spent_bucket_holds_no_one_else() -> None:
    clock = Clock()
    pacer = Pacer(8, clock=clock, sleep=clock.sleep)
    pacer.throttled(2.0, None)  # an overload, or a random refusal
    pacer.throttled(2.0, RateLimitInfo(requests_limit=600, requests_remaining=300))
    await pacer.wait()
    assert clock.slept == []


async def test_a_block_that_grows_while_waiting_is_waited_out() -> None:
    clock = Clock()
    pacer = Pacer(8, clock=clock, sleep=clock.sleep)
    pacer.block(1.0)

    async def sleep_and_block_more(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.slept) == 1:
            pacer.block(0.5)  # another 429 came back while this one slept

    pacer.sleep = sleep_and_block_more
    start = clock.now
    await pacer.wait()
    assert clock.now - start == pytest.approx(1.5)


# --- one cut per throttle window ------------------------------------------------------------


def test_one_window_one_cut() -> None:
    clock = Clock()
    window = ThrottleWindow(clock)
    assert window.cut(1.0)
    assert not window.cut(1.0)
    clock.now += 0.99
    assert not window.cut(1.0) and not window.passed()
    clock.now += 0.02
    assert window.passed()
    assert not window.passed()  # said once
    assert window.cut(1.0)


def test_the_ceiling_is_cut_once_per_window_and_back_as_soon_as_it_passes() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(64, clock=clock)
    assert limiter.on_throttle(0.2) == 32
    # every other call in flight gets its 429 inside the window: no second cut
    assert [limiter.on_throttle(0.2) for _ in range(40)] == [None] * 40
    assert limiter.limit == 32
    assert limiter.on_success() is None  # still inside the window
    clock.now += 0.2
    assert limiter.on_success() == 64  # back at once, not a slot per round
    assert limiter.limit == 64 == limiter.limiter.total_tokens
    assert limiter.on_throttle(0.2) == 32  # a new window, a new cut


def test_a_429_after_the_window_restores_before_it_cuts_again() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(16, clock=clock)
    assert limiter.on_throttle(1.0) == 8
    clock.now += 1.5
    assert limiter.on_throttle(1.0) == 8  # restored to 16, then cut once for the new window
    clock.now += 1.0
    assert limiter.on_success() == 16
